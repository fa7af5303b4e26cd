"""Clips: finding sequences, marking a video stream by stream, pooling a clip's frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from watermark._temporal import FramePool, look_schedule, mark_frames, trace_frames
from watermark.clip import MediaItem, find_media, iter_clip_frames, mark_video, probe_clip
from watermark.errors import MediaError
from watermark.media import write_image

from .frames import cel_frame, textured_frame

av = pytest.importorskip("av")

KEY = b"clip-test-key-0123456789abcdefgh"
PAYLOAD = 0x5EED1234
CANDIDATES = np.array([PAYLOAD, 0x0BADF00D, 0x12345678], np.int64)


def _clip(path: Path, frames: int = 12, size: tuple[int, int] = (240, 320)) -> Path:
    from watermark.video import synthetic_clip

    synthetic_clip(path, textured_frame(480, 640, seed=4), size=size, frames=frames, fps=24)
    return path


def test_look_schedule_counts_every_look() -> None:
    assert look_schedule(1) == (1,)
    assert look_schedule(16) == (1, 2, 4, 8, 16)
    assert look_schedule(100)[-2:] == (64, 100)


def test_find_media_groups_numbered_frames_into_sequences(tmp_path: Path) -> None:
    shot = tmp_path / "shot_010"
    shot.mkdir()
    for n in range(1, 4):
        write_image(shot / f"shot_010.{n:04d}.png", cel_frame(32, 48, seed=n), format="png")
    write_image(shot / "poster.png", cel_frame(32, 48, seed=9), format="png")
    (shot / "clip.mp4").write_bytes(b"")
    items = find_media([tmp_path])
    kinds = sorted((m.kind, m.name.split("/")[-1]) for m in items)
    assert kinds == [
        ("image", "poster.png"),
        ("sequence", "shot_010.####.png"),
        ("video", "clip.mp4"),
    ]
    sequence = next(m for m in items if m.kind == "sequence")
    assert [p.name for p in sequence.frames] == [f"shot_010.{n:04d}.png" for n in range(1, 4)]
    assert all(m.kind != "sequence" for m in find_media([tmp_path], sequences=False))


def test_a_gap_in_a_sequence_is_an_error(tmp_path: Path) -> None:
    for n in (1, 2, 4):
        write_image(tmp_path / f"plate_{n:03d}.png", cel_frame(32, 48, seed=n), format="png")
    (item,) = find_media([tmp_path])
    with pytest.raises(MediaError, match=r"frame.* 3 missing"):
        probe_clip(item)


def test_pooling_reads_a_mark_no_single_frame_shows() -> None:
    rng = np.random.default_rng(0)
    (marked,) = mark_frames([cel_frame(200, 320, seed=2)], KEY, PAYLOAD)
    # heavy independent noise on every frame: one frame alone is too weak, the mean is not
    noisy = [
        np.clip(marked.image + rng.normal(0, 30, marked.image.shape), 0, 255).astype(np.uint8)
        for _ in range(64)
    ]
    single = trace_frames(noisy[:1], KEY, candidates=CANDIDATES, max_frames=1)
    pooled = trace_frames(noisy, KEY, candidates=CANDIDATES)
    assert not single.found
    assert pooled.found and pooled.payload == PAYLOAD and pooled.frames_used > 1
    assert pooled.p_value >= pooled.detection.p_value  # the looks are counted


def test_frame_pool_refuses_another_size() -> None:
    pool = FramePool()
    pool.add(np.zeros((20, 30), np.uint8))
    with pytest.raises(ValueError, match="first frame"):
        pool.add(np.zeros((20, 32), np.uint8))


def test_marked_video_keeps_its_streams_and_frames(tmp_path: Path) -> None:
    src = _clip(tmp_path / "src.mp4")
    dst = tmp_path / "out" / "marked.mp4"
    dst.parent.mkdir()
    report = mark_video(src, dst, KEY, PAYLOAD, workers=2)
    assert report.frames == 12 and report.psnr_y > 40
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        assert [s.type for s in a.streams] == [s.type for s in b.streams]
        assert a.streams.video[0].average_rate == b.streams.video[0].average_rate
        audio_a = [bytes(p) for p in a.demux(a.streams.audio[0]) if p.size]
        audio_b = [bytes(p) for p in b.demux(b.streams.audio[0]) if p.size]
        assert audio_a == audio_b  # copied packet for packet
    item = MediaItem("video", dst, Path(dst.name))
    times = [f.time for f in iter_clip_frames(item)]
    src_times = [f.time for f in iter_clip_frames(MediaItem("video", src, Path(src.name)))]
    assert times == pytest.approx(src_times)
    d = trace_frames((f.pixels for f in iter_clip_frames(item)), KEY, candidates=CANDIDATES)
    assert d.found and d.payload == PAYLOAD
    assert sorted(p.name for p in dst.parent.iterdir()) == ["marked.mp4"]  # no temp file left


@pytest.mark.parametrize("kind", ["truncated", "no video", "empty"])
def test_bad_videos_fail_cleanly(tmp_path: Path, kind: str) -> None:
    src = tmp_path / "bad.mp4"
    if kind == "truncated":
        data = _clip(tmp_path / "good.mp4").read_bytes()
        src.write_bytes(data[: len(data) // 2])
    elif kind == "no video":
        with av.open(str(src), "w") as out:
            sound = out.add_stream("aac", rate=48000, layout="stereo")
            frame = av.AudioFrame.from_ndarray(
                np.zeros((2, 1024), np.float32), format="fltp", layout="stereo"
            )
            frame.sample_rate = 48000
            out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    else:
        src.write_bytes(b"")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(MediaError, match=str(src)):
        mark_video(src, out_dir / "x.mp4", KEY, PAYLOAD)
    assert list(out_dir.iterdir()) == []
