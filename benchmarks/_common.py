"""Shared helpers for the benchmark scripts: frames, options, machine info, output.

The scripts measure the checkout they sit in: the repository root is put first on
``sys.path`` so ``import watermark`` finds this tree even without ``pip install -e .``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Measure this checkout, installed or not: the scripts import ``_common`` before ``watermark``.
sys.path.insert(0, str(ROOT))

# The pure helpers and the machine record live in the package (``leaktrace bench`` uses them).
from watermark._params import DEFAULT_PARAMS  # noqa: E402
from watermark.bench import (  # noqa: E402, F401  (re-exported for the scripts)
    BENCH_KEY,
    distinct_payloads,
    fmt,
    jsonable,
    markdown_table,
    stable_seed,
    write_json,
)
from watermark.bench import machine_info as _machine  # noqa: E402
from watermark.bench import versions as _versions  # noqa: E402
from watermark.errors import MediaError  # noqa: E402
from watermark.media import publish_file, stage_file  # noqa: E402

DEFAULT_FRAME_DIRS = (ROOT.parent / "shared/corpus/frames", ROOT.parent / "shared/corpus/photos")
DEFAULT_OUT = ROOT / "benchmarks/out"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"})

# Fixed test keys: 32 bytes each, derived from public labels (benchmarks only, not secrets).
TEST_KEY = BENCH_KEY  # sha256(b"leaktrace benchmark key A")
OTHER_KEY = hashlib.sha256(b"leaktrace benchmark key B").digest()
TEST_PAYLOAD = 0x5EC2E7A1


class BenchError(Exception):
    """A bad input or environment problem, reported as one line with exit code 1."""


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """One corpus image: where it is and how big (read from the decoded pixels)."""

    name: str
    path: Path
    height: int
    width: int


# ----------------------------------------------------------------------------- options


def _flat_rms(text: str) -> float:
    """--flat-rms value: grey levels RMS in (0, ceiling_rms]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value <= DEFAULT_PARAMS.ceiling_rms:
        raise argparse.ArgumentTypeError(
            f"must be in (0, {DEFAULT_PARAMS.ceiling_rms:g}] grey levels; got {text}"
        )
    return value


def add_flat_rms_arg(parser: argparse.ArgumentParser) -> None:
    """--flat-rms: the mark's amplitude in flat fills (CodecParams.flat_rms), to measure
    what another floor would buy and cost; the trace does not depend on it."""
    parser.add_argument(
        "--flat-rms",
        type=_flat_rms,
        default=DEFAULT_PARAMS.flat_rms,
        metavar="GREY",
        help=f"mark amplitude in flat fills, grey levels RMS ({DEFAULT_PARAMS.flat_rms:g})",
    )


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """--frames, --out and --seed, shared by every script."""
    parser.add_argument(
        "--frames",
        nargs="+",
        type=Path,
        default=list(DEFAULT_FRAME_DIRS),
        metavar="PATH",
        help="image files or directories of images (default: ../shared/corpus/frames and "
        "../shared/corpus/photos next to the repository)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help="output directory for JSON and images (default: benchmarks/out)",
    )
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")


def find_images(paths: Iterable[Path]) -> list[Path]:
    """Image files named by ``paths`` (files, or directories scanned one level, sorted)."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            found.append(p)
        else:
            raise BenchError(f"--frames: {p} does not exist")
    if not found:
        raise BenchError(f"--frames: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {paths}")
    return found


def read_image(path: Path, *, alpha: bool = True) -> np.ndarray:
    """Decode an image file to RGB(A) order, its own dtype (uint8 / uint16).

    ``alpha=False`` drops an alpha channel (for metrics and crops).
    """
    data = np.fromfile(path, dtype=np.uint8)
    if not data.size:  # cv2.imdecode asserts on an empty buffer
        raise BenchError(f"{path} is an empty file")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise BenchError(f"cannot decode {path} as an image")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3:
        img = img[..., [2, 1, 0, 3]] if img.shape[2] == 4 else img[..., ::-1]
        if not alpha:
            img = img[..., :3]
    return np.ascontiguousarray(img)


def frame_infos(paths: Sequence[Path]) -> list[FrameInfo]:
    """Decode each image once to learn its size; fails early on an unreadable file."""
    infos = []
    for p in find_images(paths):
        h, w = read_image(p).shape[:2]
        infos.append(FrameInfo(name=p.name, path=p, height=h, width=w))
    return infos


# ----------------------------------------------------------------------------- workers


def limit_threads() -> None:
    """One thread for OpenCV in this process (call in each worker)."""
    cv2.setNumThreads(1)


def run_tasks(fn: Callable, tasks: Sequence, *, workers: int, label: str) -> list:
    """Run ``fn`` over ``tasks`` with a process pool, progress on stderr; results in order."""
    results: list = [None] * len(tasks)
    start = time.perf_counter()

    def report(done: int, what: str) -> None:
        elapsed = time.perf_counter() - start
        print(
            f"[{label}] {done}/{len(tasks)} {what} ({elapsed:.0f} s)", file=sys.stderr, flush=True
        )

    if workers <= 1:
        limit_threads()
        for i, t in enumerate(tasks):
            results[i] = fn(t)
            report(i + 1, str(getattr(t, "name", i)))
        return results
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(workers, initializer=limit_threads) as pool:
        indexed = pool.imap_unordered(_call_indexed, [(fn, i, t) for i, t in enumerate(tasks)])
        for done, (i, res) in enumerate(indexed, start=1):
            results[i] = res
            report(done, str(getattr(tasks[i], "name", i)))
    return results


def _call_indexed(job: tuple) -> tuple[int, object]:
    fn, i, task = job
    return i, fn(task)


# ----------------------------------------------------------------------------- output


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def machine_info() -> dict:
    """Versions, machine and checkout, for the JSON record."""
    info = _machine()
    status = _git("status", "--porcelain")
    return {
        "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        **info,
        "versions": {k: v for k, v in _versions().items() if k not in ("python",)},
        "thread_env": {
            k: os.environ.get(k)
            for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        },
    }


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB or grey uint8/uint16 array as PNG, atomically (the package's staged
    write: temp file, fsync, rename)."""
    bgr = rgb[..., ::-1] if rgb.ndim == 3 else rgb
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr))
    if not ok:
        raise BenchError(f"cannot encode {path.name} as PNG")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        publish_file(stage_file(path, buf.tobytes()), path)
    except (OSError, MediaError) as exc:
        raise BenchError(f"cannot write {path}: {exc}") from None


def run_in_child(target: Callable, *args: object) -> dict:
    """``target(*args, queue)`` in a fresh spawned interpreter; the dict it puts on the
    queue. A call measured this way has its own peak memory (``ru_maxrss`` of the child).

    Raises
    ------
    BenchError
        The child ended without a result (it raised, or was killed).
    """
    import multiprocessing as mp
    import queue as queues

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, results))
    proc.start()
    try:
        while True:
            try:
                return results.get(timeout=1.0)
            except queues.Empty:
                if not proc.is_alive():  # died without putting a result: say so, not hang
                    raise BenchError(
                        f"the measured call ended without a result (exit code {proc.exitcode})"
                    ) from None
    finally:
        proc.join()


def main_wrapper(main: Callable[[], int]) -> int:
    """Run ``main``; a BenchError becomes a one-line message and exit code 1."""
    try:
        return main()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
