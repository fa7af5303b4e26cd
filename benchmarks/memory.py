"""Peak memory of embed and trace on a large frame (default 7680x4320, 8K UHD).

Each call runs in its own child process, so its peak resident set size (``ru_maxrss`` of
the child) is the call's own, interpreter and libraries included. The frame is a seeded
synthetic texture (cubic-upsampled noise), built in the child. ``trace`` reads the marked
frame (the square search convicts it); ``trace rotated`` reads it turned by 2 degrees, which
takes the geometry search (lattices, resampling) to a verdict.

    python benchmarks/memory.py [--size 7680x4320] [--limit-mb 1536]

Prints a Markdown table and writes JSON to ``--out``; exits 1 when a peak exceeds the limit.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

import _common as common

KEY = common.TEST_KEY
PAYLOAD = common.TEST_PAYLOAD


def _frame(width: int, height: int):
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    small = (rng.random((max(2, height // 16), max(2, width // 16), 3)) * 255).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def _child(task: str, width: int, height: int, marked: str, queue: mp.Queue) -> None:
    import numpy as np

    from watermark import detect_frame, embed_frame

    # trace loads the frame the embed child saved: its own peak never includes embedding
    frame = _frame(width, height) if task == "embed" else np.load(marked)
    if task == "trace rotated":
        from watermark._attacks import rotate

        frame = rotate(frame, 2.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if task == "embed":
        result = embed_frame(frame, KEY, PAYLOAD)
        ok = bool(result.psnr_y > 40)
        np.save(marked, result.image)
    else:
        det = detect_frame(frame, KEY, candidates=np.array([PAYLOAD, 7, 11], np.uint64))
        ok = bool(det.found and det.payload == PAYLOAD)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    queue.put(
        {
            "task": task,
            "ok": ok,
            "seconds": seconds,
            "peak_mb": peak / 1024,
            "before_call_mb": before / 1024,
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="7680x4320", help="WxH (default 7680x4320)")
    parser.add_argument("--limit-mb", type=float, default=1536.0, help="peak limit (MiB)")
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size must be WxH, got {args.size!r}")
    if width < 16 or height < 16:
        parser.error(f"--size must be at least 16x16, got {args.size!r}")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        marked = str(Path(tmp) / "marked.npy")
        for task in ("embed", "trace", "trace rotated"):
            # a fresh interpreter per call: its own peak
            row = common.run_in_child(_child, task, width, height, marked)
            rows.append(row)
            print(f"[memory] {task}: {row['peak_mb']:.0f} MiB", file=sys.stderr)

    print(f"## Peak memory, {width}x{height} frame, one call per process\n")
    print("| call | peak RSS (MiB) | RSS before the call (MiB) | seconds | correct | limit |")
    print("|---|---:|---:|---:|---|---:|")
    for r in rows:
        print(
            f"| {r['task']} | {r['peak_mb']:.0f} | {r['before_call_mb']:.0f} | "
            f"{r['seconds']:.2f} | {'yes' if r['ok'] else 'NO'} | {args.limit_mb:.0f} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "memory.json"
    path.write_text(
        json.dumps(
            {"size": [width, height], "rows": rows, "machine": common.machine_info()}, indent=2
        )
    )
    print(f"\nJSON: {path}")
    over = [r for r in rows if r["peak_mb"] > args.limit_mb or not r["ok"]]
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
