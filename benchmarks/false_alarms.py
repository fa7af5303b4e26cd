"""False alarms: detect_frame must accuse nobody on unmarked images or under a wrong key.

    python benchmarks/false_alarms.py [--crops 3] [--attacks NAME...] [--candidates 16]
                                      [--workers 2] [--frames PATH...] [--out DIR] [--seed 0]

Part 1 (unmarked): every image x each --attacks x --crops regions (the first is the
whole frame, the others random crops of 25..100 % of the area, seeded), detected with the
test key and --candidates random payloads. Any found=True is a false alarm. Reports the
empirical distribution of p_value: under "no mark" a valid p_value satisfies
P(p <= a) <= a, so the fractions at 1e-2 and 1e-3 should not exceed those levels by
more than sampling noise.
Part 2 (wrong key): every image marked under key A with one of the candidates, attacked
with each --key-attacks, traced under key B. Any found=True is a false alarm.
Totals on stdout, every trial in OUT/false_alarms.json; exit code 1 if any verdict.
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread per worker process, set before numpy and cv2 are imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import _common as common
import numpy as np

from watermark import detect_frame, embed_frame
from watermark._attacks import apply_attack, attack_names, crop

DEFAULT_ATTACKS = ("none", "jpeg50", "jpeg90", "scale0.5", "scale0.75", "blur1", "noise5")
DEFAULT_KEY_ATTACKS = ("none", "jpeg70", "scale0.5", "crop50")
LEVELS = (1e-2, 1e-3)


@dataclasses.dataclass(frozen=True, slots=True)
class Task:
    """All trials of one image (so each worker decodes it once)."""

    name: str
    path: str
    candidates: tuple[int, ...]
    attacks: tuple[str, ...]
    crops: int
    key_attacks: tuple[str, ...]
    seed: int


def _record(part: str, frame: str, attack: str, region: str, leak: np.ndarray, det) -> dict:
    return {
        "part": part,
        "frame": frame,
        "attack": attack,
        "region": region,
        "leak_shape": list(leak.shape),
        "found": bool(det.found),
        "payload": det.payload,
        "p_value": float(det.p_value),
        "score": float(det.score),
        "detection": dataclasses.asdict(det),
    }


def run_frame(task: Task) -> list[dict]:
    image = common.read_image(Path(task.path))
    cands = np.array(task.candidates, dtype=np.uint64)
    out = []
    # Part 1: unmarked image, attacked, whole frame then random crops.
    for attack in task.attacks:
        attacked = apply_attack(
            attack, image, seed=common.stable_seed(task.seed, task.name, attack)
        )
        rng = np.random.default_rng(common.stable_seed(task.seed, task.name, attack, "crops"))
        for k in range(task.crops):
            if k == 0:
                leak, region = attacked, "full"
            else:
                area = float(rng.uniform(0.25, 1.0))
                leak, region = crop(attacked, area, rng=rng), f"crop{area:.2f}"
            det = detect_frame(leak, common.TEST_KEY, candidates=cands)
            out.append(_record("unmarked", task.name, attack, region, leak, det))
    # Part 2: marked under key A (TEST_KEY) with a registered payload, traced under key B.
    truth = task.candidates[common.stable_seed(task.seed, task.name) % len(task.candidates)]
    marked = embed_frame(image, common.TEST_KEY, truth).image
    for attack in task.key_attacks:
        leak = apply_attack(
            attack, marked, seed=common.stable_seed(task.seed, task.name, attack, "B")
        )
        det = detect_frame(leak, common.OTHER_KEY, candidates=cands)
        out.append(_record("wrong_key", task.name, attack, "full", leak, det))
    return out


def p_summary(records: list[dict]) -> dict:
    """Trials, verdicts, and the empirical distribution of p_value."""
    p = np.array([r["p_value"] for r in records])
    n = len(p)
    doc = {"trials": n, "verdicts": int(sum(r["found"] for r in records))}
    if n:
        for a in LEVELS:
            doc[f"frac_p_le_{a:g}"] = float(np.mean(p <= a))
            doc[f"count_p_le_{a:g}"] = int(np.sum(p <= a))
        doc["p_min"] = float(p.min())
        z = np.array([r["score"] for r in records])
        doc["score_mean"], doc["score_std"] = float(z.mean()), float(z.std())
        doc["score_max"] = float(z.max())
        doc["p_quantiles"] = {
            str(q): float(np.quantile(p, q)) for q in (0.001, 0.01, 0.05, 0.1, 0.25, 0.5)
        }
    return doc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_args(parser)
    parser.add_argument(
        "--attacks",
        nargs="+",
        default=list(DEFAULT_ATTACKS),
        metavar="NAME",
        help="attacks on unmarked images (default: %(default)s)",
    )
    parser.add_argument(
        "--key-attacks",
        nargs="+",
        default=list(DEFAULT_KEY_ATTACKS),
        metavar="NAME",
        help="attacks for the wrong-key part (default: %(default)s)",
    )
    parser.add_argument(
        "--crops",
        type=int,
        default=3,
        help="regions per (image, attack): the full frame + random crops (3)",
    )
    parser.add_argument("--candidates", type=int, default=16, help="registry size (16)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument(
        "--min-trials",
        type=int,
        default=500,
        help="fail if fewer unmarked trials would run (500); wrong-key: 100",
    )
    args = parser.parse_args()
    known = attack_names()
    for opt, names in (("--attacks", args.attacks), ("--key-attacks", args.key_attacks)):
        bad = [a for a in names if a not in known]
        if bad:
            parser.error(f"{opt}: unknown attack(s) {bad}; choose from {list(known)}")
    if args.crops < 1:
        parser.error(f"--crops must be >= 1; got {args.crops}")
    if not 1 <= args.candidates <= 100_000:
        parser.error(f"--candidates must be in 1..100000; got {args.candidates}")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1; got {args.workers}")

    infos = common.frame_infos(args.frames)
    n_unmarked = len(infos) * len(args.attacks) * args.crops
    n_key = len(infos) * len(args.key_attacks)
    if n_unmarked < args.min_trials or n_key < args.min_trials // 5:
        raise common.BenchError(
            f"only {n_unmarked} unmarked and {n_key} wrong-key trials would run; need "
            f">= {args.min_trials} and >= {args.min_trials // 5}: add images, --attacks, "
            "--crops or --key-attacks (or lower --min-trials for a quick look)"
        )

    candidates = common.distinct_payloads(np.random.default_rng(args.seed), args.candidates)
    tasks = [
        Task(
            f.name,
            str(f.path),
            tuple(int(c) for c in candidates),
            tuple(args.attacks),
            args.crops,
            tuple(args.key_attacks),
            args.seed,
        )
        for f in sorted(infos, key=lambda f: -f.height * f.width)  # big first: even load
    ]
    t0 = time.perf_counter()
    per_frame = common.run_tasks(run_frame, tasks, workers=args.workers, label="false_alarms")
    wall = time.perf_counter() - t0
    records = [r for rs in per_frame for r in rs]
    unmarked = [r for r in records if r["part"] == "unmarked"]
    wrong_key = [r for r in records if r["part"] == "wrong_key"]
    s_unmarked, s_key = p_summary(unmarked), p_summary(wrong_key)
    verdicts = s_unmarked["verdicts"] + s_key["verdicts"]

    doc = {
        "benchmark": "false_alarms",
        "key_a": "sha256('leaktrace benchmark key A'): traces part 1, marks part 2",
        "key_b": "sha256('leaktrace benchmark key B'): traces part 2",
        "candidates": [int(c) for c in candidates],
        "attacks": list(args.attacks),
        "key_attacks": list(args.key_attacks),
        "crops": args.crops,
        "seed": args.seed,
        "wall_s": wall,
        "summary": {"unmarked": s_unmarked, "wrong_key": s_key, "verdicts": verdicts},
        "trials": records,
        "machine": common.machine_info(),
    }
    json_path = common.write_json(args.out, "false_alarms.json", doc)

    print(
        f"## False alarms: {len(infos)} images, {args.candidates} candidates, "
        f"p_threshold = detect_frame default\n"
    )
    headers = ["part", "trials", "verdicts", "p <= 1e-2", "p <= 1e-3", "min p", "median p"]
    headers += ["score mean", "score sd", "score max"]
    rows = []
    for label, s in (("unmarked", s_unmarked), ("marked key A, traced key B", s_key)):
        rows.append(
            [
                label,
                s["trials"],
                s["verdicts"],
                f"{s['count_p_le_0.01']} ({100 * s['frac_p_le_0.01']:.2f} %)",
                f"{s['count_p_le_0.001']} ({100 * s['frac_p_le_0.001']:.2f} %)",
                common.fmt(s["p_min"], ".2e"),
                common.fmt(s["p_quantiles"]["0.5"], ".3f"),
                common.fmt(s["score_mean"]),
                common.fmt(s["score_std"]),
                common.fmt(s["score_max"]),
            ]
        )
    print(common.markdown_table(headers, rows))
    print(
        "\nA valid p_value gives at most about 1 % of trials at p <= 1e-2 and 0.1 % at "
        "p <= 1e-3 (plus sampling noise).\n"
        f"Total verdicts: {verdicts} (must be 0); wall {wall:.0f} s with {args.workers} "
        f"worker(s)\nJSON: {json_path}"
    )
    if verdicts:
        print(f"error: {verdicts} false alarm(s), see found=true in the JSON", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(common.main_wrapper(main))
