"""Trace time and peak memory against a large registry: N registered deliveries.

Every registered delivery is a candidate of every verdict (its codeword is compared with
the mark's), so a studio's registry size is part of each trace's cost. For each N the
frame (a 1280x720 corpus frame, or ``--frame``) is marked with one of N distinct random
delivery ids, and the marked frame and the unmarked one are traced against all N, each
call in its own child process, one thread: its wall time and the child's peak resident
set size (``ru_maxrss``, interpreter and libraries included). The studio layer (SQLite,
the asset index) is not involved: this is the detector's share.

    python benchmarks/registry_scale.py [--deliveries 3 10000 100000 300000] [--frame PATH]

Prints a Markdown table and writes JSON to ``--out``; exits 1 when a marked frame is not
named or an unmarked one is.
"""

from __future__ import annotations

import os

# One thread for BLAS/OpenMP: must be set before numpy and cv2 are imported.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import _common as common

KEY = common.TEST_KEY
DEFAULT_FRAME = common.ROOT.parent / "shared/corpus/frames/bbb_meadow_1920x1080.jpg"
SIZE = (1280, 720)  # (w, h) the frame is resized to


def _child(path: str, n: int, kind: str, queue: mp.Queue) -> None:
    import cv2
    import numpy as np

    from watermark import detect_frame, embed_frame

    cv2.setNumThreads(1)
    frame = common.read_image(Path(path), alpha=False)
    frame = cv2.resize(frame, SIZE, interpolation=cv2.INTER_AREA)
    # N distinct ids, seeded: the same registry for every kind of leak
    rng = np.random.default_rng(n)
    ids = np.unique(rng.integers(0, 2**32, n + n // 100 + 10, dtype=np.int64))
    ids = rng.permutation(ids)[:n]
    truth = int(ids[n // 2])
    leak = embed_frame(frame, KEY, truth).image if kind == "marked" else frame
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    det = detect_frame(leak, KEY, candidates=ids)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    ok = det.found and det.payload == truth if kind == "marked" else not det.found
    queue.put(
        {
            "deliveries": n,
            "leak": kind,
            "ok": bool(ok),
            "p_value": float(det.p_value),
            "seconds": seconds,
            "peak_mb": peak / 1024,
            "before_call_mb": before / 1024,
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--deliveries",
        nargs="+",
        type=int,
        default=[3, 10_000, 100_000, 300_000],
        help="registry sizes (default 3 10000 100000 300000)",
    )
    parser.add_argument("--frame", type=Path, default=DEFAULT_FRAME, help="the picture")
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT / "registry_scale")
    args = parser.parse_args(argv)
    if any(n < 1 or n > 4_000_000 for n in args.deliveries):
        parser.error(f"--deliveries must be in 1..4000000, got {args.deliveries}")
    if not args.frame.is_file():
        parser.error(f"--frame: {args.frame} is not a file")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out: {args.out} is not a folder")
    frame = common.read_image(args.frame, alpha=False)  # a bad file fails here, in one line
    if min(frame.shape[:2]) < 16:
        raise common.BenchError(f"--frame: {args.frame} is under 16 px on a side")

    rows = []
    for n in args.deliveries:
        for kind in ("marked", "unmarked"):
            # a fresh interpreter per call: its own peak
            row = common.run_in_child(_child, str(args.frame), n, kind)
            rows.append(row)
            print(
                f"[registry_scale] {n} deliveries, {kind}: {row['seconds']:.2f} s, "
                f"{row['peak_mb']:.0f} MiB",
                file=sys.stderr,
            )

    w, h = SIZE
    print(f"## Trace against N registered deliveries, {w}x{h} ({args.frame.name}), one core\n")
    print(
        "| deliveries | leak | seconds | peak RSS (MiB) | RSS before the call (MiB) "
        "| p_value | right |"
    )
    print("|---:|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['deliveries']} | {r['leak']} | {r['seconds']:.2f} | {r['peak_mb']:.0f} | "
            f"{r['before_call_mb']:.0f} | {r['p_value']:.2g} | {'yes' if r['ok'] else 'NO'} |"
        )
    path = common.write_json(
        args.out, "registry_scale.json", {"rows": rows, "machine": common.machine_info()}
    )
    print(f"\nJSON: {path}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(common.main_wrapper(lambda: main()))
