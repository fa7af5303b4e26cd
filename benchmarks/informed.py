"""Informed trace benchmark: find the source asset, register, decide from the residual.

Builds a real studio (registry, asset index, marked copies on disk) with at least
``--assets`` assets, each delivered to ``--vendors`` vendors: the target images (default
../shared/corpus frames and photos) plus distractor assets (frames sampled from the
corpus video clips) so that the index is as large as asked. Then, through
:meth:`watermark.studio.Studio.trace_image` (the code behind ``leaktrace trace``):

- marked trials: each target's copy for one vendor (rotating over the vendors, or all of
  them with ``--all-vendors``) after each attack: right vendor and delivery, right source
  asset, which mode answered;
- unmarked trials: the unmarked original of each target, and originals indexed with
  ``asset add`` but never delivered, after each attack: any verdict is a false accusation;
- timing on one core: informed trace of the 1920x1080 targets, and the index lookup alone
  (describing the leak and matching it against every indexed asset).

Writes ``informed.json`` and ``informed.md`` to ``--out``.

    python benchmarks/informed.py                      # the acceptance run (~30 min)
    python benchmarks/informed.py --attacks crop10 rotate90 --unmarked-assets 2
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread per process (timings are on one core), set before numpy and cv2.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import _common as C  # noqa: N812  (puts the checkout on sys.path first)
import numpy as np

from watermark._attacks import (
    ATTACKS,
    BLIND_MATRIX_ATTACKS,
    GEOMETRY_ATTACKS,
    INFORMED_ATTACKS,
    apply_attack,
)
from watermark._color import luma
from watermark._features import Features, local_features
from watermark._index import AssetIndex
from watermark._informed import LEAK_FEATURES
from watermark.media import write_image
from watermark.studio import Studio

VIDEO_DIR = C.ROOT.parent / "shared/corpus/video"
SCALING_ASSETS = (200, 1000, 2000)  # index sizes the lookup is timed at (random features)

DEFAULT_ATTACKS = tuple(
    dict.fromkeys([*INFORMED_ATTACKS, *BLIND_MATRIX_ATTACKS, *GEOMETRY_ATTACKS])
)


@dataclass(frozen=True, slots=True)
class Trial:
    name: str
    image: str  # file to attack
    attack: str
    seed: int
    expect_delivery: str | None  # None: unmarked, any verdict is wrong
    expect_source: str | None  # original path the leak should register to
    target: str
    group: str  # "marked", "original", "never delivered"


def _video_frames(count: int) -> list[np.ndarray]:
    """`count` distinct RGB frames spread evenly over the corpus clips (PyAV).

    Clips repeat frames (held shots, fades to black): identical frames would be one asset,
    so frames are compared by content and only the first of equal ones is kept.
    """
    import av

    clips = sorted(VIDEO_DIR.glob("*.mp4"))
    if not clips:
        raise C.BenchError(f"no clips in {VIDEO_DIR} for distractor assets")
    per_clip = -(-2 * count // len(clips))  # twice what is needed, before dropping repeats
    seen: set[bytes] = set()
    frames: list[np.ndarray] = []
    for clip in clips:
        with av.open(str(clip)) as container:
            stream = container.streams.video[0]
            total = stream.frames or 10_000
            step = max(1, total // per_clip)
            for i, frame in enumerate(container.decode(stream)):
                if i % step:
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                digest = hashlib.sha256(rgb.tobytes()).digest()
                if digest not in seen:
                    seen.add(digest)
                    frames.append(rgb)
    if len(frames) < count:
        raise C.BenchError(
            f"the clips in {VIDEO_DIR} give {len(frames)} distinct frames, not {count}"
        )
    pick = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return [frames[i] for i in pick]


def _setup(args: argparse.Namespace, work: Path) -> dict:
    targets = C.find_images(args.frames)
    n_distract = max(0, args.assets - len(targets))
    extra = _video_frames(n_distract + args.unmarked_assets)
    originals = work / "originals"
    originals.mkdir(parents=True)
    distractors = []
    for i, frame in enumerate(extra[:n_distract]):
        path = originals / f"distractor_{i:04d}.png"
        write_image(path, frame, format="png")
        distractors.append(path)
    never = work / "never_delivered"
    never.mkdir()
    never_paths = []
    for i, frame in enumerate(extra[n_distract:]):
        # a different crop than any distractor: an asset of its own
        h, w = frame.shape[:2]
        path = never / f"never_{i:04d}.png"
        write_image(path, np.ascontiguousarray(frame[h // 8 :, w // 10 :]), format="png")
        never_paths.append(path)

    home = work / "studio"
    timing: dict[str, float] = {}
    with Studio.create(home) as studio:
        deliveries: dict[tuple[str, str], tuple[str, str]] = {}
        start = time.perf_counter()
        for v in range(args.vendors):
            vendor = f"vendor{v + 1}"
            studio.add_vendor(vendor)
            recs = studio.embed_files(
                [*targets, *distractors], vendor, work / vendor, progress=None
            )
            bad = [r for r in recs if r.status != "embedded"]
            if bad:
                raise C.BenchError(f"embed failed: {bad[0].error}")
            for r in recs:
                deliveries[(r.input, vendor)] = (str(r.output), str(r.delivery_id))
            print(f"[setup] {vendor}: {len(recs)} deliveries", file=sys.stderr, flush=True)
        timing["embed_all_seconds"] = time.perf_counter() - start
        added = studio.add_assets(never_paths)
        if any(r.status == "failed" for r in added):
            raise C.BenchError("asset add failed")
        n_assets, n_indexed = studio.registry.count_assets()
        delivered = n_assets - len(never_paths)
        if delivered < args.assets:
            raise C.BenchError(f"only {delivered} distinct delivered assets, not {args.assets}")
        n_deliveries = studio.registry.count_deliveries()
        t0 = time.perf_counter()
        index = studio.load_index()
        timing["index_load_seconds"] = time.perf_counter() - t0
    return {
        "home": home,
        "targets": targets,
        "never": never_paths,
        "deliveries": deliveries,
        "n_assets": n_assets,
        "n_delivered_assets": delivered,
        "n_indexed": n_indexed,
        "n_deliveries": n_deliveries,
        "n_index_features": int(index.owners.size),
        "timing": timing,
    }


def _save_setup(work: Path, setup: dict) -> None:
    doc = dict(setup)
    doc["home"] = str(setup["home"])
    doc["targets"] = [str(p) for p in setup["targets"]]
    doc["never"] = [str(p) for p in setup["never"]]
    doc["deliveries"] = [[k[0], k[1], v[0], v[1]] for k, v in setup["deliveries"].items()]
    (work / "setup.json").write_text(json.dumps(doc))


def _load_setup(work: Path) -> dict:
    try:
        doc = json.loads((work / "setup.json").read_text())
    except (OSError, ValueError) as exc:
        raise C.BenchError(f"--reuse {work}: no setup.json there ({exc})") from None
    doc["home"] = Path(doc["home"])
    doc["targets"] = [Path(p) for p in doc["targets"]]
    doc["never"] = [Path(p) for p in doc["never"]]
    doc["deliveries"] = {(a, b): (c, d) for a, b, c, d in doc["deliveries"]}
    return doc


_STATE: dict = {}


def _studio(home: str) -> tuple[Studio, object]:
    if _STATE.get("home") != home:
        studio = Studio.open(home)
        _STATE.update(home=home, studio=studio, index=studio.load_index())
    return _STATE["studio"], _STATE["index"]


def _run_trial(job: tuple[str, str, Trial]) -> dict:
    home, log, t = job
    studio, index = _studio(home)
    image = C.read_image(Path(t.image))
    leak = apply_attack(t.attack, image, seed=t.seed)
    start = time.perf_counter()
    rec = studio.trace_image(leak, name=t.name, index=index)
    seconds = time.perf_counter() - start
    if t.expect_delivery is None:
        outcome = "wrong" if rec.found else "no verdict"
    elif rec.found:
        outcome = "correct" if rec.delivery_id == t.expect_delivery else "wrong"
    else:
        outcome = "missed"
    source_ok = None
    if t.expect_source is not None:
        source_ok = (
            rec.source is not None and Path(rec.source).resolve() == Path(t.expect_source).resolve()
        )
    result = {
        "name": t.name,
        "group": t.group,
        "target": t.target,
        "attack": t.attack,
        "outcome": outcome,
        "mode": rec.mode,
        "source_found": source_ok,
        "p_value": rec.p_value,
        "score": rec.score,
        "seconds": seconds,
        "leak_shape": list(leak.shape[:2]),
        "geometry": None if rec.geometry is None else rec.geometry.to_json(),
    }
    with open(log, "a") as handle:  # one line per trial as it ends: watch a long run
        handle.write(json.dumps(result) + "\n")
    return result


def _timing(home: Path, targets: list[Path], attacks: list[str], seed: int) -> dict:
    """One core: informed trace of 1920x1080 targets, and the index lookup alone."""
    C.limit_threads()
    hd = [p for p in targets if C.read_image(p).shape[:2] == (1080, 1920)]
    if not hd:
        return {"note": "no 1920x1080 target"}
    trace_s, lookup_s = [], []
    with Studio.open(home) as studio:
        t0 = time.perf_counter()
        index = studio.load_index()
        index.match(np.zeros((1, 128), np.uint8))  # builds the k-d trees, once per command
        load_s = time.perf_counter() - t0
        for p in hd:
            marked = C.read_image(Path(_STATE_DELIVERY[str(p)]))
            for a in attacks:
                leak = apply_attack(a, marked, seed=seed)
                t0 = time.perf_counter()
                y = luma(leak)
                view = local_features(y, max_side=LEAK_FEATURES[0], n_features=LEAK_FEATURES[1])
                index.lookup([(view, False)], y.shape)
                lookup_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                studio.trace_image(leak, index=index)
                trace_s.append(time.perf_counter() - t0)
        # lookup against larger indexes: the real one plus random unit descriptors
        y = luma(apply_attack("crop50", C.read_image(Path(_STATE_DELIVERY[str(hd[0])])), seed=seed))
        view = local_features(y, max_side=LEAK_FEATURES[0], n_features=LEAK_FEATURES[1])
        per_asset = max(1, index.owners.size // max(len(index), 1))
        scaling = {}
        rng = np.random.default_rng(seed)
        for n_assets in SCALING_ASSETS:
            unit = rng.uniform(0.0, 1.0, (per_asset, 128))
            unit /= np.linalg.norm(unit, axis=1, keepdims=True)
            fake = Features(
                rng.uniform(0, 1000, (per_asset, 2)).astype(np.float32),
                np.rint(255 * unit).astype(np.uint8),
            )
            entries = [(k, (1000, 1000), fake) for k in range(n_assets)]
            big = AssetIndex.build(entries)
            t0 = time.perf_counter()
            big.match(view.descriptors[:1])  # builds the k-d trees
            build_s = time.perf_counter() - t0
            runs = []
            for _ in range(5):
                t0 = time.perf_counter()
                big.lookup([(view, False)], y.shape)
                runs.append(time.perf_counter() - t0)
            scaling[str(n_assets)] = {
                "tree_build_s": build_s,
                "match_median_s": statistics.median(runs),
                "index_mb": big.descriptors.nbytes / 2**20,
            }
            del big, entries
    return {
        "frames": [p.name for p in hd],
        "attacks": attacks,
        "index_scaling": scaling,
        "trace_median_s": statistics.median(trace_s),
        "trace_max_s": max(trace_s),
        "lookup_median_s": statistics.median(lookup_s),
        "lookup_max_s": max(lookup_s),
        "index_load_and_trees_s": load_s,
        "n": len(trace_s),
    }


_STATE_DELIVERY: dict[str, str] = {}


def _summarise(results: list[dict], attacks: list[str]) -> tuple[list[dict], dict]:
    rows = []
    for a in attacks:
        marked = [r for r in results if r["attack"] == a and r["group"] == "marked"]
        clean = [r for r in results if r["attack"] == a and r["group"] != "marked"]
        n = len(marked)
        correct = sum(r["outcome"] == "correct" for r in marked)
        src = [r["source_found"] for r in marked if r["source_found"] is not None]
        informed = sum(r["mode"] == "informed" and r["outcome"] == "correct" for r in marked)
        rows.append(
            {
                "attack": a,
                "trials": n,
                "accuracy_pct": 100.0 * correct / n if n else None,
                "wrong": sum(r["outcome"] == "wrong" for r in marked),
                "missed": sum(r["outcome"] == "missed" for r in marked),
                "source_found_pct": 100.0 * sum(src) / len(src) if src else None,
                "answered_informed": informed,
                "unmarked_trials": len(clean),
                "unmarked_verdicts": sum(r["outcome"] == "wrong" for r in clean),
                "median_seconds": statistics.median(r["seconds"] for r in marked)
                if marked
                else None,
            }
        )
    marked = [r for r in results if r["group"] == "marked"]
    clean = [r for r in results if r["group"] != "marked"]
    total = {
        "marked_trials": len(marked),
        "correct": sum(r["outcome"] == "correct" for r in marked),
        "wrong": sum(r["outcome"] == "wrong" for r in marked),
        "missed": sum(r["outcome"] == "missed" for r in marked),
        "unmarked_trials": len(clean),
        "unmarked_verdicts": sum(r["outcome"] == "wrong" for r in clean),
        "unmarked_min_p": min(
            (r["p_value"] for r in clean if r["p_value"] is not None), default=None
        ),
    }
    return rows, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_args(parser)
    parser.set_defaults(out=C.DEFAULT_OUT / "informed")
    parser.add_argument("--attacks", nargs="+", default=list(DEFAULT_ATTACKS))
    parser.add_argument(
        "--assets", type=int, default=200, help="assets in the registry (>= targets)"
    )
    parser.add_argument("--vendors", type=int, default=3)
    parser.add_argument("--all-vendors", action="store_true", help="every vendor's copy per trial")
    parser.add_argument(
        "--unmarked-assets", type=int, default=10, help="originals indexed but never delivered"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--timing-attacks", nargs="+", default=["none", "crop10", "rotate30", "camcorder10"]
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (studio, copies) for --reuse"
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        metavar="DIR",
        help="a work folder kept by --keep: skip marking and indexing (development only: "
        "its studio was built by the code of that run)",
    )
    args = parser.parse_args(argv)
    unknown = [a for a in [*args.attacks, *args.timing_attacks] if a not in ATTACKS]
    if unknown:
        raise C.BenchError(f"unknown attack(s) {unknown}")
    if args.vendors < 2:
        raise C.BenchError("--vendors must be at least 2 (copies to tell apart)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "trials.jsonl").unlink(missing_ok=True)
    if args.reuse is not None:
        work = args.reuse
        setup = _load_setup(work)
    else:
        work = Path(tempfile.mkdtemp(prefix="informed-", dir=args.out))
    try:
        if args.reuse is None:
            setup = _setup(args, work)
            _save_setup(work, setup)
        for (inp, vendor), (out, _) in setup["deliveries"].items():
            if vendor == "vendor1":
                _STATE_DELIVERY[inp] = out
        trials: list[Trial] = []
        vendors = [f"vendor{v + 1}" for v in range(args.vendors)]
        for ti, target in enumerate(setup["targets"]):
            for ai, attack in enumerate(args.attacks):
                chosen = vendors if args.all_vendors else [vendors[(ti + ai) % len(vendors)]]
                seed = C.stable_seed(args.seed, target.name, attack)
                for vendor in chosen:
                    out, delivery = setup["deliveries"][(str(target), vendor)]
                    trials.append(
                        Trial(
                            f"{target.name}|{attack}|{vendor}",
                            out,
                            attack,
                            seed,
                            delivery,
                            str(target.resolve()),
                            target.name,
                            "marked",
                        )
                    )
                trials.append(
                    Trial(
                        f"{target.name}|{attack}|original",
                        str(target),
                        attack,
                        seed,
                        None,
                        str(target.resolve()),
                        target.name,
                        "original",
                    )
                )
        for path in setup["never"]:
            for attack in args.attacks:
                seed = C.stable_seed(args.seed, path.name, attack)
                trials.append(
                    Trial(
                        f"{path.name}|{attack}",
                        str(path),
                        attack,
                        seed,
                        None,
                        str(path.resolve()),
                        path.name,
                        "never delivered",
                    )
                )
        start = time.perf_counter()
        results = C.run_tasks(
            _run_trial,
            [(str(setup["home"]), str(args.out / "trials.jsonl"), t) for t in trials],
            workers=args.workers,
            label="trace",
        )
        elapsed = time.perf_counter() - start
        timing = _timing(setup["home"], setup["targets"], args.timing_attacks, args.seed)
        rows, total = _summarise(results, args.attacks)
        doc = {
            "machine": C.machine_info(),
            "assets": setup["n_assets"],
            "delivered_assets": setup["n_delivered_assets"],
            "indexed_assets": setup["n_indexed"],
            "deliveries": setup["n_deliveries"],
            "index_features": setup["n_index_features"],
            "targets": [p.name for p in setup["targets"]],
            "setup_timing": setup["timing"],
            "trials_wall_seconds": elapsed,
            "timing_one_core": timing,
            "summary": total,
            "per_attack": rows,
            "trials": results,
        }
        C.write_json(args.out, "informed.json", doc)
        _write_markdown(args.out / "informed.md", doc)
        print((args.out / "informed.md").read_text())
        if total["wrong"] or total["unmarked_verdicts"]:
            print("error: a false accusation (see the WRONG column)", file=sys.stderr)
            return 1
    finally:
        if not args.keep and args.reuse is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _write_markdown(path: Path, doc: dict) -> None:
    s, t = doc["summary"], doc["timing_one_core"]
    lines = [
        "# Informed trace benchmark",
        "",
        f"Registry: {doc['assets']} assets ({doc['indexed_assets']} indexed, "
        f"{doc['index_features']} index features): {doc['delivered_assets']} distinct "
        f"originals delivered to every vendor ({doc['deliveries']} deliveries) and "
        f"{doc['assets'] - doc['delivered_assets']} indexed with `asset add`, never delivered.",
        f"Marked trials {s['marked_trials']}: correct {s['correct']}, WRONG {s['wrong']}, "
        f"missed {s['missed']}. Unmarked trials {s['unmarked_trials']} (originals and assets never "
        f"delivered): {s['unmarked_verdicts']} verdicts, smallest p {C.fmt(s['unmarked_min_p'])}.",
        "",
    ]
    if "trace_median_s" in t:
        lines += [
            f"One core, 1920x1080 leaks ({t['n']} traces, attacks {' '.join(t['attacks'])}): "
            f"informed trace median {t['trace_median_s']:.2f} s (max {t['trace_max_s']:.2f}); "
            f"index lookup median {t['lookup_median_s']:.3f} s (max {t['lookup_max_s']:.3f}); "
            f"loading the index and building its trees, once per command: "
            f"{t['index_load_and_trees_s']:.2f} s.",
            "",
        ]
    if "index_scaling" in t:
        parts = [
            f"{n} assets: lookup {v['match_median_s'] * 1000:.0f} ms, trees built in "
            f"{v['tree_build_s']:.1f} s, {v['index_mb']:.0f} MB of descriptors"
            for n, v in t["index_scaling"].items()
        ]
        lines += [
            "One leak (crop 50 %) against larger indexes (random features, as many per asset; "
            "trees built once per trace command; lookup median of 5): " + "; ".join(parts) + ".",
            "",
        ]
    lines.append(
        f"Setup: marking and indexing {doc['assets']} assets x vendors took "
        f"{doc['setup_timing']['embed_all_seconds']:.0f} s; loading the index "
        f"{doc['setup_timing']['index_load_seconds']:.3f} s."
    )
    lines.append("")
    header = [
        "attack",
        "trials",
        "acc %",
        "wrong",
        "missed",
        "source found %",
        "informed",
        "unmarked trials",
        "unmarked verdicts",
        "median s",
    ]
    rows = [
        [
            r["attack"],
            r["trials"],
            C.fmt(r["accuracy_pct"]),
            r["wrong"],
            r["missed"],
            C.fmt(r["source_found_pct"]),
            r["answered_informed"],
            r["unmarked_trials"],
            r["unmarked_verdicts"],
            C.fmt(r["median_seconds"]),
        ]
        for r in doc["per_attack"]
    ]
    lines.append(C.markdown_table(header, rows))
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except C.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
