"""Wall time of embed_frame and detect_frame on one core.

    python benchmarks/timing.py [--size 1920x1080] [--runs 7] [--frames PATH...] [--out DIR]

The frame is the first corpus image (a 1920x1080 one if any) resized to --size. Each call
runs once to warm up, then --runs times; the table gives median, min and max in ms beside
the limits: embed <= 40 ms and trace <= 0.5 s (the blind robustness issue), and trace of
the same frame rotated by 2 degrees, which needs the geometry search's lattices, <= 1 s
(the blind geometry issue); and trace of the unmarked frame, where every hypothesis is
searched and none convicts (the slowest case, same limit). Also the trace's first step
alone, the look for strong periodic texture (`cap_periodic_peaks`), on the frame (which
has none) and on a generated frame of dense hatching (which it cuts), and the trace of
that hatched frame marked (limit 0.5 s). Thread pools are capped at one thread:
OMP/OpenBLAS/MKL through the environment (set before numpy is imported) and
cv2.setNumThreads(1). JSON in OUT/timing.json.
"""

from __future__ import annotations

import os

# One thread for BLAS/OpenMP: must be set before numpy and cv2 are imported.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse
import re
import statistics
import sys
import time

import _common as common
import cv2
import numpy as np

from watermark import detect_frame, embed_frame
from watermark._attacks import rotate
from watermark._color import luma
from watermark._periodic import cap_periodic_peaks

EMBED_LIMIT_MS = 40.0
TRACE_LIMIT_MS = 500.0
GEOMETRY_TRACE_LIMIT_MS = 1000.0


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (H, W)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m[1]) < 16 or int(m[2]) < 16:
        raise argparse.ArgumentTypeError(
            f"size must be WxH with sides >= 16, e.g. 1920x1080; got {text!r}"
        )
    return int(m[2]), int(m[1])


def pick_frame(paths: list, shape: tuple[int, int]) -> tuple[str, np.ndarray]:
    """First image whose size equals ``shape`` (else the first), as RGB resized to ``shape``."""
    infos = common.frame_infos(paths)
    chosen = next((f for f in infos if (f.height, f.width) == shape), infos[0])
    image = common.read_image(chosen.path, alpha=False)
    if image.shape[:2] != shape:
        shrink = shape[0] * shape[1] < image.shape[0] * image.shape[1]
        interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
        image = cv2.resize(image, (shape[1], shape[0]), interpolation=interp)  # cv2: (w, h)
    return chosen.name, image


def hatched_frame(shape: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8: a 1-px dark line every 5 px at 45 degrees over the whole frame,
    slightly blurred; strong periodic texture, which the trace cuts out first."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    grey = np.where((xx - yy) % 5 == 0, 40.0, 250.0).astype(np.float32)
    grey = np.clip(np.rint(cv2.GaussianBlur(grey, (0, 0), 0.5)), 0, 255).astype(np.uint8)
    return np.dstack([grey] * 3)


def time_call(fn, runs: int) -> dict:
    """One warm-up call, then ``runs`` timed calls; milliseconds."""
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "runs_ms": times,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_args(parser)
    parser.add_argument(
        "--size",
        type=parse_size,
        default=(1080, 1920),
        metavar="WxH",
        help="frame size (default 1920x1080)",
    )
    parser.add_argument("--runs", type=int, default=7, help="timed runs per call (>= 5; 7)")
    parser.add_argument("--vendors", type=int, default=3, help="candidates for detect (3)")
    args = parser.parse_args()
    if args.runs < 5:
        parser.error(f"--runs must be >= 5; got {args.runs}")
    if args.vendors < 1:
        parser.error(f"--vendors must be >= 1; got {args.vendors}")

    cv2.setNumThreads(1)
    name, image = pick_frame(common.find_images(args.frames), args.size)
    rng = np.random.default_rng(args.seed)
    payloads = common.distinct_payloads(rng, args.vendors)
    truth = int(payloads[0])
    marked = embed_frame(image, common.TEST_KEY, truth).image
    rotated = rotate(marked, 2.0)
    hatched = hatched_frame(args.size)
    hatched_marked = embed_frame(hatched, common.TEST_KEY, truth).image
    frame_y, hatched_y = luma(image), luma(hatched_marked)
    if cap_periodic_peaks(frame_y) is not frame_y or cap_periodic_peaks(hatched_y) is hatched_y:
        print("note: the look for periodic texture did not act as labelled", file=sys.stderr)

    cases = {
        "embed_frame": (lambda: embed_frame(image, common.TEST_KEY, truth), EMBED_LIMIT_MS),
        f"detect_frame, {args.vendors} candidates": (
            lambda: detect_frame(marked, common.TEST_KEY, candidates=payloads),
            TRACE_LIMIT_MS,
        ),
        "detect_frame, blind": (lambda: detect_frame(marked, common.TEST_KEY), TRACE_LIMIT_MS),
        f"detect_frame, {args.vendors} candidates, rotated 2 deg": (
            lambda: detect_frame(rotated, common.TEST_KEY, candidates=payloads),
            GEOMETRY_TRACE_LIMIT_MS,
        ),
        f"detect_frame, {args.vendors} candidates, unmarked frame": (
            lambda: detect_frame(image, common.TEST_KEY, candidates=payloads),
            GEOMETRY_TRACE_LIMIT_MS,
        ),
        "cap_periodic_peaks, this frame (nothing to cut)": (
            lambda: cap_periodic_peaks(frame_y),
            None,
        ),
        "cap_periodic_peaks, hatched frame (cut)": (lambda: cap_periodic_peaks(hatched_y), None),
        f"detect_frame, {args.vendors} candidates, hatched frame": (
            lambda: detect_frame(hatched_marked, common.TEST_KEY, candidates=payloads),
            TRACE_LIMIT_MS,
        ),
    }
    results = {}
    for label, (fn, limit) in cases.items():
        print(f"[timing] {label} ...", file=sys.stderr, flush=True)
        r = time_call(fn, args.runs)
        r["limit_ms"] = limit
        r["within_limit"] = None if limit is None else r["median_ms"] <= limit
        results[label] = r

    h, w = args.size
    doc = {
        "benchmark": "timing",
        "frame": name,
        "size": {"height": h, "width": w},
        "runs": args.runs,
        "warmup_runs": 1,
        "opencv_threads": cv2.getNumThreads(),
        "results": results,
        "machine": common.machine_info(),
    }
    json_path = common.write_json(args.out, "timing.json", doc)

    print(f"## Timing, one core, {w}x{h} ({name}), {args.runs} runs after 1 warm-up\n")
    rows = [
        [
            label,
            common.fmt(r["median_ms"], ".1f"),
            common.fmt(r["min_ms"], ".1f"),
            common.fmt(r["max_ms"], ".1f"),
            "-" if r["limit_ms"] is None else common.fmt(r["limit_ms"], ".0f"),
            {None: "-", True: "yes", False: "NO"}[r["within_limit"]],
        ]
        for label, r in results.items()
    ]
    print(
        common.markdown_table(["call", "median ms", "min ms", "max ms", "limit ms", "within"], rows)
    )
    print(f"\nJSON: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(common.main_wrapper(main))
