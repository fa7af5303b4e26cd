"""Video: what marking keeps, what tracing survives, and how fast and lean marking runs.

Three parts, each optional:

* **fidelity** -- every clip (``../shared/corpus/video`` or ``--clips``, plus a 1080p test
  clip generated like the tests' own: a slow pan over a corpus photo with AAC audio) is
  marked with the defaults (:func:`watermark.clip.mark_video`); the marked file must have
  the source's frame count, frame rate and stream layout, byte-identical packets in every
  other stream, and its per-frame PSNR-Y against the decoded source is reported (mean and
  worst frame). ``compare/<clip>.mp4`` shows the centre of each frame before and after
  marking and the difference x16, side by side, for a person to look for flicker or a
  "dirty window" on pans.
  Beyond the corpus, small flat cel clips are generated too (``--cel-size``, 380 px; 0 for
  none): each RGBA sprite of the frame folders swings across a flat light-grey backdrop.
* **attacks** -- every marked clip and its unmarked source go through each clip attack of
  :data:`watermark.video.CLIP_ATTACKS`; each is traced blind by pooling its frames
  (:func:`watermark._temporal.trace_frames`; a single JPEG frame as a still) against three
  registered deliveries. A marked leak must name its delivery; an unmarked one must give
  no verdict.
* **speed** -- 1920x1080 24 fps clips of ``--speed-seconds`` (10 and 60) are generated, then
  marked end to end (decode, mark, encode at the default quality, ``--workers`` processes)
  in a child process; the script prints frames per second and the peak resident memory of
  the whole process tree (the child and any process it starts, sampled every 50 ms).

    python benchmarks/video.py [--clips PATH ...] [--parts fidelity attacks speed]

Writes Markdown and JSON to ``--out`` (default benchmarks/out/video); exits 1 when a check
fails (a wrong or missing verdict, a verdict on an unmarked clip, a changed layout, a mean
PSNR-Y under 42 dB, fewer than 24 fps, or peaks more than 20 % apart).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import _common as common
import numpy as np

from watermark import detect_frame
from watermark._temporal import trace_frames
from watermark.clip import MediaItem, iter_clip_frames, mark_video
from watermark.media import read_image
from watermark.video import CLIP_ATTACKS, attack_clip, synthetic_clip
from watermark.video import _write_h264 as write_h264

KEY = common.TEST_KEY
DEFAULT_CLIPS = common.ROOT.parent / "shared/corpus/video"
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
PSNR_BAR = 42.0
FPS_BAR = 24.0
MEMORY_SPREAD = 0.20
VENDORS = 3  # deliveries registered per clip: the marked one and two others


# ----------------------------------------------------------------------------- clips


def list_clips(paths: list[Path]) -> list[Path]:
    clips: list[Path] = []
    for p in paths:
        if p.is_dir():
            clips.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in VIDEO_SUFFIXES))
        elif p.is_file():
            clips.append(p)
        else:
            raise common.BenchError(f"{p}: no such file or folder")
    return clips


def hd_test_clip(dst: Path, seconds: float, frames_dirs: list[Path]) -> Path:
    """A 1920x1080 24 fps pan over the first corpus photo (the tests' generator)."""
    import cv2

    images = sorted(
        p
        for d in frames_dirs
        if d.is_dir()
        for p in d.iterdir()
        if p.suffix.lower() in common.IMAGE_SUFFIXES
    )
    if images:
        rgb = cv2.cvtColor(cv2.imread(str(images[0]), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    else:  # no corpus: a seeded texture, as the tests use
        rng = np.random.default_rng(0)
        small = (rng.random((68, 120, 3)) * 255).astype(np.uint8)
        rgb = cv2.resize(small, (1920, 1088), interpolation=cv2.INTER_CUBIC)
    synthetic_clip(dst, rgb, size=(1080, 1920), frames=round(seconds * 24), fps=24, crf=16)
    return dst


CEL_PREFIX = "cel_"
_CEL_BACKDROPS = (200, 230)  # light flat greys, one per sprite in turn


def cel_test_clips(work: Path, frames_dirs: list[Path], size: int, frames: int) -> list[Path]:
    """Small flat cel clips beyond the corpus: each RGBA sprite of the frame folders (a
    ``*_rgba.png`` cut-out) swings across a flat light-grey backdrop, animated on twos,
    `size` x `size` px, `frames` frames at 24 fps, H.264 crf 16, no audio."""
    import cv2

    sprites = sorted(
        p for d in frames_dirs if d.is_dir() for p in d.iterdir() if p.stem.endswith("_rgba")
    )
    clips = []
    for n, path in enumerate(sprites):
        bgra = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if bgra is None or bgra.ndim != 3 or bgra.shape[2] != 4:
            print(f"note: {path.name} is not a readable RGBA image; no cel clip", file=sys.stderr)
            continue
        backdrop = _CEL_BACKDROPS[n % len(_CEL_BACKDROPS)]
        dst = work / f"{CEL_PREFIX}{size}_{path.stem}_on_{backdrop}.mp4"
        write_h264(dst, _swinging_sprite(bgra, size, frames, backdrop), Fraction(24), 16)
        clips.append(dst)
    return clips


def _swinging_sprite(
    bgra: np.ndarray, size: int, frames: int, backdrop: int
) -> Iterator[np.ndarray]:
    """RGB uint8 frames of a BGRA sprite (scaled to 0.8 of `size`) swinging across a
    `backdrop` grey, a pose every second frame."""
    import cv2

    f = 0.8 * size / max(bgra.shape[:2])
    bgra = cv2.resize(bgra, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    sh, sw = bgra.shape[:2]
    alpha = bgra[..., 3:4] / 255.0
    rgb = bgra[..., 2::-1].astype(np.float64)
    for k in range(frames):
        pose = k - k % 2  # on twos
        x = int((size - sw) * (0.5 + 0.3 * np.sin(2 * np.pi * pose / 12)))
        y = (size - sh) // 2 + int(4 * np.sin(2 * np.pi * pose / 6))
        frame = np.full((size, size, 3), float(backdrop))
        frame[y : y + sh, x : x + sw] *= 1.0 - alpha
        frame[y : y + sh, x : x + sw] += rgb * alpha
        yield np.clip(frame, 0, 255).astype(np.uint8)


def payloads_for(name: str) -> np.ndarray:
    rng = np.random.default_rng(common.stable_seed("video", name))
    return common.distinct_payloads(rng, VENDORS)


# ----------------------------------------------------------------------------- fidelity


def _streams(path: Path) -> list[tuple[str, str]]:
    import av

    with av.open(str(path)) as c:
        return [(s.type, s.codec_context.name if s.codec_context else "?") for s in c.streams]


def _packet_digests(path: Path) -> dict[int, tuple[int, str]]:
    """Per non-video stream: packet count and a digest of every packet's bytes and pts."""
    import av

    out: dict[int, tuple[int, str]] = {}
    hashes: dict[int, hashlib._Hash] = {}
    with av.open(str(path)) as c:
        others = [s for s in c.streams if s.type != "video"]
        if not others:  # demux([]) would read every stream
            return out
        for packet in c.demux(others):
            if packet.dts is None:
                continue
            i = packet.stream.index
            h = hashes.setdefault(i, hashlib.sha256())
            h.update(bytes(packet))
            h.update(str(packet.pts).encode())
            out[i] = (out.get(i, (0, ""))[0] + 1, "")
    return {i: (n, hashes[i].hexdigest()) for i, (n, _) in out.items()}


def _rate(path: Path) -> str:
    import av

    with av.open(str(path)) as c:
        return str(c.streams.video[0].average_rate)


def psnr_y(source: Path, marked: Path) -> tuple[int, int, float, float]:
    """Frames of each, and mean / worst per-frame PSNR-Y of `marked` against `source`."""
    a = iter_clip_frames(MediaItem("video", source, Path(source.name)))
    b = iter_clip_frames(MediaItem("video", marked, Path(marked.name)))
    values: list[float] = []
    na = nb = 0
    for fa in a:
        na += 1
        fb = next(b, None)
        if fb is None:
            continue
        nb += 1
        peak = 255.0 if fa.pixels.dtype == np.uint8 else 65535.0
        err = np.mean((fa.pixels.astype(np.float64) - fb.pixels.astype(np.float64)) ** 2)
        values.append(100.0 if err == 0 else 10.0 * np.log10(peak * peak / err))
    nb += sum(1 for _ in b)
    return na, nb, float(np.mean(values)), float(np.min(values))


def compare_clip(source: Path, marked: Path, dst: Path, *, side: int = 256) -> None:
    """A clip for a person to look at: the centre `side` px of the source's luma, of the
    marked luma, and their difference x16 around mid-grey, side by side at 1:1, every
    frame (lossless H.264 4:4:4). On a pan, a mark that stays still while the picture
    moves ("dirty window") or that flickers shows in the right-hand panel first."""
    import av

    a = iter_clip_frames(MediaItem("video", source, Path(source.name)))
    b = iter_clip_frames(MediaItem("video", marked, Path(marked.name)))
    with av.open(str(dst), "w") as out:
        stream = out.add_stream("libx264", rate=24, options={"crf": "0", "preset": "veryfast"})
        stream.pix_fmt = "yuv444p"
        for fa, fb in zip(a, b, strict=False):
            ya, yb = fa.pixels, fb.pixels
            if ya.dtype != np.uint8:  # deep clips: the top 8 bits
                ya, yb = (ya >> 8).astype(np.uint8), (yb >> 8).astype(np.uint8)
            h, w = ya.shape
            s = min(side, h, w) // 2 * 2
            top, left = (h - s) // 2, (w - s) // 2
            ca, cb = ya[top : top + s, left : left + s], yb[top : top + s, left : left + s]
            diff = np.clip(128 + 16 * (cb.astype(np.int16) - ca), 0, 255).astype(np.uint8)
            panel = np.hstack([ca, cb, diff])
            if not stream.codec_context.is_open:
                stream.width, stream.height = panel.shape[1], panel.shape[0]
            rgb = np.repeat(panel[..., None], 3, axis=2)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode(None))


def _mbit_s(path: Path, frames: int) -> float:
    from fractions import Fraction

    return path.stat().st_size * 8 / 1e6 / (frames / float(Fraction(_rate(path))))


def fidelity(clip: Path, marked: Path, mark_seconds: float, frames: int) -> dict:
    n_src, n_out, mean, worst = psnr_y(clip, marked)
    src_packets, out_packets = _packet_digests(clip), _packet_digests(marked)
    row = {
        "clip": clip.name,
        "frames": f"{n_src} / {n_out}",
        "fps": f"{_rate(clip)} / {_rate(marked)}",
        "same_frames": n_src == n_out,
        "same_rate": _rate(clip) == _rate(marked),
        "same_layout": _streams(clip) == _streams(marked),
        "other_streams": len(src_packets),
        "packets_identical": src_packets == out_packets,
        "psnr_y_mean": mean,
        "psnr_y_worst": worst,
        "mark_fps": frames / mark_seconds,
        "mbit_s": f"{_mbit_s(clip, n_src):.1f} / {_mbit_s(marked, n_out):.1f}",
    }
    row["ok"] = bool(
        row["same_frames"]
        and row["same_rate"]
        and row["same_layout"]
        and row["packets_identical"]
        and mean >= PSNR_BAR
    )
    return row


# ----------------------------------------------------------------------------- attacks


def trace_leak(path: Path, candidates: np.ndarray) -> tuple[bool, int | None, float, int]:
    """found, payload, p-value, frames used."""
    if path.suffix == ".jpg":
        d = detect_frame(read_image(path).pixels, KEY, candidates=candidates)
        return d.found, d.payload, d.p_value, 1
    frames = (f.pixels for f in iter_clip_frames(MediaItem("video", path, Path(path.name))))
    c = trace_frames(frames, KEY, candidates=candidates)
    return c.found, c.payload, c.p_value, c.frames_used


def attack_rows(
    clip: Path, marked: Path, payloads: np.ndarray, attacks: list[str], work: Path, seed: int
) -> list[dict]:
    rows = []
    for name in attacks:
        row: dict = {"clip": clip.name, "attack": name}
        for which, src in (("marked", marked), ("unmarked", clip)):
            if name == "none":  # the file itself: marked must trace, the source must not
                leak = src
            else:
                suffix = ".jpg" if name == "frame_jpeg70" else ".mp4"
                leak = work / f"{which}_{clip.stem}_{name}{suffix}"
                attack_clip(src, leak, name, seed=common.stable_seed(seed, clip.name, name))
            start = time.perf_counter()
            found, payload, p, used = trace_leak(leak, payloads)
            row[which] = {
                "found": found,
                "payload": payload,
                "p_value": p,
                "frames_used": used,
                "seconds": time.perf_counter() - start,
            }
            if leak != src:
                leak.unlink()
        m, u = row["marked"], row["unmarked"]
        row["correct"] = bool(m["found"] and m["payload"] == int(payloads[0]))
        row["wrong"] = bool(m["found"] and m["payload"] != int(payloads[0]))
        row["unmarked_verdict"] = bool(u["found"])
        rows.append(row)
        verdict = "correct" if row["correct"] else "WRONG" if row["wrong"] else "missed"
        print(
            f"  {clip.name} {name}: marked {verdict}"
            f" (p {common.fmt(m['p_value'], '.1e')}, {m['frames_used']} frames), unmarked "
            f"{'VERDICT' if u['found'] else 'none'} (p {common.fmt(u['p_value'], '.1e')})",
            flush=True,
        )
    return rows


# ----------------------------------------------------------------------------- speed

_CHILD = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from watermark.clip import mark_video
start = time.perf_counter()
report = mark_video(
    Path({src!r}), Path({dst!r}), bytes.fromhex({key!r}), {payload}, workers={workers}
)
print(json.dumps({{"frames": report.frames, "seconds": time.perf_counter() - start}}))
"""


def _tree_rss(root: int) -> int:
    """Resident bytes of `root` and its descendants (read from /proc, children lists only:
    cheap enough to sample often without slowing the run it measures)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * page
            for task in os.scandir(f"/proc/{pid}/task"):
                with open(f"{task.path}/children", "rb") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return total


def mark_speed(src: Path, dst: Path, workers: int) -> dict:
    code = _CHILD.format(
        root=str(common.ROOT),
        src=str(src),
        dst=str(dst),
        key=KEY.hex(),
        payload=common.TEST_PAYLOAD,
        workers=workers,
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise common.BenchError(f"marking {src.name} failed (exit {proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    return {
        "mbit_s": dst.stat().st_size * 8 / 1e6 / (result["frames"] / 24.0),
        "frames": result["frames"],
        "seconds": result["seconds"],
        "fps": result["frames"] / result["seconds"],
        "peak_mib": peak[0] / 2**20,
    }


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--clips",
        nargs="+",
        type=Path,
        default=[DEFAULT_CLIPS],
        help="video files or folders (default ../shared/corpus/video)",
    )
    parser.add_argument(
        "--frames",
        nargs="+",
        type=Path,
        default=list(common.DEFAULT_FRAME_DIRS),
        help="where the 1080p test clip takes its picture from",
    )
    parser.add_argument(
        "--hd-seconds",
        type=float,
        default=3.0,
        help="seconds of the generated 1080p clip marked and attacked (3)",
    )
    parser.add_argument(
        "--cel-size",
        type=int,
        default=380,
        help="side of the small flat cel clips made from the corpus sprites (0: none)",
    )
    parser.add_argument("--cel-frames", type=int, default=80)
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["fidelity", "attacks", "speed"],
        choices=["fidelity", "attacks", "speed"],
    )
    parser.add_argument(
        "--attacks",
        nargs="+",
        default=["none", *CLIP_ATTACKS],
        choices=["none", *CLIP_ATTACKS],
        help="clip attacks (default: none, i.e. the file itself, and every clip attack)",
    )
    parser.add_argument("--speed-seconds", nargs="+", type=float, default=[10.0, 60.0])
    parser.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT / "video")
    args = parser.parse_args()
    if args.cel_size and (args.cel_size < 64 or args.cel_size % 2):
        parser.error(f"--cel-size must be 0 or an even number >= 64, got {args.cel_size}")
    if args.cel_frames < 1:
        parser.error(f"--cel-frames must be >= 1, got {args.cel_frames}")

    ok = True
    report: dict = {
        "machine": common._machine(),
        "versions": common._versions(),
        "args": {
            k: [str(x) for x in v] if isinstance(v, list) else str(v) for k, v in vars(args).items()
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    md: list[str] = ["# Video benchmark", ""]
    with tempfile.TemporaryDirectory(prefix="leaktrace-video-") as tmp:
        work = Path(tmp)
        clips: list[Path] = []
        if {"fidelity", "attacks"} & set(args.parts):
            clips = list_clips(args.clips)
            clips.append(hd_test_clip(work / "test_1080p.mp4", args.hd_seconds, args.frames))
            if args.cel_size:
                clips += cel_test_clips(work, args.frames, args.cel_size, args.cel_frames)
        fid_rows, att_rows = [], []
        for clip in clips:
            payloads = payloads_for(clip.name)
            marked = work / f"marked_{clip.stem}{clip.suffix}"
            start = time.perf_counter()
            rep = mark_video(clip, marked, KEY, int(payloads[0]), workers=args.workers)
            seconds = time.perf_counter() - start
            print(f"{clip.name}: marked {rep.frames} frames in {seconds:.1f} s", flush=True)
            if "fidelity" in args.parts:
                fid_rows.append(fidelity(clip, marked, seconds, rep.frames))
                (args.out / "compare").mkdir(parents=True, exist_ok=True)
                compare_clip(clip, marked, args.out / "compare" / f"{clip.stem}.mp4")
                print(f"  {fid_rows[-1]}", flush=True)
            if "attacks" in args.parts:
                att_rows.extend(attack_rows(clip, marked, payloads, args.attacks, work, args.seed))
            marked.unlink()
        if fid_rows:
            ok &= all(r["ok"] for r in fid_rows)
            report["fidelity"] = fid_rows
            md += [
                "## Fidelity (defaults)",
                "",
                common.markdown_table(
                    [
                        "clip",
                        "frames src / marked",
                        "fps src / marked",
                        "layout kept",
                        "other streams",
                        "packets identical",
                        "PSNR-Y mean",
                        "PSNR-Y worst",
                        "mark fps",
                        "Mbit/s src / marked",
                    ],
                    [
                        [
                            r["clip"],
                            r["frames"],
                            r["fps"],
                            r["same_layout"],
                            r["other_streams"],
                            r["packets_identical"],
                            f"{r['psnr_y_mean']:.2f}",
                            f"{r['psnr_y_worst']:.2f}",
                            f"{r['mark_fps']:.1f}",
                            r["mbit_s"],
                        ]
                        for r in fid_rows
                    ],
                ),
                "",
            ]
        if att_rows:
            ok &= all(r["correct"] and not r["unmarked_verdict"] for r in att_rows)
            report["attacks"] = att_rows
            names = sorted({r["clip"] for r in att_rows}, key=[r["clip"] for r in att_rows].index)
            cell = {(r["clip"], r["attack"]): r for r in att_rows}

            def show(r: dict) -> str:
                m = r["marked"]
                verdict = "ok" if r["correct"] else "WRONG" if r["wrong"] else "miss"
                u = " / UNMARKED VERDICT" if r["unmarked_verdict"] else ""
                return f"{verdict} ({common.fmt(m['p_value'], '.1e')}, {m['frames_used']} fr){u}"

            md += [
                "## Attacks (marked: verdict, p-value, frames pooled)",
                "",
                common.markdown_table(
                    ["attack", *names],
                    [[a, *[show(cell[(n, a)]) for n in names]] for a in args.attacks],
                ),
                "",
                f"Correct {sum(r['correct'] for r in att_rows)} of {len(att_rows)}, wrong "
                f"{sum(r['wrong'] for r in att_rows)}; verdicts on unmarked clips "
                f"{sum(r['unmarked_verdict'] for r in att_rows)} of {len(att_rows)}.",
                "",
            ]
            cel = [r for r in att_rows if r["clip"].startswith(CEL_PREFIX)]
            if cel:
                rest = [r for r in att_rows if not r["clip"].startswith(CEL_PREFIX)]
                md += [
                    f"Corpus and 1080p clips: {sum(r['correct'] for r in rest)} of {len(rest)}"
                    f" correct; small cel clips: {sum(r['correct'] for r in cel)} of "
                    f"{len(cel)}.",
                    "",
                ]
        if "speed" in args.parts:
            speed_rows = []
            for seconds in args.speed_seconds:
                src = hd_test_clip(work / f"speed_{seconds:g}s.mp4", seconds, args.frames)
                dst = work / f"speed_{seconds:g}s_marked.mp4"
                row = {
                    "clip": f"1920x1080 24 fps, {seconds:g} s",
                    **mark_speed(src, dst, args.workers),
                }
                speed_rows.append(row)
                print(f"  speed {row}", flush=True)
                src.unlink()
                dst.unlink()
            peaks = [r["peak_mib"] for r in speed_rows]
            spread = max(peaks) / min(peaks) - 1.0
            ok &= all(r["fps"] >= FPS_BAR for r in speed_rows) and spread <= MEMORY_SPREAD
            report["speed"] = {"rows": speed_rows, "peak_spread": spread}
            md += [
                f"## Speed (mark end to end, {args.workers} workers)",
                "",
                common.markdown_table(
                    ["clip", "frames", "seconds", "fps", "peak MiB (tree)", "output Mbit/s"],
                    [
                        [
                            r["clip"],
                            r["frames"],
                            f"{r['seconds']:.1f}",
                            f"{r['fps']:.1f}",
                            f"{r['peak_mib']:.0f}",
                            f"{r['mbit_s']:.1f}",
                        ]
                        for r in speed_rows
                    ],
                ),
                "",
                f"Peaks {spread * 100:.1f} % apart (bar {MEMORY_SPREAD * 100:.0f} %).",
                "",
            ]
    md.append(f"All checks: {'pass' if ok else 'FAIL'}")
    report["ok"] = ok
    (args.out / "video.md").write_text("\n".join(md) + "\n")
    common.write_json(args.out, "video.json", common.jsonable(report))
    print("\n".join(md))
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except common.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
