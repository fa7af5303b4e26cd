"""Robustness: does detect_frame name the right vendor after each attack?

    python benchmarks/robustness.py [--attacks NAME... | --attacks all] [--vendors 3]
                                    [--workers 2] [--frames PATH...] [--out DIR] [--seed 0]

For every image and every vendor of a registry of --vendors random distinct 32-bit payloads
(seeded): embed that vendor's payload with the test key, apply each attack (seed derived
from the run seed, frame and vendor), detect with ``candidates=`` every payload. A trial is
correct (found, right payload), WRONG (found, another vendor's payload: a false
accusation) or missed. Table per attack, separately for frames >= 1000 px wide and
narrower ones; every trial in OUT/robustness.json. Exit code 1 if any verdict is wrong.
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
from watermark._attacks import FOUNDATION_ATTACKS, apply_attack, attack_names

WIDE_PX = 1000  # frames at least this wide form the "large" class


@dataclasses.dataclass(frozen=True, slots=True)
class Task:
    """One frame with the whole registry: the unit of work of a worker process."""

    name: str
    path: str
    payloads: tuple[int, ...]
    attacks: tuple[str, ...]
    seed: int


def run_frame(task: Task) -> list[dict]:
    """Embed each vendor's payload, attack, detect; one record per (vendor, attack)."""
    image = common.read_image(Path(task.path))
    candidates = np.array(task.payloads, dtype=np.uint64)
    records = []
    for vendor, truth in enumerate(task.payloads):
        marked = embed_frame(image, common.TEST_KEY, truth).image
        for attack in task.attacks:
            seed = common.stable_seed(task.seed, task.name, vendor, attack)
            leak = apply_attack(attack, marked, seed=seed)
            t0 = time.perf_counter()
            det = detect_frame(leak, common.TEST_KEY, candidates=candidates)
            ms = (time.perf_counter() - t0) * 1e3
            if det.found and det.payload == truth:
                verdict = "correct"
            elif det.found:
                verdict = "wrong"
            else:
                verdict = "missed"
            records.append(
                {
                    "frame": task.name,
                    "width": image.shape[1],
                    "vendor": vendor,
                    "truth": truth,
                    "attack": attack,
                    "leak_shape": list(leak.shape),
                    "verdict": verdict,
                    "detect_ms": ms,
                    "score": det.score,
                    "detection": dataclasses.asdict(det),  # every field the codec reports
                }
            )
    return records


def summarise(records: list[dict], attacks: tuple[str, ...]) -> dict:
    """Per attack and width class: trials, correct, wrong, missed, accuracy, median score."""
    out: dict = {}
    for attack in attacks:
        out[attack] = {}
        for cls, test in (("wide", lambda w: w >= WIDE_PX), ("narrow", lambda w: w < WIDE_PX)):
            rs = [r for r in records if r["attack"] == attack and test(r["width"])]
            n = len(rs)
            counts = {v: sum(r["verdict"] == v for r in rs) for v in ("correct", "wrong", "missed")}
            out[attack][cls] = {
                "trials": n,
                **counts,
                "accuracy_pct": 100.0 * counts["correct"] / n if n else None,
                "median_score": float(np.median([r["score"] for r in rs])) if n else None,
            }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_args(parser)
    parser.add_argument(
        "--attacks",
        nargs="+",
        default=list(FOUNDATION_ATTACKS),
        metavar="NAME",
        help="attack names, or 'all' (default: the foundation set %(default)s)",
    )
    parser.add_argument("--vendors", type=int, default=3, help="registry size (3)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    args = parser.parse_args()
    attacks = attack_names() if args.attacks == ["all"] else tuple(dict.fromkeys(args.attacks))
    unknown = [a for a in attacks if a not in attack_names()]
    if unknown:
        parser.error(f"unknown attack(s) {unknown}; choose from 'all' or {list(attack_names())}")
    if not 1 <= args.vendors <= 1000:
        parser.error(f"--vendors must be in 1..1000; got {args.vendors}")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1; got {args.workers}")

    infos = common.frame_infos(args.frames)
    payloads = common.distinct_payloads(np.random.default_rng(args.seed), args.vendors)
    tasks = [
        Task(f.name, str(f.path), tuple(int(p) for p in payloads), attacks, args.seed)
        for f in sorted(infos, key=lambda f: -f.height * f.width)  # big first: even load
    ]
    t0 = time.perf_counter()
    per_frame = common.run_tasks(run_frame, tasks, workers=args.workers, label="robustness")
    wall = time.perf_counter() - t0
    records = [r for rs in per_frame for r in rs]
    summary = summarise(records, attacks)
    wrong = sum(r["verdict"] == "wrong" for r in records)
    n_wide = sum(f.width >= WIDE_PX for f in infos)

    doc = {
        "benchmark": "robustness",
        "key": "sha256('leaktrace benchmark key A')",
        "payloads": [int(p) for p in payloads],
        "attacks": list(attacks),
        "seed": args.seed,
        "workers": args.workers,
        "wall_s": wall,
        "frames": {"wide": n_wide, "narrow": len(infos) - n_wide, "wide_min_px": WIDE_PX},
        "summary": summary,
        "trials": records,
        "machine": common.machine_info(),
    }
    json_path = common.write_json(args.out, "robustness.json", doc)

    print(
        f"## Robustness: {len(infos)} frames ({n_wide} >= {WIDE_PX} px wide, "
        f"{len(infos) - n_wide} narrower) x {args.vendors} vendors x {len(attacks)} attacks\n"
    )
    headers = ["attack"]
    for cls in (f">= {WIDE_PX} px", f"< {WIDE_PX} px"):
        headers += [f"{cls} acc %", f"{cls} wrong", f"{cls} median score"]
    rows = []
    for attack in attacks:
        row = [attack]
        for cls in ("wide", "narrow"):
            s = summary[attack][cls]
            row += [
                common.fmt(s["accuracy_pct"], ".1f"),
                str(s["wrong"]),
                common.fmt(s["median_score"]),
            ]
        rows.append(row)
    print(common.markdown_table(headers, rows))
    total = len(records)
    correct = sum(r["verdict"] == "correct" for r in records)
    print(
        f"\nTrials {total}: correct {correct}, WRONG {wrong}, "
        f"missed {total - correct - wrong}; wall {wall:.0f} s with {args.workers} worker(s)"
    )
    print(f"JSON: {json_path}")
    if wrong:
        print(f"error: {wrong} false accusation(s), see 'wrong' in the JSON", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(common.main_wrapper(main))
