"""Unregistered deliveries: is a mark that is in no registry ever pinned on a registered one?

    python benchmarks/unregistered.py [--trials 1000] [--attacks NAME...] [--candidates 16]
                                      [--max-side 1920] [--workers 2]
                                      [--frames PATH...] [--out DIR] [--seed 0]

Every image x each --attacks x R trials (R = ceil(--trials / (images x attacks))). Each
trial draws its own studio key and --candidates + 1 distinct delivery ids from a generator
seeded by (seed, image, attack, trial); the image is marked with the first id, attacked,
cut to a region (trial 0 the whole frame, the others random crops of 25..100 % of its area
at random offsets, as in calibration.py) and traced under the same key against a registry
of the other --candidates ids. The studio's mark is there (``p_mark`` is small wherever it
survives the attack), but the delivery it carries is not registered, so any verdict would
accuse the wrong vendor. This is the hypothesis the verdict's third bound covers (see
``watermark._detect._registry_verdict``); calibration.py covers the other two.

Reported: verdicts (must be 0), the fraction of trials with p_value <= a for a = 1e-2 and
1e-3 (a valid p-value keeps it at or below a), overall and among the trials whose mark was
found (p_mark <= 1e-6), where the bound is what stands between the mark and a verdict.
Exit code 1 on any verdict, or on a fraction over a + 3 binomial standard errors.
Writes OUT/unregistered.json (every trial).
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread per worker process, set before numpy and cv2 are imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import _common as common
import numpy as np

from watermark import apply_attack, attack_names, detect_frame, embed_frame
from watermark._attacks import crop, rescale

DEFAULT_ATTACKS = (
    "none",
    "jpeg70",
    "jpeg30",
    "webp50",
    "scale0.5",
    "crop50",
    "noise10",
    "screenshot",
    "social",
)
LEVELS = (1e-2, 1e-3)
N_SE = 3.0  # tolerance of the empirical fraction above a, in binomial standard errors
MIN_CROP_AREA = 0.25
MARK_FOUND = 1e-6  # p_mark at or below which the studio's mark counts as seen


@dataclasses.dataclass(frozen=True, slots=True)
class Task:
    """All trials of one (image, attack) pair: the image is decoded once per task."""

    name: str
    path: str
    attack: str
    trials: int
    candidates: int
    max_side: int
    seed: int


def run_pair(task: Task) -> list[dict]:
    """The trials of one (image, attack)."""
    image = common.read_image(Path(task.path))
    longest = max(image.shape[:2])
    if longest > task.max_side:
        image = rescale(image, task.max_side / longest)
    frame, attack = task.name.rsplit("/", 1)
    out = []
    for k in range(task.trials):
        rng = np.random.default_rng(common.stable_seed(task.seed, frame, attack, k, "unregistered"))
        key = rng.bytes(32)
        ids = common.distinct_payloads(rng, task.candidates + 1)
        ids = ids[rng.permutation(ids.size)]
        unregistered, registry = int(ids[0]), np.sort(ids[1:])
        marked = embed_frame(image, key, unregistered).image
        attacked = apply_attack(attack, marked, seed=int(rng.integers(2**62)))
        region = "full"
        if k:
            area = float(rng.uniform(MIN_CROP_AREA, 1.0))
            attacked, region = crop(attacked, area, rng=rng), f"crop{area:.3f}"
        det = detect_frame(attacked, key, candidates=registry)
        out.append(
            {
                "frame": frame,
                "attack": attack,
                "trial": k,
                "region": region,
                "leak_hw": list(attacked.shape[:2]),
                "found": bool(det.found),
                "named": det.payload,
                "p_value": float(det.p_value),
                "p_mark": float(det.p_mark),
                "score": float(det.score),
                "n_tests": float(det.n_tests),
            }
        )
    return out


def summarise(records: list[dict]) -> dict:
    """Trials, verdicts and the tail fractions of p_value with their limits."""
    n = len(records)
    doc: dict = {"trials": n, "verdicts": int(sum(r["found"] for r in records)), "levels": {}}
    doc["exceeds"] = []
    if not n:
        return doc
    p = np.array([r["p_value"] for r in records])
    for a in LEVELS:
        count = int(np.sum(p <= a))
        limit = a + N_SE * math.sqrt(a * (1.0 - a) / n)
        doc["levels"][f"{a:g}"] = {"count": count, "fraction": count / n, "limit": limit}
        if count / n > limit:
            doc["exceeds"].append(f"p_value <= {a:g}: {count}/{n} > {limit:.4g}")
    doc["p_value_min"] = float(p.min())
    return doc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_args(parser)
    parser.add_argument(
        "--attacks",
        nargs="+",
        default=list(DEFAULT_ATTACKS),
        metavar="NAME",
        help=f"attacks (default: {' '.join(DEFAULT_ATTACKS)})",
    )
    parser.add_argument("--trials", type=int, default=1_000, help="trials (1000)")
    parser.add_argument("--candidates", type=int, default=16, help="registry size (16)")
    parser.add_argument(
        "--max-side", type=int, default=1920, help="downscale longer frames to this side (1920)"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    args = parser.parse_args()
    known = attack_names()
    bad = [a for a in args.attacks if a not in known]
    if bad:
        parser.error(f"--attacks: unknown attack(s) {bad}; choose from {list(known)}")
    if args.trials < 1:
        parser.error(f"--trials must be >= 1; got {args.trials}")
    if not 1 <= args.candidates <= 100_000:
        parser.error(f"--candidates must be in 1..100000; got {args.candidates}")
    if args.max_side < 64:
        parser.error(f"--max-side must be >= 64; got {args.max_side}")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1; got {args.workers}")

    infos = common.frame_infos(args.frames)
    per_pair = math.ceil(args.trials / (len(infos) * len(args.attacks)))
    tasks = [
        Task(f"{f.name}/{a}", str(f.path), a, per_pair, args.candidates, args.max_side, args.seed)
        for f in sorted(infos, key=lambda f: -f.height * f.width)  # big first: even load
        for a in args.attacks
    ]
    print(f"unregistered: {len(tasks)} (image, attack) pairs x {per_pair} trials", file=sys.stderr)
    t0 = time.perf_counter()
    records = [
        r
        for rs in common.run_tasks(run_pair, tasks, workers=args.workers, label="unregistered")
        for r in rs
    ]
    wall = time.perf_counter() - t0
    seen = [r for r in records if r["p_mark"] <= MARK_FOUND]
    summary = {"all": summarise(records), "mark_found": summarise(seen)}
    by_attack = {a: summarise([r for r in records if r["attack"] == a]) for a in args.attacks}
    for a, s in by_attack.items():
        s["mark_found"] = sum(r["p_mark"] <= MARK_FOUND for r in records if r["attack"] == a)
    doc = {
        "benchmark": "unregistered",
        "keys": "a random 32-byte key and candidates + 1 ids per trial, drawn from "
        "np.random.default_rng(stable_seed(seed, image, attack, trial, 'unregistered'))",
        "attacks": list(args.attacks),
        "candidates": args.candidates,
        "trials_per_pair": per_pair,
        "max_side": args.max_side,
        "mark_found_at": MARK_FOUND,
        "seed": args.seed,
        "tolerance": f"a + {N_SE:g} * sqrt(a (1 - a) / trials)",
        "wall_s": wall,
        "summary": summary,
        "by_attack": by_attack,
        "trials": records,
        "machine": common.machine_info(),
    }
    json_path = common.write_json(args.out, "unregistered.json", doc)

    print(
        f"## Unregistered deliveries: {len(infos)} images x {len(args.attacks)} attacks x "
        f"{per_pair}, a random key and registry of {args.candidates} per trial, the mark's "
        "own delivery left out\n"
    )
    headers = ["trials", "set", "verdicts"]
    headers += [f"p_value <= {a:g}" for a in LEVELS] + [f"limit {a:g}" for a in LEVELS]
    headers += ["min p_value"]
    rows = []
    for label, s in (("all", summary["all"]), ("mark found", summary["mark_found"])):
        if not s["trials"]:
            continue
        row = [s["trials"], label, s["verdicts"]]
        row += [_count(s["levels"][f"{a:g}"]) for a in LEVELS]
        row += [f"{100 * s['levels'][f'{a:g}']['limit']:.3f} %" for a in LEVELS]
        rows.append([*row, common.fmt(s["p_value_min"], ".2e")])
    print(common.markdown_table(headers, rows))
    print("\nBy attack:\n")
    rows = [
        [
            a,
            s["trials"],
            s["mark_found"],
            s["verdicts"],
            _count(s["levels"]["0.01"]),
            common.fmt(s.get("p_value_min"), ".2e"),
        ]
        for a, s in by_attack.items()
        if s["trials"]
    ]
    print(
        common.markdown_table(
            ["attack", "trials", "mark found", "verdicts", "p_value <= 0.01", "min p_value"], rows
        )
    )
    exceeds = [f"{k}: {e}" for k, s in summary.items() for e in s["exceeds"]]
    verdicts = summary["all"]["verdicts"]
    print(
        f"\nTotal verdicts: {verdicts} (must be 0); fractions over the limit: "
        f"{'; '.join(exceeds) or 'none'}.\n"
        f"Wall {wall:.0f} s with {args.workers} worker(s). JSON: {json_path}"
    )
    if verdicts or exceeds:
        print(f"error: {verdicts} verdict(s); over the limit: {exceeds or 'none'}", file=sys.stderr)
        return 1
    return 0


def _count(level: dict) -> str:
    return f"{level['count']} ({100 * level['fraction']:.2f} %)"


if __name__ == "__main__":
    sys.exit(common.main_wrapper(main))
