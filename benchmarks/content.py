"""Content and size: does the mark hold on kinds of frames the corpus lacks, 300 px to 4K?

    python benchmarks/content.py [--sizes 300x300 640x360 ...]
                                 [--attacks NAME... | matrix | geometry] [--vendors 3]
                                 [--frames-per-size 1] [--kinds KIND...] [--flat-rms 1.0]
                                 [--save-frames DIR] [--workers 2] [--out DIR] [--seed 0]

The corpus is a few dozen real frames; a studio's own are other content at other sizes.
This script makes seeded frames of eleven kinds at each size: flat cel fills with
outlines, a photo-like texture, a fine periodic weave (fabric, screen-door), manga-like
line art toned with screentone dots and hatching, a smooth render (soft shading, no
texture), a dark night frame, a sparse line drawing on pure white paper, a corpus
line-art page levelled to pure white paper (a model sheet), a corpus photo resized, the
render letterboxed to 2.39:1 between black bars, and the cel frame near the end of a
fade to black.
Each is marked for the first of --vendors random payloads and attacked; the marked leak
is traced against all payloads (correct, WRONG or missed) and so is the unmarked frame
after the same attack (any verdict is a false accusation). One frame per kind and size
gives one trial per attack; --frames-per-size N generates N frames of each (the first is
the one-frame run's), so an accuracy is a rate over N different frames, not one frame's
luck (the photo and the inked page are the same picture each time; only their attacks'
seeds change). Table per kind x size: accuracy, wrong, unmarked verdicts, PSNR-Y and
SSIM-Y of the marked frame against the generated one, and the margin embed reports (under
1.25 embed warns that the frame is weak). JSON in OUT/content.json. Exit 1 on any wrong
verdict or any verdict on an unmarked frame.

--kinds limits the run to some kinds. --flat-rms marks with another flat-fill amplitude
(grey levels RMS; the codec's default is CodecParams.flat_rms) to measure what a stronger,
more visible floor would buy; the trace does not depend on it. --save-frames writes each
generated frame (unmarked, PNG) to a folder, so that quality.py can write its 1:1 crops.
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread per worker process, set before numpy and cv2 are imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import dataclasses
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import _common as common
import cv2
import numpy as np

from watermark import detect_frame, embed_frame
from watermark._attacks import (
    BLIND_MATRIX_ATTACKS,
    GEOMETRY_ATTACKS,
    apply_attack,
    attack_names,
)
from watermark._metrics import ssim_y
from watermark._params import DEFAULT_PARAMS

DEFAULT_SIZES = ("300x300", "640x360", "1280x720", "1920x1080", "3840x2160")
DEFAULT_ATTACKS = ("none", "jpeg50", "scale0.5", "crop50", "screenshot", "social", "rotate2")
# --attacks also takes these names for whole sets: the blind robustness issue's matrix and
# the blind geometry issue's list
ATTACK_SETS = {"matrix": BLIND_MATRIX_ATTACKS, "geometry": GEOMETRY_ATTACKS}
PHOTO = common.ROOT.parent / "shared/corpus/photos/kodak_kodim23_768x512.png"
INKED = (
    common.ROOT.parent
    / "shared/corpus/frames/peppercarrot_fixing-the-project_lineart_revoy_2361x1427.jpg"
)


# ------------------------------------------------------------------------------ content


def cel(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Flat background, a dozen flat-filled ellipses with dark anti-aliased outlines."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = rng.integers(150, 250, 3, dtype=np.uint8)
    for _ in range(12):
        colour = tuple(int(c) for c in rng.integers(30, 250, 3))
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(w // 16, w // 4)), int(rng.integers(h // 16, h // 4)))
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(img, centre, axes, angle, 0, 360, colour, -1, cv2.LINE_AA)
        cv2.ellipse(img, centre, axes, angle, 0, 360, (20, 20, 30), 2, cv2.LINE_AA)
    return img


def textured(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Photo-like: smooth ramps plus 1/f-ish colour texture."""
    noise = rng.normal(0.0, 1.0, (h, w, 3)).astype(np.float32)
    tex = cv2.GaussianBlur(noise, (0, 0), 1.5) * 25 + cv2.GaussianBlur(noise, (0, 0), 6.0) * 60
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (yy / h * 80 + xx / w * 40)[..., None]
    return np.clip(np.rint(90 + ramp + tex), 0, 255).astype(np.uint8)


