"""The benchmark behind ``leaktrace bench``: mark, attack, trace, report.

For every frame: embed a random 32-bit delivery id for each of ``vendors`` vendors (fixed
benchmark key), apply every attack, trace each leak blind against the registry of all the
vendors' ids, and trace every attack applied to the UNMARKED frame too (false-alarm
calibration). With ``peers``, each peer method (:mod:`watermark.peers`) embeds vendor 0's id
in the same frame, goes through the same attacks (same seeds, so the same crop offsets) and
extracts its 32 bits blind. Writes ``results.json`` (every trial, the summary, the seed,
versions and machine), ``results.md``, the plots and ``index.html`` (:mod:`watermark.report`).

This is an I/O edge module (it reads frames, writes files and runs worker processes); the
pure pieces (:func:`stable_seed`, :func:`distinct_payloads`, :func:`summarise`,
:func:`markdown_table`) touch nothing. ``benchmarks/_common.py`` reuses them.

A verdict is *correct* when the trace finds the mark and names the vendor whose copy leaked,
*wrong* when it names another vendor (a false accusation, counted separately), *missed*
otherwise.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import importlib.util
import itertools
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ._attacks import ATTACKS, FOUNDATION_ATTACKS, apply_attack, attack_names
from ._detect import detect_frame
from ._embed import embed_frame
from ._metrics import luma, psnr_y, ssim_y
from .errors import LeaktraceError
from .media import IMAGE_EXTENSIONS, iter_image_files, read_image

__all__ = [
    "BENCH_KEY",
    "DEFAULT_PEER_MAX_SIDE",
    "SCHEMA",
    "BenchError",
    "BenchFrame",
    "BenchResult",
    "ProgressCallback",
    "attack_kind",
    "distinct_payloads",
    "fmt",
    "jsonable",
    "load_frames",
    "machine_info",
    "markdown_table",
    "quick_attacks",
    "resolve_attacks",
    "run_bench",
    "sample_bench_frames",
    "stable_seed",
    "summarise",
    "versions",
    "write_json",
]

SCHEMA = "leaktrace-bench/1"
"""``results.json``'s ``schema`` field; bumped when its structure changes."""

BENCH_KEY = hashlib.sha256(b"leaktrace benchmark key A").digest()
"""The fixed benchmark key (public: benchmarks only, never a studio secret)."""

DEFAULT_PEER_MAX_SIDE = 1024
"""With peers, frames are downscaled to at most this many px per side (peers are slow)."""

QUICK_FRAMES = 2  # bundled frames used by --quick
QUICK_MAX_SIDE = 640  # and their largest side
QUICK_VENDORS = 2
CROP_SIZE = 256  # px, side of the before/after crops
DIFF_GAIN = 16  # amplification of the difference crops
N_CROPS = 3  # frames shown with crops in index.html
WORKERS = 2
P_LEVELS = (1e-2, 1e-3)  # false-alarm fractions reported in the summary
MIN_LEAK_SIDE = 16  # px: detect_frame refuses smaller pictures (the README's input floor)

ProgressCallback = Callable[[int, int, str], None]
"""``progress(done, total, label)`` after each unit of work."""


class BenchError(LeaktraceError):
    """A bad benchmark argument (unknown attack, no frames, bad count), as one line."""


@dataclass(frozen=True, slots=True)
class BenchFrame:
    """One benchmark frame: a name, its pixels and where they came from."""

    name: str
    pixels: np.ndarray
    source: str


@dataclass(frozen=True, slots=True)
class BenchResult:
    """What :func:`run_bench` wrote.

    Attributes
    ----------
    document : dict
        The content of ``results.json`` (``document["summary"]`` is the summary).
    markdown : str
        The content of ``results.md``.
    json_path, md_path, html_path : Path
        The files written.
    plots : tuple of Path
        The plot PNGs (empty when matplotlib is missing).
    plots_skipped : str or None
        Why the plots were skipped, if they were.
    """

    document: dict
    markdown: str
    json_path: Path
    md_path: Path
    html_path: Path
    plots: tuple[Path, ...]
    plots_skipped: str | None

    @property
    def summary(self) -> dict:
        return self.document["summary"]


# --------------------------------------------------------------------------- pure helpers


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, independent of run order and PYTHONHASHSEED.

    Examples
    --------
    >>> stable_seed(0, "frame.png", 1, "jpeg50") == stable_seed(0, "frame.png", 1, "jpeg50")
    True
    """
    digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def distinct_payloads(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct random 32-bit delivery ids, sorted, as the uint64 array detect takes."""
    return np.sort(rng.choice(2**32, size=n, replace=False)).astype(np.uint64)


