"""Near-duplicate originals: does a leak trace to its own delivery and its own original?

Studios deliver near-duplicates as separate stills: a frame and its retake, the frames of
a hold or a slow pan, the same frame at another size. Their local features are the same,
so the asset index must not reject them as ambiguous, and only the mark tells them apart.
For each image (default ../shared/corpus frames and photos, the longer side brought to at
most ``--max-side`` px) this builds a family of four originals:

- ``frame``: the image less a 2 % margin on each side;
- ``retake``: the frame with a patch (a fifth of each side, at a seeded place) 24 grey
  levels brighter;
- ``pan``: the same window moved 1 % of the width right and 0.5 % of the height down;
- ``half``: the frame at half size.

Every original of every family is delivered to its own vendor (``frame``, ``retake``,
``pan``, ``half``) in one studio, so the index holds them all. Then, through
:meth:`watermark.studio.Studio.trace_image` (the code behind ``leaktrace trace``):

- marked trials: each marked copy after each attack: right delivery, right source
  original, which mode answered;
- unmarked trials: each original after each ``--unmarked-attacks`` attack: any verdict is
  a false accusation.

Writes ``near_duplicates.json`` and ``near_duplicates.md`` to ``--out``; exit 1 on a
wrong verdict.

    python benchmarks/near_duplicates.py
    python benchmarks/near_duplicates.py --attacks none jpeg30 --unmarked-attacks none
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread per process, set before numpy and cv2.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import _common as C  # noqa: N812  (puts the checkout on sys.path first)
import cv2
import numpy as np

from watermark._attacks import ATTACKS, apply_attack
from watermark.media import write_image
from watermark.studio import Studio

MEMBERS = ("frame", "retake", "pan", "half")
DEFAULT_ATTACKS = ("none", "jpeg30", "webp30", "crop10", "rotate30", "scale0.25", "camcorder10")
DEFAULT_UNMARKED_ATTACKS = ("none", "jpeg50")
_MARGIN = 0.02  # of each side, cut from the image to leave room for the pan
_PAN = (0.01, 0.005)  # pan step, shares of the width and height
_PATCH = 0.2  # retake patch side, share of each side
_PATCH_LIFT = 24  # grey levels added in the retake patch


@dataclass(frozen=True, slots=True)
class Trial:
    name: str
    image: str  # file to attack
    attack: str
    seed: int
    expect_delivery: str | None  # None: unmarked, any verdict is wrong
    expect_source: str  # original path the leak should register to
    member: str


def family(image: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The four near-duplicate originals made from `image` (uint8, (H, W) or (H, W, 3))."""
    h, w = image.shape[:2]
    mx, my = round(_MARGIN * w), round(_MARGIN * h)
    dx, dy = max(1, round(_PAN[0] * w)), max(1, round(_PAN[1] * h))
    frame = np.ascontiguousarray(image[my : h - my, mx : w - mx])
    pan = np.ascontiguousarray(image[my + dy : h - my + dy, mx + dx : w - mx + dx])
    fh, fw = frame.shape[:2]
    ph, pw = round(_PATCH * fh), round(_PATCH * fw)
    rng = np.random.default_rng(seed)
    y0, x0 = int(rng.integers(0, fh - ph + 1)), int(rng.integers(0, fw - pw + 1))
    retake = frame.copy()
    patch = retake[y0 : y0 + ph, x0 : x0 + pw].astype(np.int16) + _PATCH_LIFT
    retake[y0 : y0 + ph, x0 : x0 + pw] = np.clip(patch, 0, 255).astype(np.uint8)
    half = cv2.resize(frame, (fw // 2, fh // 2), interpolation=cv2.INTER_AREA)
    return {"frame": frame, "retake": retake, "pan": pan, "half": half}


def _setup(args: argparse.Namespace, work: Path) -> dict:
    images = C.find_images(args.frames)
    originals: dict[tuple[str, str], Path] = {}
    for path in images:
        image = C.read_image(path, alpha=False)
        if image.dtype != np.uint8:
            image = (image // 257).astype(np.uint8)
        scale = args.max_side / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        for member, pixels in family(image, C.stable_seed(args.seed, path.name)).items():
            out = work / "originals" / member / f"{path.stem}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            write_image(out, pixels, format="png")
            originals[(path.name, member)] = out
    home = work / "studio"
    deliveries: dict[tuple[str, str], tuple[str, str]] = {}
    with Studio.create(home) as studio:
        for member in MEMBERS:
            studio.add_vendor(member)
            recs = studio.embed_files(
                [work / "originals" / member], member, work / "to" / member, progress=None
            )
            bad = [r for r in recs if r.status != "embedded"]
            if bad:
                raise C.BenchError(f"embed failed: {bad[0].error}")
            by_input = {Path(r.input).name: r for r in recs}
            for path in images:
                r = by_input[f"{path.stem}.png"]
                deliveries[(path.name, member)] = (str(r.output), str(r.delivery_id))
            print(f"[setup] {member}: {len(recs)} deliveries", file=sys.stderr, flush=True)
        n_assets, _ = studio.registry.count_assets()
    return {
        "home": home,
        "images": images,
        "originals": originals,
        "deliveries": deliveries,
        "n_assets": n_assets,
    }


_STATE: dict = {}


def _run_trial(job: tuple[str, Trial]) -> dict:
    home, t = job
    if _STATE.get("home") != home:
        studio = Studio.open(home)
        _STATE.update(home=home, studio=studio, index=studio.load_index())
    studio, index = _STATE["studio"], _STATE["index"]
    leak = apply_attack(t.attack, C.read_image(Path(t.image)), seed=t.seed)
    start = time.perf_counter()
    rec = studio.trace_image(leak, name=t.name, index=index)
    seconds = time.perf_counter() - start
    if t.expect_delivery is None:
        outcome = "wrong" if rec.found else "no verdict"
    elif rec.found:
        outcome = "correct" if rec.delivery_id == t.expect_delivery else "wrong"
    else:
        outcome = "missed"
    source = None if rec.source is None else Path(rec.source).resolve()
    return {
        "name": t.name,
        "member": t.member,
        "attack": t.attack,
        "marked": t.expect_delivery is not None,
        "outcome": outcome,
        "mode": rec.mode,
        "source_right": source == Path(t.expect_source).resolve(),
        "source_member": None if source is None else source.parent.name,
        "p_value": rec.p_value,
        "n_tests": rec.n_tests,
        "seconds": seconds,
    }


def _trials(args: argparse.Namespace, setup: dict) -> list[Trial]:
    trials = []
    for path in setup["images"]:
        for member in MEMBERS:
            original = str(setup["originals"][(path.name, member)])
            marked, delivery = setup["deliveries"][(path.name, member)]
            for attack in args.attacks:
                seed = C.stable_seed(args.seed, path.name, member, attack)
                name = f"{path.name}|{member}|{attack}"
                trials.append(Trial(name, marked, attack, seed, delivery, original, member))
            for attack in args.unmarked_attacks:
                seed = C.stable_seed(args.seed, path.name, member, attack, "unmarked")
                name = f"{path.name}|{member}|{attack}|unmarked"
                trials.append(Trial(name, original, attack, seed, None, original, member))
    return trials


def _summarise(results: list[dict]) -> tuple[list[list[object]], list[list[object]], dict]:
    marked = [r for r in results if r["marked"]]
    unmarked = [r for r in results if not r["marked"]]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in marked:
        groups.setdefault((r["member"], r["attack"]), []).append(r)
    rows = []
    for (member, attack), rs in groups.items():
        rows.append(
            [
                member,
                attack,
                len(rs),
                sum(r["outcome"] == "correct" for r in rs),
                sum(r["outcome"] == "wrong" for r in rs),
                sum(r["outcome"] == "missed" for r in rs),
                sum(r["outcome"] == "correct" and r["mode"] == "informed" for r in rs),
                sum(r["outcome"] == "correct" and r["source_right"] for r in rs),
            ]
        )
    un_groups: dict[tuple[str, str], list[dict]] = {}
    for r in unmarked:
        un_groups.setdefault((r["member"], r["attack"]), []).append(r)
    un_rows = []
    for (member, attack), rs in un_groups.items():
        un_rows.append(
            [
                member,
                attack,
                len(rs),
                sum(r["outcome"] == "wrong" for r in rs),
                sum(r["mode"] == "informed" for r in rs),
                sum(r["source_member"] is not None for r in rs),
                sum(r["source_right"] for r in rs),
                C.fmt(min(r["p_value"] for r in rs)),
            ]
        )
    total = {
        "marked_trials": len(marked),
        "correct": sum(r["outcome"] == "correct" for r in marked),
        "wrong": sum(r["outcome"] == "wrong" for r in marked),
        "missed": sum(r["outcome"] == "missed" for r in marked),
        "informed": sum(r["outcome"] == "correct" and r["mode"] == "informed" for r in marked),
        "source_right": sum(r["outcome"] == "correct" and r["source_right"] for r in marked),
        "unmarked_trials": len(unmarked),
        "unmarked_verdicts": sum(r["outcome"] == "wrong" for r in unmarked),
        "unmarked_min_p": min((r["p_value"] for r in unmarked), default=None),
    }
    return rows, un_rows, total


def _markdown(doc: dict) -> str:
    s = doc["summary"]
    return "\n".join(
        [
            "# Near-duplicate originals",
            "",
            f"{doc['images']} images x 4 near-duplicate originals (frame, retake, pan, half), "
            f"{doc['assets']} assets in one studio, each delivered to its own vendor; longer "
            f"side at most {doc['max_side']} px.",
            f"Marked trials {s['marked_trials']}: correct {s['correct']} (informed "
            f"{s['informed']}, source original right {s['source_right']}), WRONG {s['wrong']}, "
            f"missed {s['missed']}. Unmarked trials {s['unmarked_trials']}: "
            f"{s['unmarked_verdicts']} verdicts, smallest p {C.fmt(s['unmarked_min_p'])}.",
            "",
            C.markdown_table(
                [
                    "original",
                    "attack",
                    "trials",
                    "correct",
                    "WRONG",
                    "missed",
                    "informed",
                    "source right",
                ],
                doc["per_attack"],
            ),
            "",
            "Unmarked originals:",
            "",
            C.markdown_table(
                [
                    "original",
                    "attack",
                    "trials",
                    "verdicts",
                    "informed",
                    "source named",
                    "its own",
                    "min p",
                ],
                doc["unmarked"],
            ),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_args(parser)
    parser.set_defaults(out=C.DEFAULT_OUT / "near_duplicates")
    parser.add_argument("--attacks", nargs="+", default=list(DEFAULT_ATTACKS))
    parser.add_argument("--unmarked-attacks", nargs="*", default=list(DEFAULT_UNMARKED_ATTACKS))
    parser.add_argument("--max-side", type=int, default=1280, help="longer side, px (1280)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    unknown = [a for a in [*args.attacks, *args.unmarked_attacks] if a not in ATTACKS]
    if unknown:
        raise C.BenchError(f"unknown attack(s) {unknown}")
    if not args.attacks:
        raise C.BenchError("--attacks: name at least one attack")
    if args.max_side < 64 or args.workers < 1:
        raise C.BenchError("--max-side must be at least 64 and --workers at least 1")
    if args.out.exists() and not args.out.is_dir():
        raise C.BenchError(f"--out {args.out} is not a directory")
    C.frame_infos(args.frames)  # every image decodes, before anything is written
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="near-duplicates-", dir=args.out))
    try:
        setup = _setup(args, work)
        trials = _trials(args, setup)
        start = time.perf_counter()
        results = C.run_tasks(
            _run_trial,
            [(str(setup["home"]), t) for t in trials],
            workers=args.workers,
            label="trace",
        )
        rows, un_rows, total = _summarise(results)
        doc = {
            "machine": C.machine_info(),
            "images": len(setup["images"]),
            "assets": setup["n_assets"],
            "max_side": args.max_side,
            "trials_wall_seconds": time.perf_counter() - start,
            "summary": total,
            "per_attack": rows,
            "unmarked": un_rows,
            "trials": results,
        }
        C.write_json(args.out, "near_duplicates.json", doc)
        text = _markdown(doc)
        tmp = args.out / "near_duplicates.md.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(args.out / "near_duplicates.md")
        print(text)
        if total["wrong"] or total["unmarked_verdicts"]:
            print("error: a false accusation (see the WRONG column)", file=sys.stderr)
            return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(C.main_wrapper(main))