def weave(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Fine periodic texture (3.7 x 4.3 px weave) with fine noise: fabric, screen-door."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    grid = 40 * np.sin(2 * np.pi * xx / 3.7) * np.sin(2 * np.pi * yy / 4.3)
    fine = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 0.7) * 30
    g = 128 + grid + fine
    return np.clip(np.dstack([g, 0.9 * g + 10, 0.7 * g + 30]), 0, 255).astype(np.uint8)


def toned(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Manga-like line art: screentone dots (6 px, 45 degrees) and hatching (a 1-px line
    every 5 px) fill most of the page (a tenth is left near-white paper), under thick ink
    outlines."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = (xx + yy) / np.sqrt(2.0), (xx - yy) / np.sqrt(2.0)
    dots = np.cos(2 * np.pi * u / 6.0) + np.cos(2 * np.pi * v / 6.0) > 0.6
    hatch = np.mod(xx - yy, 5.0) < 1.0
    patches = cv2.resize(
        rng.random((4, 6)).astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST
    )
    ink = np.where(patches < 0.45, dots, (patches < 0.9) & hatch)
    img = cv2.GaussianBlur(np.where(ink, 35.0, 250.0).astype(np.float32), (0, 0), 0.5)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    for _ in range(10):
        pts = rng.integers(0, [w, h], size=(5, 2)).astype(np.int32)
        cv2.polylines(img, [pts], True, 0, max(2, min(h, w) // 200), cv2.LINE_AA)
    return np.dstack([img] * 3)


def render(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """3D-render-like: very smooth shading and soft-edged discs, no texture."""
    base = rng.normal(0, 1, (h, w, 3)).astype(np.float32)
    base = cv2.GaussianBlur(base, (0, 0), max(h, w) / 20)
    img = 40 + (base - base.min()) / (np.ptp(base) + 1e-6) * 170
    for _ in range(6):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        colour = tuple(float(v) for v in rng.uniform(30, 220, 3))
        cv2.circle(img, centre, int(rng.integers(h // 12, h // 4)), colour, -1, cv2.LINE_AA)
    return np.clip(np.rint(cv2.GaussianBlur(img, (0, 0), 2.0)), 0, 255).astype(np.uint8)


def night(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """The photo-like texture at 15 % brightness: a dark frame near black."""
    return (textured(h, w, rng).astype(np.float32) * 0.15).astype(np.uint8)


def white_page(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Forty thin black strokes on pure white (255): little host, and only the darker half
    of the mark fits on white."""
    img = np.full((h, w, 3), 255, np.uint8)
    for _ in range(40):
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p1, p2, (0, 0, 0), 2, cv2.LINE_AA)
    return img


def _resized(path: Path, h: int, w: int) -> np.ndarray:
    src = common.read_image(path, alpha=False)
    interp = cv2.INTER_AREA if w * h < src.shape[0] * src.shape[1] else cv2.INTER_CUBIC
    return cv2.resize(src, (w, h), interpolation=interp)


def inked_page(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A model-sheet-like page: the corpus line-art page with every level above 200 pushed
    to pure white (a scanned drawing levelled to white paper), resized, aspect not kept."""
    del rng
    page = _resized(INKED, h, w).astype(np.float32)
    return np.clip(np.rint(page * (255.0 / 200.0)), 0, 255).astype(np.uint8)


def photo(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A corpus photo (Kodak 23) resized to the size, aspect not kept."""
    del rng
    return _resized(PHOTO, h, w)


def letterboxed(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """The render at 2.39:1, centred between black (0) bars that fill the rest of the
    height: a film frame delivered in a 16:9 or square container."""
    picture = min(h, max(1, round(w / 2.39)))
    top = (h - picture) // 2
    img = np.zeros((h, w, 3), np.uint8)
    img[top : top + picture] = render(picture, w, rng)
    return img


def fade(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """The cel frame at 4 % brightness, near the end of a fade to black: flat fills of
    grey 1 to 10, where SSIM weighs a grey level of mark most."""
    return (cel(h, w, rng).astype(np.float32) * 0.04).astype(np.uint8)


KINDS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "cel": cel,
    "textured": textured,
    "weave": weave,
    "toned": toned,
    "render": render,
    "night": night,
    "white page": white_page,
    "inked page": inked_page,
    "photo": photo,
    "letterboxed": letterboxed,
    "fade": fade,
}


# ------------------------------------------------------------------------------ trials


def _by_kind_and_size(results: list[dict]) -> list[list[dict]]:
    """`results` (sorted by kind, size, variant) grouped by kind and size, in order."""
    groups: dict[tuple[str, int, int], list[dict]] = {}
    for r in results:
        groups.setdefault((r["kind"], r["width"], r["height"]), []).append(r)
    return list(groups.values())


def _table_row(group: list[dict]) -> list[str]:
    """One table row for the frames of one kind at one size (summaries filled in)."""
    first = group[0]
    summaries = [r["summary"] for r in group]
    trials = sum(s["trials"] for s in summaries)
    unmarked = sum(len(r["trials"]) for r in group) - trials
    margins = [r["margin"] for r in group]
    n_weak = sum(bool(r["weak"]) for r in group)
    if len(group) == 1:
        margin = common.fmt(first["margin"], ".2f") + (" (weak)" if first["weak"] else "")
    else:
        margin = f"{common.fmt(min(margins), '.2f')} to {common.fmt(max(margins), '.2f')}"
        margin += f" ({n_weak} weak)" if n_weak else ""
    missed: dict[str, int] = {}
    for s in summaries:
        for attack in s["missed"]:
            missed[attack] = missed.get(attack, 0) + 1
    return [
        first["kind"],
        f"{first['width']}x{first['height']}",
        f"{sum(s['correct'] for s in summaries)}/{trials}",
        str(sum(s["wrong"] for s in summaries)),
        f"{sum(s['unmarked_verdicts'] for s in summaries)}/{unmarked}",
        common.fmt(float(np.mean([r["psnr_y"] for r in group])), ".1f"),
        common.fmt(float(np.min([r["ssim_y"] for r in group])), ".4f"),
        margin,
        ", ".join(a if n == 1 else f"{a} x{n}" for a, n in missed.items()) or "-",
    ]


@dataclasses.dataclass(frozen=True, slots=True)
class Task:
    """One frame of a kind at one size: the unit of work of a worker process."""

    name: str  # "<kind> <W>x<H>", then " #<variant>" after the first frame
    kind: str
    shape: tuple[int, int]
    payloads: tuple[int, ...]
    attacks: tuple[str, ...]
    seed: int
    variant: int = 0  # which of --frames-per-size frames
    flat_rms: float = DEFAULT_PARAMS.flat_rms  # grey levels RMS, see CodecParams
    save_to: Path | None = None  # folder for the generated frame's PNG


def run_task(task: Task) -> dict:
    """Generate, mark, attack, trace the marked and the unmarked leak of every attack."""
    h, w = task.shape
    # the first frame's seed is the one-frame run's: its results are the same
    parts = (task.seed, task.kind, h, w) + ((task.variant,) if task.variant else ())
    rng = np.random.default_rng(common.stable_seed(*parts))
    frame = KINDS[task.kind](h, w, rng)
    if task.save_to is not None:
        common.write_png(task.save_to / f"{frame_stem(task)}.png", frame)
    truth = task.payloads[0]
    candidates = np.array(task.payloads, dtype=np.uint64)
    params = dataclasses.replace(DEFAULT_PARAMS, flat_rms=task.flat_rms)
    marked = embed_frame(frame, common.TEST_KEY, truth, params=params)
    trials = []
    for attack in task.attacks:
        seed = common.stable_seed(task.seed, task.name, attack)
        for source, image in (("marked", marked.image), ("unmarked", frame)):
            leak = apply_attack(attack, image, seed=seed)
            t0 = time.perf_counter()
            det = detect_frame(leak, common.TEST_KEY, candidates=candidates)
            ms = (time.perf_counter() - t0) * 1e3
            if not det.found:
                verdict = "missed" if source == "marked" else "none"
            elif source == "marked" and det.payload == truth:
                verdict = "correct"
            else:
                verdict = "wrong"
            trials.append(
                {
                    "attack": attack,
                    "source": source,
                    "verdict": verdict,
                    "score": det.score,
                    "p_value": det.p_value,
                    "detect_ms": ms,
                }
            )
    return {
        "name": task.name,
        "kind": task.kind,
        "variant": task.variant,
        "width": w,
        "height": h,
        "psnr_y": marked.psnr_y,
        "ssim_y": ssim_y(frame, marked.image),
        "level": marked.level,
        "margin": marked.margin,
        "weak": marked.weak,
        "trials": trials,
    }


def frame_stem(task: Task) -> str:
    """File name (no suffix) of a task's generated frame: ``cel_640x360``, ``cel_640x360_2``."""
    h, w = task.shape
    return f"{task.kind.replace(' ', '-')}_{w}x{h}" + (f"_{task.variant}" if task.variant else "")


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (H, W)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m[1]) < 64 or int(m[2]) < 64 or int(m[1]) * int(m[2]) > 8192 * 8192:
        raise argparse.ArgumentTypeError(f"size must be WxH, 64 to 8192 px a side; got {text!r}")
    return int(m[2]), int(m[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=parse_size,
        default=[parse_size(s) for s in DEFAULT_SIZES],
        metavar="WxH",
        help=f"frame sizes (default: {' '.join(DEFAULT_SIZES)})",
    )
    parser.add_argument(
        "--attacks",
        nargs="+",
        default=list(DEFAULT_ATTACKS),
        metavar="NAME",
        help="attack names, or 'matrix' / 'geometry' for the blind robustness matrix / the "
        "blind geometry list (default: %(default)s)",
    )
    parser.add_argument("--vendors", type=int, default=3, help="registry size (3)")
    parser.add_argument(
        "--frames-per-size",
        type=int,
        default=1,
        metavar="N",
        help="generated frames of each kind at each size, each its own seed (1)",
    )
    parser.add_argument(
        "--kinds",
        nargs="+",
        choices=list(KINDS),
        default=list(KINDS),
        metavar="KIND",
        help=f"kinds of frame (default: all; choose from {', '.join(map(repr, KINDS))})",
    )
    common.add_flat_rms_arg(parser)
    parser.add_argument(
        "--save-frames", type=Path, metavar="DIR", help="write the generated frames as PNG"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="run seed (0)")
    args = parser.parse_args()
    args.attacks = [n for a in args.attacks for n in ATTACK_SETS.get(a, (a,))]
    kinds = list(dict.fromkeys(args.kinds))  # in order, once each
    unknown = [a for a in args.attacks if a not in attack_names()]
    if unknown:
        known = [*ATTACK_SETS, *attack_names()]
        parser.error(f"unknown attack(s) {unknown}; choose from {known}")
    if not 1 <= args.vendors <= 1000:
        parser.error(f"--vendors must be in 1..1000; got {args.vendors}")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1; got {args.workers}")
    if not 1 <= args.frames_per_size <= 1000:
        parser.error(f"--frames-per-size must be in 1..1000; got {args.frames_per_size}")
    if args.save_frames is not None:
        try:
            args.save_frames.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            parser.error(f"--save-frames: cannot create {args.save_frames}: {e.strerror}")
    for path in (PHOTO, INKED):
        if not path.is_file():
            parser.error(f"{path} is missing (../shared/corpus beside the repository)")

    payloads = tuple(
        int(p) for p in common.distinct_payloads(np.random.default_rng(args.seed), args.vendors)
    )
    attacks = tuple(dict.fromkeys(args.attacks))
    sizes = sorted(set(args.sizes), key=lambda s: -s[0] * s[1])  # big first: even load
    tasks = [
        Task(
            f"{kind} {w}x{h}" + (f" #{v}" if v else ""),
            kind,
            (h, w),
            payloads,
            attacks,
            args.seed,
            v,
            args.flat_rms,
            args.save_frames,
        )
        for h, w in sizes
        for kind in kinds
        for v in range(args.frames_per_size)
    ]
    t0 = time.perf_counter()
    results = common.run_tasks(run_task, tasks, workers=args.workers, label="content")
    wall = time.perf_counter() - t0
    results.sort(
        key=lambda r: (list(KINDS).index(r["kind"]), r["width"] * r["height"], r["variant"])
    )

    wrong, unmarked_verdicts = 0, 0
    for r in results:
        marked = [t for t in r["trials"] if t["source"] == "marked"]
        unmarked = [t for t in r["trials"] if t["source"] == "unmarked"]
        correct = sum(t["verdict"] == "correct" for t in marked)
        n_wrong = sum(t["verdict"] == "wrong" for t in marked)
        n_false = sum(t["verdict"] != "none" for t in unmarked)
        wrong += n_wrong
        unmarked_verdicts += n_false
        missed = [t["attack"] for t in marked if t["verdict"] == "missed"]
        r["summary"] = {"correct": correct, "trials": len(marked), "wrong": n_wrong}
        r["summary"].update({"unmarked_verdicts": n_false, "missed": missed})
    rows = [_table_row(group) for group in _by_kind_and_size(results)]
    doc = {
        "benchmark": "content",
        "key": "sha256('leaktrace benchmark key A')",
        "payloads": list(payloads),
        "attacks": list(attacks),
        "sizes": [f"{w}x{h}" for h, w in sizes],
        "frames_per_size": args.frames_per_size,
        "kinds": kinds,
        "flat_rms": args.flat_rms,
        "seed": args.seed,
        "workers": args.workers,
        "wall_s": wall,
        "results": results,
        "machine": common.machine_info(),
    }
    json_path = common.write_json(args.out, "content.json", doc)

    print(
        f"## Content and size: {len(kinds)} kind{'s' if len(kinds) > 1 else ''}"
        + f" x {len(sizes)} size{'s' if len(sizes) > 1 else ''}"
        + (f" x {args.frames_per_size} frames" if args.frames_per_size > 1 else "")
        + f" x {len(attacks)} attacks ({', '.join(attacks)}), marked and unmarked\n"
    )
    psnr = "PSNR-Y dB" + (" (mean)" if args.frames_per_size > 1 else "")
    headers = ["content", "size", "correct", "WRONG", "unmarked verdicts", psnr, "SSIM-Y (min)"]
    headers += ["margin", "missed after"]
    print(common.markdown_table(headers, rows))
    trials = sum(len(r["trials"]) for r in results) // 2
    correct = sum(r["summary"]["correct"] for r in results)
    print(
        f"\nMarked trials {trials}: correct {correct}, WRONG {wrong}; unmarked trials {trials}: "
        f"verdicts {unmarked_verdicts}; wall {wall:.0f} s with {args.workers} worker(s)"
    )
    print(f"JSON: {json_path}")
    if wrong or unmarked_verdicts:
        print(
            f"error: {wrong} wrong verdict(s), {unmarked_verdicts} on unmarked frames",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(common.main_wrapper(main))