def attack_kind(name: str) -> str:
    """The attack's name without its trailing parameter (``"jpeg50"`` -> ``"jpeg"``).

    Attacks of one kind form a strength ladder in the accuracy plot.

    Examples
    --------
    >>> attack_kind("jpeg50"), attack_kind("brightness-25"), attack_kind("scale0.5")
    ('jpeg', 'brightness', 'scale')
    """
    return re.sub(r"[-+]?[0-9.]+$", "", name) or name


def fmt(value: float | None, spec: str = ".2f") -> str:
    """Number for a Markdown cell: inf/nan spelled out, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub Markdown table; columns whose first cell is numeric are right-aligned."""
    rows = [[str(c) for c in r] for r in rows]
    align = ["---:" if rows and _numeric(rows[0][i]) else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _numeric(cell: str) -> bool:
    try:
        float(cell.rstrip("%"))
    except ValueError:
        return cell in ("-", "inf")
    return True


def jsonable(obj: object) -> object:
    """Strict-JSON copy: numpy scalars to Python, non-finite floats to "inf"/"-inf"/"nan"."""
    if isinstance(obj, float | np.floating):
        v = float(obj)
        return v if math.isfinite(v) else str(v)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if len(values) else None


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def summarise(doc_trials: dict, attacks: Sequence[str], peers: Sequence[str]) -> dict:
    """The summary of ``results.json`` from its ``trials`` (pure)."""
    marked = doc_trials["leaktrace"]
    unmarked = doc_trials["unmarked"]
    embeds = doc_trials["embeds"]
    peer_trials = doc_trials["peers"]

    def attack_info(name: str) -> dict:
        a = ATTACKS[name]
        return {"family": a.family, "strength": a.strength, "kind": attack_kind(name)}

    by_attack: dict = {}
    for name in attacks:
        rs = [r for r in marked if r["attack"] == name]
        counts = {v: sum(r["verdict"] == v for r in rs) for v in ("correct", "wrong", "missed")}
        by_attack[name] = {
            **attack_info(name),
            "trials": len(rs),
            **counts,
            "accuracy": counts["correct"] / len(rs) if rs else None,
            "median_score": _median([r["score"] for r in rs if r["score"] is not None]),
        }
    n_marked = len(marked)
    leak = {
        "by_attack": by_attack,
        "trials": n_marked,
        "correct": sum(r["verdict"] == "correct" for r in marked),
        "wrong": sum(r["verdict"] == "wrong" for r in marked),
        "missed": sum(r["verdict"] == "missed" for r in marked),
    }
    leak["accuracy"] = leak["correct"] / n_marked if n_marked else None

    peer_summary: dict = {}
    for method in peers:
        ps = [r for r in peer_trials if r["method"] == method]
        per: dict = {}
        for name in attacks:
            rs = [r for r in ps if r["attack"] == name]
            acc = [r["bit_accuracy"] for r in rs if r["bit_accuracy"] is not None]
            per[name] = {
                **attack_info(name),
                "trials": len(rs),
                "exact": sum(bool(r["exact"]) for r in rs),
                "exact_rate": sum(bool(r["exact"]) for r in rs) / len(rs) if rs else None,
                "bit_accuracy": _mean(acc),
                "errors": sum(r["error"] is not None for r in rs),
            }
        acc_all = [r["bit_accuracy"] for r in ps if r["bit_accuracy"] is not None]
        peer_summary[method] = {
            "by_attack": per,
            "trials": len(ps),
            "exact_rate": sum(bool(r["exact"]) for r in ps) / len(ps) if ps else None,
            "bit_accuracy": _mean(acc_all),
        }

    quality: dict = {}
    timing: dict = {}
    for method in ("leaktrace", *peers):
        es = [e for e in embeds if e["method"] == method]
        psnrs = [e["psnr_y"] for e in es if math.isfinite(e["psnr_y"])]
        quality[method] = {
            "n": len(es),
            "psnr_y_mean": _mean(psnrs),
            "psnr_y_min": min(psnrs) if psnrs else None,
            "ssim_y_mean": _mean([e["ssim_y"] for e in es]),
            "ssim_y_min": min((e["ssim_y"] for e in es), default=None),
        }
        traces = (
            marked
            if method == "leaktrace"
            else [  # the package's own code only (see _peer_task)
                r
                for r in peer_trials
                if r["method"] == method and r.get("extractor", "package") == "package"
            ]
        )
        # Trace time per MP of the delivered frame: the unattacked leaks when there are any
        # (a tiny attacked leak measures the detector's fixed cost, not its rate).
        if any(r["attack"] == "none" for r in traces):
            traces = [r for r in traces if r["attack"] == "none"]
        timing[method] = {
            "embed_ms_per_mp": _median([e["embed_ms"] / e["megapixels"] for e in es]),
            "trace_ms_per_mp": _median(  # ms / MP
                [r["trace_ms"] / r["megapixels"] for r in traces if r["trace_ms"] is not None]
            ),
        }

    pvals = np.array([r["p_value"] for r in unmarked if r["p_value"] is not None], np.float64)
    false_alarms = {
        "trials": len(unmarked),
        "verdicts": sum(bool(r["found"]) for r in unmarked),
        "min_p_value": float(pvals.min()) if pvals.size else None,
        "fraction_p_le": {
            f"{a:g}": float(np.mean(pvals <= a)) if pvals.size else None for a in P_LEVELS
        },
    }
    return {
        "leaktrace": leak,
        "peers": peer_summary,
        "quality": quality,
        "time_ms_per_mp": timing,
        "false_alarms": false_alarms,
    }


# --------------------------------------------------------------------------- inputs


def load_frames(inputs: Sequence[str | os.PathLike[str]]) -> list[BenchFrame]:
    """Read every image named by ``inputs`` (files, or folders walked recursively).

    Raises
    ------
    BenchError
        No image file was found.
    MediaError
        A frame is missing, unreadable or corrupt (the message names it).
    """
    pairs = iter_image_files(inputs)
    if not pairs:
        exts = " ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        shown = ", ".join(str(p) for p in inputs)
        raise BenchError(f"no image files ({exts}) in {shown}")
    frames = []
    taken: set[str] = set()
    for path, rel in pairs:
        loaded = read_image(path)
        # A frame's name keys its trials and crops, so it must be unique: two folders
        # holding the same relative name (v1/sh010.png, v2/sh010.png) give the second
        # its path as given, which iter_image_files never repeats.
        name = rel.as_posix()
        if name in taken:
            name = path.as_posix()
        for n in itertools.count(2):  # never in practice; a name must still not repeat
            if name not in taken:
                break
            name = f"{path.as_posix()} ({n})"
        taken.add(name)
        frames.append(BenchFrame(name, loaded.pixels, str(path)))
    return frames


def sample_bench_frames(*, quick: bool) -> list[BenchFrame]:
    """The bundled sample frames; ``quick``: the first two, downscaled to 640 px wide."""
    from .samples import sample_frames

    frames = [BenchFrame(name, px, "bundled") for name, px in sample_frames()]
    if quick:
        frames = [
            BenchFrame(f.name, _downscale(f.pixels, QUICK_MAX_SIDE), f.source)
            for f in frames[:QUICK_FRAMES]
        ]
    return frames


def _downscale(pixels: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink (INTER_AREA) so that the largest side is at most ``max_side``; else unchanged."""
    h, w = pixels.shape[:2]
    if max(h, w) <= max_side:
        return pixels
    f = max_side / max(h, w)
    size = (max(16, round(w * f)), max(16, round(h * f)))  # cv2 takes (width, height)
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def _needs_missing_package(name: str) -> str | None:
    """The ImportError message if attack ``name`` needs an optional package that is missing
    (e.g. PyAV for the video codecs), found by running it once on a tiny image; else None."""
    try:
        apply_attack(name, np.full((64, 64, 3), 128, np.uint8), seed=0)
    except ImportError as exc:
        return str(exc)
    except Exception:  # any other failure on a tiny image says nothing about packages
        return None
    return None


def quick_attacks() -> tuple[str, ...]:
    """One attack per family: the foundation attack of that family if any, else the median
    strength one (a family needing a missing optional package is left out)."""
    picked = []
    for family in dict.fromkeys(a.family for a in ATTACKS.values()):
        names = [
            n
            for n in attack_names(family)
            if _needs_missing_package(n) is None and not ATTACKS[n].informed_only
        ]
        if not names:
            continue
        found = [n for n in names if n in FOUNDATION_ATTACKS]
        if found:
            picked.append(found[0])
        else:
            ranked = sorted(names, key=lambda n: ATTACKS[n].strength)
            picked.append(ranked[len(ranked) // 2])
    return tuple(picked)


def resolve_attacks(
    spec: Sequence[str] | None, *, quick: bool
) -> tuple[tuple[str, ...], list[str]]:
    """The attack names to run and the notes on any left out.

    Parameters
    ----------
    spec : sequence of str or None
        Attack names (comma-separated items are split), or ``["all"]``; None or empty
        means :func:`quick_attacks` with ``quick``, else all.

    Raises
    ------
    BenchError
        An unknown name, items that name no attack at all (``[""]``, ``[","]``), or an
        attack whose optional package (PyAV) is missing.
    """
    notes: list[str] = []
    names: list[str] = []
    for item in spec or []:
        names.extend(s.strip() for s in str(item).split(",") if s.strip())
    if spec and not names:  # `--attacks "$LIST"` with LIST empty: not a request for all
        raise BenchError(
            f"--attacks names no attack ({', '.join(map(repr, spec))}); choose 'all' or from: "
            + " ".join(attack_names())
        )
    if not names:
        if quick:
            return quick_attacks(), notes
        names = ["all"]
    if "all" in names:
        chosen = [n for n in attack_names() if not ATTACKS[n].informed_only]
        left = [n for n in chosen if _needs_missing_package(n) is not None]
        chosen = [n for n in chosen if n not in left]
        if left:
            notes.append(
                f"skipped {', '.join(left)}: an optional package is missing (PyAV: pip install av)"
            )
        return tuple(chosen), notes
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        raise BenchError(
            f"unknown attack {', '.join(map(repr, unknown))}; choose 'all' or from: "
            + " ".join(attack_names())
        )
    for name in dict.fromkeys(names):
        missing = _needs_missing_package(name)
        if missing is not None:
            raise BenchError(f"attack {name} needs an optional package: {missing}")
    return tuple(dict.fromkeys(names)), notes


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info() -> dict:
    """Platform, machine, CPU model and counts, Python version."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "python": platform.python_version(),
    }


def versions(*, peers: bool = False) -> dict:
    """Versions of Python, leaktrace and its numeric libraries (and the peers, if asked)."""
    import pywt
    import scipy

    from . import __version__

    out: dict = {
        "python": platform.python_version(),
        "leaktrace": __version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "scipy": scipy.__version__,
        "pywavelets": pywt.__version__,
    }
    for dist in ("matplotlib", "av"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    if peers:
        from .peers import peer_versions

        out["peers"] = peer_versions()
    return out


def write_json(out_dir: Path, name: str, doc: dict) -> Path:
    """Write ``doc`` as strict JSON to ``out_dir/name`` atomically (temp file, rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(jsonable(doc), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- work units


@dataclass(frozen=True, slots=True)
class _Task:
    """One unit of work for a worker: one frame, one method (leaktrace or a peer)."""

    method: str
    frame: str
    pixels: np.ndarray
    payloads: tuple[int, ...]
    attacks: tuple[str, ...]
    seed: int


def flattest_window(image: np.ndarray, size: int) -> tuple[int, int]:
    """(row, col) of the ``size`` x ``size`` window with the lowest luma variance
    (ties go to the window nearest the centre)."""
    y = luma(image).astype(np.float64)
    h, w = y.shape
    s = min(size, h, w)
    m1 = cv2.boxFilter(y, -1, (s, s), normalize=True, borderType=cv2.BORDER_CONSTANT)
    m2 = cv2.boxFilter(y * y, -1, (s, s), normalize=True, borderType=cv2.BORDER_CONSTANT)
    half = s // 2
    var = (m2 - m1 * m1)[half : h - (s - half) + 1, half : w - (s - half) + 1]
    rr, cc = np.nonzero(var <= var.min() + 1e-6)
    centre = np.array([(h - s) / 2, (w - s) / 2])
    best = np.argmin((rr - centre[0]) ** 2 + (cc - centre[1]) ** 2)
    return int(rr[best]), int(cc[best])


def _rgb8(image: np.ndarray) -> np.ndarray:
    """8-bit RGB for crops and peers: grey repeated, alpha dropped, uint16 / 257 rounded."""
    img = image
    if img.dtype == np.uint16:
        img = np.clip(np.rint(img.astype(np.float32) / 257.0), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def _crop(image: np.ndarray, window: tuple[int, int]) -> np.ndarray:
    r, c = window
    return _rgb8(image)[r : r + CROP_SIZE, c : c + CROP_SIZE].copy()


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _run_task(task: _Task) -> dict:
    """Dispatch one task (top-level so a process pool can pickle it)."""
    if task.method == "leaktrace":
        return _leaktrace_task(task)
    return _peer_task(task)


def _leaktrace_task(task: _Task) -> dict:
    image = task.pixels
    mp = image.shape[0] * image.shape[1] / 1e6
    candidates = np.array(task.payloads, dtype=np.uint64)
    window = flattest_window(image, CROP_SIZE)
    trials, embeds, unmarked = [], [], []
    crop_after = None
    for vendor, truth in enumerate(task.payloads):
        t0 = time.perf_counter()
        marked = embed_frame(image, BENCH_KEY, truth).image
        embed_ms = (time.perf_counter() - t0) * 1e3
        embeds.append(
            {
                "method": "leaktrace",
                "frame": task.frame,
                "vendor": vendor,
                "megapixels": mp,
                "embed_ms": embed_ms,
                "psnr_y": psnr_y(image, marked),
                "ssim_y": ssim_y(image, marked),
            }
        )
        if vendor == 0:
            crop_after = _crop(marked, window)
        for attack in task.attacks:
            leak = apply_attack(
                attack, marked, seed=stable_seed(task.seed, task.frame, vendor, attack)
            )
            record = {"frame": task.frame, "vendor": vendor, "truth": truth, "attack": attack}
            record.update(_trace(leak, candidates, truth))
            trials.append(record)
    for attack in task.attacks:
        leak = apply_attack(
            attack, image, seed=stable_seed(task.seed, task.frame, "unmarked", attack)
        )
        record = {"frame": task.frame, "attack": attack}
        record.update(_trace(leak, candidates, None))
        unmarked.append(record)
    return {
        "trials": trials,
        "embeds": embeds,
        "unmarked": unmarked,
        "crop": {
            "frame": task.frame,
            "window": window,
            "variance": float(np.var(luma(_crop(image, window)))),
            "before": _crop(image, window),
            "leaktrace": crop_after,
        },
    }


def _trace(leak: np.ndarray, candidates: np.ndarray, truth: int | None) -> dict:
    """Trace one leak blind; a leak under the detector's 16 px floor is a miss, not a crash.

    Only that documented refusal is recorded (as ``error``): any other exception from the
    detector is a bug and propagates, since counting it as a miss would put a crash into
    the accuracy figures without a word in ``results.md``.
    """
    mp = leak.shape[0] * leak.shape[1] / 1e6
    if min(leak.shape[:2]) < MIN_LEAK_SIDE:  # e.g. a 16 px frame cropped to a quarter
        return {
            "leak_shape": list(leak.shape),
            "megapixels": mp,
            "trace_ms": None,
            "verdict": "missed" if truth is not None else "none",
            "found": False,
            "payload": None,
            "score": None,
            "p_value": None,
            "error": f"leak is {leak.shape[1]}x{leak.shape[0]} px; at least "
            f"{MIN_LEAK_SIDE}x{MIN_LEAK_SIDE} is needed",
        }
    t0 = time.perf_counter()
    det = detect_frame(leak, BENCH_KEY, candidates=candidates)
    ms = (time.perf_counter() - t0) * 1e3
    if truth is None:
        verdict = "false_alarm" if det.found else "none"
    elif det.found and det.payload == truth:
        verdict = "correct"
    elif det.found:
        verdict = "wrong"
    else:
        verdict = "missed"
    return {
        "leak_shape": list(leak.shape),
        "megapixels": mp,
        "trace_ms": ms,
        "verdict": verdict,
        "found": bool(det.found),
        "payload": int(det.payload) if det.payload is not None else None,
        "score": float(det.score),
        "p_value": float(det.p_value),
        "p_mark": float(det.p_mark),
        "chip_px": det.chip_px,
        "error": None,
    }


def _peer_task(task: _Task) -> dict:
    from . import peers

    image = _rgb8(task.pixels)
    mp = image.shape[0] * image.shape[1] / 1e6
    truth = task.payloads[0]
    truth_bits = peers.bits_of(truth)
    key_seed = stable_seed(task.seed, "peer", task.method)
    peers.check_peers([task.method])  # the imports (torch for imwatermark) are not timed
    t0 = time.perf_counter()
    marked = peers.embed(task.method, image, truth, seed=key_seed)
    embed_ms = (time.perf_counter() - t0) * 1e3
    embeds = [
        {
            "method": task.method,
            "frame": task.frame,
            "vendor": 0,
            "megapixels": mp,
            "embed_ms": embed_ms,
            "psnr_y": psnr_y(image, marked),
            "ssim_y": ssim_y(image, marked),
        }
    ]
    # The peer's own extraction (a per-block Python loop) runs, timed, on one leak per
    # frame, the unattacked one when there is one; every other leak goes through the
    # vectorised copy of that loop (peers.extract(vectorised=True)), which must give the
    # same bits on that leak.
    reference = "none" if "none" in task.attacks else task.attacks[0]
    trials = []
    for attack in task.attacks:
        # Same seed as leaktrace's vendor 0: the same crop offsets and noise.
        leak = apply_attack(attack, marked, seed=stable_seed(task.seed, task.frame, 0, attack))
        own_code = attack == reference
        record = {
            "method": task.method,
            "frame": task.frame,
            "truth": truth,
            "attack": attack,
            "leak_shape": list(leak.shape),
            "megapixels": image.shape[0] * image.shape[1] / 1e6,  # extracted at this size
            "extractor": "package" if own_code else "vectorised",
        }
        t0 = time.perf_counter()
        try:
            bits = peers.extract(
                task.method,
                leak,
                expected_shape=image.shape[:2],
                seed=key_seed,
                vectorised=not own_code,
            )
        except Exception as exc:  # a peer failing on a leak is a result, not a crash
            record.update(
                trace_ms=None, bits=None, exact=False, bit_accuracy=None, error=f"{exc}"[:200]
            )
        else:
            record.update(
                trace_ms=(time.perf_counter() - t0) * 1e3,
                bits="".join(map(str, bits.tolist())),
                exact=bool(np.array_equal(bits, truth_bits)),
                bit_accuracy=float(np.mean(bits == truth_bits)),
                error=None,
            )
            if own_code:
                _check_vectorised(task.method, leak, image.shape[:2], key_seed, bits, task.frame)
        trials.append(record)
    window = flattest_window(task.pixels, CROP_SIZE)
    return {
        "peer_trials": trials,
        "embeds": embeds,
        "crop": {"frame": task.frame, task.method: _crop(marked, window)},
    }


def _check_vectorised(
    method: str,
    leak: np.ndarray,
    shape: tuple[int, ...],
    seed: int,
    bits: np.ndarray,
    frame: str,
) -> None:
    """Raise when a peer's vectorised extraction disagrees with its own code."""
    from . import peers

    fast = peers.extract(
        method, leak, expected_shape=(shape[0], shape[1]), seed=seed, vectorised=True
    )
    if not np.array_equal(fast, bits):
        raise LeaktraceError(
            f"{frame}: the vectorised {method} extraction gives other bits than the "
            "package's own; the bench cannot use it with this package version"
        )


# --------------------------------------------------------------------------- runner


def _run_tasks(
    tasks: Sequence[_Task], *, workers: int, progress: ProgressCallback | None
) -> list[dict]:
    """Run every task (a spawn pool of ``workers`` one-thread processes); results in order."""
    results: list = [None] * len(tasks)

    def label(i: int) -> str:
        return f"{tasks[i].method} {tasks[i].frame}"

    if workers <= 1:
        for i, task in enumerate(tasks):
            results[i] = _run_task(task)
            if progress:
                progress(i + 1, len(tasks), label(i))
        return results
    import multiprocessing as mp

    threads = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    saved = {k: os.environ.get(k) for k in threads}
    os.environ.update(threads)  # inherited by the workers, set before they import numpy
    try:
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            jobs = pool.imap_unordered(_indexed, list(enumerate(tasks)))
            for done, (i, res) in enumerate(jobs, start=1):
                results[i] = res
                if progress:
                    progress(done, len(tasks), label(i))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return results


def _indexed(job: tuple[int, _Task]) -> tuple[int, dict]:
    i, task = job
    return i, _run_task(task)


def run_bench(
    frames: Sequence[BenchFrame],
    *,
    attacks: Sequence[str],
    vendors: int = 3,
    peers: bool = False,
    seed: int = 0,
    quick: bool = False,
    out_dir: str | os.PathLike[str],
    progress: ProgressCallback | None = None,
    workers: int = WORKERS,
    max_side: int | None = None,
    notes: Sequence[str] = (),
    command: Sequence[str] | None = None,
) -> BenchResult:
    """Mark ``frames`` for ``vendors`` vendors, attack, trace; write the results to ``out_dir``.

    Parameters
    ----------
    frames : sequence of BenchFrame
        From :func:`load_frames` or :func:`sample_bench_frames`.
    attacks : sequence of str
        Names in :data:`watermark.ATTACKS` (see :func:`resolve_attacks`).
    vendors : int
        Registry size, 1..1000: each frame is marked once per vendor.
    peers : bool
        Also run the peer methods of :mod:`watermark.peers` (vendor 0's id only).
    seed : int
        Base seed (payloads, attack randomness); a rerun with the same seed on the same
        code gives the same trials (libx264 runs its AVX2 code on CPUs with AVX-512, whose
        routines gave other bits for the same clip from call to call, see
        :func:`watermark.video.video_roundtrip`).
    quick : bool
        Recorded in the results (the caller picks the frames and attacks).
    out_dir : path-like
        Created if missing; results.json, results.md, plots, crops and index.html.
    progress : callable, optional
        ``progress(done, total, label)`` after each (frame, method) unit.
    workers : int
        Worker processes (one thread each); 1 runs in this process.
    max_side : int or None
        Downscale frames to at most this many px per side first (all methods see the same
        frames). None: :data:`DEFAULT_PEER_MAX_SIDE` with ``peers``, else full size; 0: full
        size.

    Raises
    ------
    BenchError
        Bad arguments (no frames, unknown attack, vendors or workers out of range).
    PeerUnavailableError
        ``peers`` without the peer packages installed.
    """
    if not frames:
        raise BenchError("no frames to benchmark")
    if isinstance(vendors, bool) or not isinstance(vendors, int) or not 1 <= vendors <= 1000:
        raise BenchError(f"--vendors must be in 1..1000; got {vendors!r}")
    if workers < 1:
        raise BenchError(f"--workers must be >= 1; got {workers}")
    if seed < 0:
        raise BenchError(f"--seed must be >= 0; got {seed}")
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown or not attacks:
        raise BenchError(f"unknown attack(s) {unknown}; choose from {' '.join(attack_names())}")
    from .peers import PEER_METHODS, check_peers

    methods = PEER_METHODS if peers else ()
    if peers:
        check_peers(methods)
    if max_side is None:
        max_side = DEFAULT_PEER_MAX_SIDE if peers else 0
    if max_side < 0:
        raise BenchError(f"--max-side must be >= 0; got {max_side}")
    out = Path(out_dir)
    _prepare_out_dir(out)  # before the run: a bad --out must not cost the whole run

    notes = list(notes)
    if max_side:
        shrunk = [f for f in frames if max(f.pixels.shape[:2]) > max_side]
        if shrunk:
            notes.append(
                f"{len(shrunk)} of {len(frames)} frames were downscaled (INTER_AREA) to at most "
                f"{max_side} px per side before marking, for every method"
                + (" (the peers are slow at full size)" if peers else "")
            )
        frames = [BenchFrame(f.name, _downscale(f.pixels, max_side), f.source) for f in frames]
    if peers:
        notes.append(
            "peers embed vendor 0's id only (one trial per frame and attack); a leak of another "
            "size is resized back to the marked size before a peer extracts (leaktrace gets no "
            "such help)"
        )
        notes.append(
            "each peer extracts with its own code (timed) on each frame's first leak "
            "(the unattacked one when there is one), and with a vectorised copy of its "
            "per-block loop on the others; the run stops if the two ever give other bits"
        )
    payloads = tuple(int(p) for p in distinct_payloads(np.random.default_rng(seed), vendors))
    attacks = tuple(attacks)
    order = sorted(frames, key=lambda f: -f.pixels.shape[0] * f.pixels.shape[1])  # big first
    tasks = [
        _Task(m, f.name, f.pixels, payloads, attacks, seed)
        for m in (*methods, "leaktrace")  # slow peers first: better load balance
        for f in order
    ]
    started = _dt.datetime.now(_dt.UTC)
    t0 = time.perf_counter()
    results = _run_tasks(tasks, workers=workers, progress=progress)
    wall = time.perf_counter() - t0

    trials: dict = {"leaktrace": [], "unmarked": [], "embeds": [], "peers": []}
    crops: dict[str, dict] = {}
    for res in results:
        trials["leaktrace"].extend(res.get("trials", []))
        trials["unmarked"].extend(res.get("unmarked", []))
        trials["embeds"].extend(res["embeds"])
        trials["peers"].extend(res.get("peer_trials", []))
        crops.setdefault(res["crop"]["frame"], {}).update(res["crop"])
    for key in trials:  # frame order of the input, whatever the pool's order
        rank = {f.name: i for i, f in enumerate(frames)}
        trials[key].sort(key=lambda r: (rank[r["frame"]], str(r.get("method", ""))))

    summary = summarise(trials, attacks, methods)
    summary["wall_s"] = wall
    doc = {
        "schema": SCHEMA,
        "created_utc": started.isoformat(timespec="seconds"),
        "command": list(command)
        if command is not None
        else [Path(sys.argv[0]).name, *sys.argv[1:]],
        "seed": seed,
        "quick": quick,
        "key": "sha256('leaktrace benchmark key A')",
        "vendors": vendors,
        "payloads": list(payloads),
        "attacks": [
            {"name": a, "family": ATTACKS[a].family, "strength": ATTACKS[a].strength}
            for a in attacks
        ],
        "peers": list(methods),
        "frames": [
            {
                "name": f.name,
                "source": f.source,
                "height": int(f.pixels.shape[0]),
                "width": int(f.pixels.shape[1]),
                "channels": 1 if f.pixels.ndim == 2 else int(f.pixels.shape[2]),
                "dtype": str(f.pixels.dtype),
            }
            for f in frames
        ],
        "max_side": max_side or None,
        "workers": workers,
        "notes": notes,
        "versions": versions(peers=peers),
        "machine": machine_info(),
        "summary": summary,
        "trials": trials,
    }

    from .report import write_report  # matplotlib (optional) is imported there, lazily

    report = write_report(doc, out, crops=_pick_crops(crops))
    doc["plots"] = [p.name for p in report.plots]
    doc["plots_skipped"] = report.skipped
    json_path = write_json(out, "results.json", doc)
    markdown = results_markdown(doc)
    md_path = out / "results.md"
    md_path.write_text(markdown, encoding="utf-8")
    return BenchResult(
        document=jsonable(doc),
        markdown=markdown,
        json_path=json_path,
        md_path=md_path,
        html_path=report.html,
        plots=report.plots,
        plots_skipped=report.skipped,
    )


def _prepare_out_dir(out: Path) -> None:
    """Create the output folder and prove it writable, or raise BenchError.

    Done before any frame is marked: the results are written only at the end of the run,
    so a file in the way or a read-only folder found then would throw all of it away.
    """
    if out.exists() and not out.is_dir():
        raise BenchError(f"{out}: not a folder (a file of that name is there)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BenchError(f"{out}: cannot write the results there ({exc.strerror or exc})") from None


def _pick_crops(crops: dict[str, dict]) -> list[dict]:
    """The :data:`N_CROPS` frames with the flattest window (where a mark shows most)."""
    complete = [c for c in crops.values() if "before" in c]
    return sorted(complete, key=lambda c: c["variance"])[:N_CROPS]


# --------------------------------------------------------------------------- markdown


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def summary_table(doc: dict) -> str:
    """The per-attack Markdown table: leaktrace's vendor accuracy beside the peers'."""
    s = doc["summary"]
    peers = doc["peers"]
    headers = ["attack", "family", "strength", "leaktrace correct", "wrong"]
    for m in peers:
        headers += [f"{m} exact", f"{m} bits"]
    rows = []
    for a in doc["attacks"]:
        name = a["name"]
        ls = s["leaktrace"]["by_attack"][name]
        row = [name, a["family"], f"{a['strength']:g}", _pct(ls["accuracy"]), str(ls["wrong"])]
        for m in peers:
            ps = s["peers"][m]["by_attack"][name]
            row += [_pct(ps["exact_rate"]), _pct(ps["bit_accuracy"])]
        rows.append(row)
    return markdown_table(headers, rows)


def results_markdown(doc: dict) -> str:
    """``results.md``: what was run, the per-attack table, quality, time, false alarms."""
    s = doc["summary"]
    lt = s["leaktrace"]
    n = len(doc["frames"])
    lines = [
        "# leaktrace bench",
        "",
        f"`{' '.join(doc['command'])}`: {n} frames x {doc['vendors']} vendors x "
        f"{len(doc['attacks'])} attacks, seed {doc['seed']}"
        + (f", peers: {', '.join(doc['peers'])}" if doc["peers"] else "")
        + f"; {s['wall_s']:.0f} s wall with {doc['workers']} worker(s) on "
        f"{doc['machine']['cpu_count']} x {doc['machine']['cpu_model']}, leaktrace "
        f"{doc['versions']['leaktrace']}.",
        "",
        "leaktrace: *correct* = the trace names the vendor whose copy leaked (p <= 1e-6); "
        "*wrong* = it names another vendor (a false accusation). Peers: *exact* = all 32 "
        "payload bits right; *bits* = mean bit accuracy (50 % is chance).",
        "",
        summary_table(doc),
        "",
        f"leaktrace overall: {lt['correct']} of {lt['trials']} correct, {lt['wrong']} WRONG, "
        f"{lt['missed']} missed.",
        "",
    ]
    fa = s["false_alarms"]
    lines += [
        f"False alarms: {fa['trials']} unmarked trials (every frame x every attack, traced "
        f"against the {doc['vendors']} ids): {fa['verdicts']} verdicts; smallest p-value "
        f"{fmt(fa['min_p_value'], '.2g')}; fraction with p <= 0.01: "
        f"{fmt(fa['fraction_p_le']['0.01'], '.3f')}.",
        "",
    ]
    q_rows = []
    for m, q in s["quality"].items():
        t = s["time_ms_per_mp"][m]
        q_rows.append(
            [
                m,
                fmt(q["psnr_y_mean"]),
                fmt(q["psnr_y_min"]),
                fmt(q["ssim_y_mean"], ".4f"),
                fmt(q["ssim_y_min"], ".4f"),
                fmt(t["embed_ms_per_mp"], ".0f"),
                fmt(t["trace_ms_per_mp"], ".0f"),
            ]
        )
    lines += [
        markdown_table(
            [
                "method",
                "PSNR-Y mean (dB)",
                "PSNR-Y min (dB)",
                "SSIM-Y mean",
                "SSIM-Y min",
                "embed (ms/MP)",
                "trace (ms/MP)",
            ],
            q_rows,
        ),
        "",
        "Times are medians over trials, one thread per worker process.",
        "",
    ]
    if doc["notes"]:
        lines += ["Notes:", "", *[f"- {note}" for note in doc["notes"]], ""]
    if doc.get("plots_skipped"):
        lines += [f"Plots skipped: {doc['plots_skipped']}", ""]
    return "\n".join(lines)
