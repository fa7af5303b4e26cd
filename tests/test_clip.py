"""Clips: finding sequences, marking a video stream by stream, pooling a clip's frames."""

from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from watermark import detect_frame
from watermark._temporal import (
    FramePool,
    look_schedule,
    mark_frames,
    normalised_detail,
    trace_frames,
)
from watermark.clip import (
    MediaItem,
    find_media,
    iter_clip_frames,
    mark_video,
    probe_clip,
    sequence_digest,
)
from watermark.errors import MediaError
from watermark.media import read_image, write_image

from ._factories import CORPUS, sha256_of
from .frames import cel_frame, textured_frame

KEY = b"clip-test-key-0123456789abcdefgh"
PAYLOAD = 0x5EED1234
CANDIDATES = np.array([PAYLOAD, 0x0BADF00D, 0x12345678], np.int64)


def _clip(path: Path, frames: int = 12, size: tuple[int, int] = (240, 320)) -> Path:
    from watermark.video import synthetic_clip

    synthetic_clip(path, textured_frame(480, 640, seed=4), size=size, frames=frames, fps=24)
    return path


def _audio_only(path: Path) -> None:
    """An mp4 holding one AAC frame and no video stream."""
    with av.open(str(path), "w") as out:
        sound = out.add_stream("aac", rate=48000, layout="stereo")
        frame = av.AudioFrame.from_ndarray(
            np.zeros((2, 1024), np.float32), format="fltp", layout="stereo"
        )
        frame.sample_rate = 48000
        out.mux(sound.encode(frame))
        out.mux(sound.encode(None))


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


def test_a_frame_number_that_outgrows_its_padding_stays_in_the_sequence(tmp_path: Path) -> None:
    # 9 -> 10 unpadded and 9999 -> 10000 in 4 digits are one sequence each, not two; a
    # 4-digit sequence beside an unpadded one of the same stem stays apart from it
    names = [f"a.{n}.png" for n in range(8, 12)]
    names += [f"b.{n:04d}.png" for n in range(9998, 10002)]
    names += [f"c.{n:04d}.png" for n in (9, 10)] + [f"c.{n}.png" for n in (9, 10)]
    for n, name in enumerate(names):
        write_image(tmp_path / name, cel_frame(32, 48, seed=n), format="png")
    items = find_media([tmp_path])
    frames = sorted([p.name for p in m.frames] for m in items if m.kind == "sequence")
    assert frames == [
        ["a.8.png", "a.9.png", "a.10.png", "a.11.png"],
        ["b.9998.png", "b.9999.png", "b.10000.png", "b.10001.png"],
        ["c.0009.png", "c.0010.png"],
        ["c.9.png", "c.10.png"],
    ]
    assert all(m.kind == "sequence" for m in items)


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
    # a verdict past the first frame is corrected by a later look's share: half the
    # budget over the 12 looks after the first, a quarter of that per pool
    assert pooled.share == pytest.approx(0.5 / 12)
    assert pooled.p_value == pytest.approx(min(1.0, 48.0 * pooled.detection.p_value))


def test_normalised_detail_weighs_busy_and_quiet_alike() -> None:
    rng = np.random.default_rng(1)
    y = np.full((128, 256), 100.0, np.float32)
    y[:, :128] += rng.normal(0, 2, (128, 128)).astype(np.float32)  # quiet texture
    y[:, 128:] += rng.normal(0, 40, (128, 128)).astype(np.float32)  # busy texture
    flat = normalised_detail(np.full((64, 64), 100.0, np.float32), 8.0)
    d = normalised_detail(y, 8.0)
    assert np.abs(flat).max() < 1e-4  # no detail, nothing added
    quiet, busy = float(d[16:-16, 16:96].std()), float(d[16:-16, 160:-16].std())
    assert 0.7 < quiet < 1.1 and 0.7 < busy < 1.1  # a 20x contrast gap, the same weight
    assert np.isfinite(d).all() and np.abs(d).max() <= 3.0


def test_pooled_frame_is_the_mean_where_frames_are_flat() -> None:
    pool = FramePool()
    for level in (50, 70, 90):
        pool.add(np.full((40, 60), level, np.uint8))
    np.testing.assert_allclose(pool.pooled(), pool.mean(), atol=1e-6)
    np.testing.assert_allclose(pool.mean(), 70 / 255, atol=1e-6)


def test_each_look_traces_both_pools_and_counts_them() -> None:
    from watermark.video import h264_roundtrip

    # a re-encoded black fade: the mark is all the frame holds, and the plain mean reads
    # it better than the mean with its normalised detail
    black = np.full((240, 320, 3), 16, np.uint8)
    marked = [r.image for r in mark_frames([black] * 4, KEY, PAYLOAD)]
    leak = h264_roundtrip(np.stack(marked), crf=28)[:1]
    pool = FramePool()
    pool.add(leak[0])
    plain, detail = (detect_frame(f, KEY, candidates=CANDIDATES) for f in pool.frames())
    assert plain.found and plain.p_value < detail.p_value
    d = trace_frames(leak, KEY, candidates=CANDIDATES, max_frames=1)
    assert d.found and d.payload == PAYLOAD and (d.looks, d.pools) == (1, 2)
    assert d.detection.p_value == plain.p_value
    assert d.p_value == pytest.approx(2 * plain.p_value)
    assert d.n_tests == pytest.approx(2 * plain.n_tests)


def test_the_first_frame_holds_half_the_false_alarm_budget() -> None:
    from watermark._temporal import FIRST_LOOK_SHARE, look_shares

    # shares that sum to 1 keep the union bound: P(any false verdict) <= the threshold
    for looks in (1, 2, 5, 13):
        assert sum(look_shares(looks)) == pytest.approx(1.0)
    assert look_shares(13)[0] == FIRST_LOOK_SHARE == 0.5
    (marked,) = mark_frames([cel_frame(200, 320, seed=4)], KEY, PAYLOAD)
    d = trace_frames([marked.image] * 8, KEY, candidates=CANDIDATES)  # read at the first look
    assert d.found and d.frames_used == 1 and d.looks == 13 and d.share == 0.5
    # each of the two pools tested at the first look gets a quarter: p x 4, not x 26
    assert d.p_value == pytest.approx(4.0 * d.detection.p_value)
    assert d.n_tests == pytest.approx(4.0 * d.detection.n_tests)


def test_pooling_reads_a_run_cycle_a_re_encode_wiped_off_its_backdrop(tmp_path: Path) -> None:
    from watermark.video import attack_clip

    src = CORPUS / "video" / "pcrunner_pepper_run_cycle_380x380_24fps.mp4"
    if not src.is_file():
        pytest.skip(f"test corpus not found at {CORPUS}")
    marked, leak = tmp_path / "marked.mp4", tmp_path / "leak.mp4"
    mark_video(src, marked, KEY, PAYLOAD, workers=2)
    attack_clip(marked, leak, "crf35", seed=0)  # flat grey backdrop: crf 35 keeps no mark
    item = MediaItem("video", leak, Path(leak.name))
    frames = [f.pixels for f in iter_clip_frames(item)]
    pool = FramePool()
    for f in frames:
        pool.add(f)
    # what is left is on the running figure, under codec noise that runs with it: the
    # plain mean of the frames blurs both together and reads nothing
    plain = detect_frame(pool.mean(), KEY, candidates=CANDIDATES)
    assert not plain.found
    d = trace_frames(frames, KEY, candidates=CANDIDATES)
    assert d.found and d.payload == PAYLOAD and d.frames_used > 1
    unmarked = tmp_path / "unmarked.mp4"
    attack_clip(src, unmarked, "crf35", seed=0)
    item = MediaItem("video", unmarked, Path(unmarked.name))
    u = trace_frames((f.pixels for f in iter_clip_frames(item)), KEY, candidates=CANDIDATES)
    assert not u.found


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
        _audio_only(src)
    else:
        src.write_bytes(b"")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(MediaError, match=str(src)):
        mark_video(src, out_dir / "x.mp4", KEY, PAYLOAD)
    assert list(out_dir.iterdir()) == []


def _cut_between_key_frames(path: Path, tmp_path: Path) -> Path:
    """24 frames at 24 fps with a key frame every 8, re-muxed from the third packet on (as
    a stream-copy cut between key frames): frames 3 to 8 have no key frame before them."""
    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w") as out:
        video = out.add_stream(
            "libx264", rate=24, options={"preset": "ultrafast", "x264-params": "keyint=8"}
        )
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        for n in range(24):
            rgb = textured_frame(48, 64, seed=n)
            out.mux(video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(video.encode(None))
    with av.open(str(whole)) as inp, av.open(str(path), "w") as out:
        source = inp.streams.video[0]
        copy = out.add_stream_from_template(source)
        packets = [p for p in inp.demux(source) if p.dts is not None]
        assert [p.is_keyframe for p in packets][:9] == [True] + [False] * 7 + [True]
        for packet in packets[2:]:
            packet.stream = copy
            out.mux(packet)
    return path


def test_a_clip_starting_without_a_key_frame_is_refused_with_the_reason(tmp_path: Path) -> None:
    src = _cut_between_key_frames(tmp_path / "cut.mp4", tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(
        MediaError,
        match=rf"^{re.escape(str(src))}: its first 0\.25 s cannot be decoded: the video starts "
        r"without a key frame \(16 of the 22 frames it declares decode\)",
    ):
        mark_video(src, out_dir / "x.mp4", KEY, PAYLOAD)
    assert list(out_dir.iterdir()) == []


# --------------------------------------------------------------------------- command line


def _bad_input(tmp_path: Path, kind: str) -> Path:
    """A video or sequence input `leaktrace embed` must refuse."""
    picture = textured_frame(240, 320, seed=5)
    if kind == "truncated mp4":
        data = _clip(tmp_path / "good.mp4").read_bytes()
        (tmp_path / "good.mp4").unlink()
        path = tmp_path / "cut.mp4"
        path.write_bytes(data[: len(data) * 2 // 3])
    elif kind == "no video stream":
        path = tmp_path / "sound.mp4"
        _audio_only(path)
    elif kind == "unsupported codec":
        path = tmp_path / "part2.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("mpeg4", rate=24)
            stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
            for _ in range(4):
                out.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
            out.mux(stream.encode(None))
    elif kind == "empty sequence folder":
        path = tmp_path / "shot_020"
        path.mkdir()
    else:
        path = tmp_path / "shot_030"
        path.mkdir()
        numbers = (1, 2, 4) if kind == "missing frame" else (1, 2, 3)
        for n in numbers:
            frame = picture[:200] if kind == "odd-sized frame" and n == 2 else picture
            write_image(path / f"shot_030.{n:04d}.png", frame, format="png")
    return path


@pytest.mark.parametrize(
    "kind",
    [
        "truncated mp4",
        "no video stream",
        "unsupported codec",
        "empty sequence folder",
        "missing frame",
        "odd-sized frame",
    ],
)
def test_embed_refuses_bad_clips_with_one_line_and_no_output(tmp_path: Path, kind: str) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    runner = CliRunner()
    home = str(tmp_path / "studio")
    assert runner.invoke(app, ["init", "--home", home]).exit_code == 0
    assert runner.invoke(app, ["vendor", "add", "Acme", "--home", home]).exit_code == 0
    src = _bad_input(tmp_path, kind)
    before = sorted(p.read_bytes() for p in ([src] if src.is_file() else src.iterdir()))
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["embed", str(src), "--vendor", "Acme", "--out", str(out), "--home", home]
    )
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    expected = {
        "truncated mp4": "truncated",
        "no video stream": "no video stream",
        "unsupported codec": "unsupported video codec mpeg4",
        "empty sequence folder": "no image, video or sequence files",
        "missing frame": "frame(s) 3 missing",
        "odd-sized frame": "frame is 320x200",
    }[kind]
    assert expected in errors[0]
    assert not out.exists() or list(out.rglob("*")) == []  # no partial output, no temp file
    after = sorted(p.read_bytes() for p in ([src] if src.is_file() else src.iterdir()))
    assert after == before  # inputs untouched
    traced = runner.invoke(app, ["trace", str(src), "--home", home])
    if kind == "unsupported codec":  # it cannot be re-encoded, but it can be read and traced
        assert traced.exit_code == 0 and "no mark found" in traced.stdout
    else:
        assert traced.exit_code == 1
        assert [line for line in traced.stderr.splitlines() if line.startswith("error: ")]


# --------------------------------------------------------------------------- codecs, depth, tags


def _coded_clip(
    path: Path, codec: str, pix_fmt: str, *, frames: int = 8, options: dict | None = None
) -> Path:
    """A short clip of a still textured picture in one codec and pixel format."""
    picture = textured_frame(240, 320, seed=6)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=24, options=options or {})
        stream.width, stream.height, stream.pix_fmt = 320, 240, pix_fmt
        cc = stream.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = 1, 1, 1, 1  # BT.709, tv
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format=pix_fmt)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "suffix", "options"),
    [
        ("libx265", "yuv420p10le", ".mkv", {"x265-params": "log-level=error"}),
        ("prores_ks", "yuv422p10le", ".mov", {}),
        ("libvpx-vp9", "yuv420p", ".webm", {"deadline": "realtime", "cpu-used": "8"}),
        ("mjpeg", "yuvj420p", ".avi", {}),
    ],
)
def test_each_codec_family_keeps_its_codec_depth_and_colour_tags(
    tmp_path: Path, codec: str, pix_fmt: str, suffix: str, options: dict
) -> None:
    src = _coded_clip(tmp_path / f"src{suffix}", codec, pix_fmt, options=options)
    dst = tmp_path / f"marked{suffix}"
    report = mark_video(src, dst, KEY, PAYLOAD, workers=2)
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        va, vb = a.streams.video[0].codec_context, b.streams.video[0].codec_context
        assert vb.name == va.name and vb.format.name == va.format.name
        for tag in ("color_primaries", "color_trc", "colorspace", "color_range"):
            assert getattr(vb, tag) == getattr(va, tag), tag
        assert b.streams.video[0].frames in (0, 8)
    item = MediaItem("video", dst, Path(dst.name))
    frames = [f.pixels for f in iter_clip_frames(item)]
    assert len(frames) == 8 == report.frames
    assert frames[0].dtype == (np.uint16 if "10" in pix_fmt else np.uint8)
    d = trace_frames(frames, KEY, candidates=CANDIDATES)
    assert d.found and d.payload == PAYLOAD


def test_display_rotation_is_kept(tmp_path: Path) -> None:
    src = _clip(tmp_path / "src.mp4", frames=6)
    rotated = tmp_path / "rotated.mp4"
    with av.open(str(src)) as inp, av.open(str(rotated), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        vout.set_display_rotation(90)
        for packet in inp.demux(vin):
            if packet.dts is not None:
                packet.stream = vout
                out.mux(packet)
    dst = tmp_path / "marked.mp4"
    mark_video(rotated, dst, KEY, PAYLOAD)
    with av.open(str(dst)) as b:
        frame = next(b.decode(video=0))
        assert frame.rotation in (90, -270)


def test_threads_mark_exactly_what_one_thread_marks() -> None:
    frames = [cel_frame(160, 224, seed=n) for n in range(7)]
    one = [r.image for r in mark_frames(frames, KEY, PAYLOAD, workers=1)]
    two = [r.image for r in mark_frames(iter(frames), KEY, PAYLOAD, workers=2)]
    assert all(np.array_equal(a, b) for a, b in zip(one, two, strict=True))
    assert not np.array_equal(one[0], frames[0])


# --------------------------------------------------------------------------- studio path


@pytest.mark.parametrize("depth", [8, 16])
def test_studio_marks_a_sequence_and_traces_it_as_one_clip(tmp_path: Path, depth: int) -> None:
    from watermark.studio import Studio

    shot = tmp_path / "in" / "shot_010"
    shot.mkdir(parents=True)
    base = textured_frame(240, 320, seed=8)
    for n in range(1, 7):
        frame = np.roll(base, 3 * n, axis=1)
        if depth == 16:
            frame = frame.astype(np.uint16) * 257
        write_image(shot / f"shot_010.{n:04d}.png", frame, format="png")
    studio = Studio.create(tmp_path / "studio")
    studio.add_vendor("Acme")
    (record,) = studio.embed_files([tmp_path / "in"], "Acme", tmp_path / "out", workers=2)
    assert record.status == "embedded" and record.kind == "sequence" and record.frames == 6
    out = sorted((tmp_path / "out" / "shot_010").iterdir())
    assert [p.name for p in out] == [f"shot_010.{n:04d}.png" for n in range(1, 7)]
    assert read_image(out[0]).pixels.dtype == (np.uint16 if depth == 16 else np.uint8)
    (traced,) = studio.trace_files([tmp_path / "out"])
    assert traced.found and traced.vendor == "Acme"
    assert traced.delivery_id == record.delivery_id and 1 <= traced.frames <= 6
    assert traced.sha256 == sequence_digest(sha256_of(p) for p in out)  # what was examined
    # one frame of the sequence alone traces like any still
    (single,) = studio.trace_files([out[3]])
    assert single.found and single.delivery_id == record.delivery_id
    assert single.sha256 == sha256_of(out[3])
    # a rerun skips the delivered sequence; nothing is marked twice
    (again,) = studio.embed_files([tmp_path / "in"], "Acme", tmp_path / "out")
    assert again.status == "skipped" and again.delivery_id == record.delivery_id
    studio.close()


def test_studio_traces_a_video_with_the_time_ranges_it_shows_the_mark(tmp_path: Path) -> None:
    from watermark.studio import Studio

    (tmp_path / "in").mkdir()
    src = _clip(tmp_path / "in" / "shot.mp4", frames=48)
    studio = Studio.create(tmp_path / "studio")
    studio.add_vendor("Acme")
    studio.add_vendor("Bluebird")
    (acme,) = studio.embed_files([src], "Acme", tmp_path / "acme", workers=2)
    (blue,) = studio.embed_files([src], "Bluebird", tmp_path / "blue", workers=2)
    assert acme.kind == "video" and acme.frames == 48 and acme.delivery_id != blue.delivery_id
    ticks: list[tuple[int, int, str]] = []
    (traced,) = studio.trace_files(
        [tmp_path / "blue" / "shot.mp4"], frame_progress=lambda *t: ticks.append(t)
    )
    assert ticks and all(name.endswith("shot.mp4") for _, _, name in ticks)
    assert ticks[-1][0] == ticks[-1][1] == 48  # the seen pass reads the whole clip
    assert traced.found and traced.vendor == "Bluebird" and traced.delivery_id == blue.delivery_id
    assert traced.seen and traced.seen[0][0] == pytest.approx(0.0)
    assert traced.seen[-1][1] == pytest.approx(2.0, abs=0.05)  # 48 frames at 24 fps
    assert traced.sha256 == sha256_of(tmp_path / "blue" / "shot.mp4")
    assert traced.size == (320, 240)  # the clip's frames, width x height
    (source,) = studio.trace_files([src])  # the unmarked source: no verdict
    assert not source.found and source.error is None and source.sha256 == sha256_of(src)
    studio.close()


def test_an_unknown_preset_is_refused_before_any_output(tmp_path: Path) -> None:
    src = _clip(tmp_path / "src.mp4", frames=4)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(MediaError, match="--preset superslow is not one of ultrafast"):
        mark_video(src, out / "x.mp4", KEY, PAYLOAD, preset="superslow")
    assert list(out.iterdir()) == []


def test_a_sequence_that_fails_mid_publish_leaves_nothing_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import watermark.studio as studio_module
    from watermark.studio import Studio

    shot = tmp_path / "in" / "shot_020"
    shot.mkdir(parents=True)
    for n in range(1, 6):
        write_image(shot / f"shot_020.{n:04d}.png", textured_frame(200, 240, seed=n), format="png")
    studio = Studio.create(tmp_path / "studio")
    studio.add_vendor("Acme")
    real_publish = studio_module.publish_new_file
    calls: list[Path] = []

    def failing_publish(tmp: Path, path: Path) -> bool:
        calls.append(Path(path))
        if len(calls) == 3:  # the disk fills up on the third frame
            Path(tmp).unlink()
            raise MediaError(f"{path}: cannot write (No space left on device)")
        return real_publish(tmp, path)

    monkeypatch.setattr(studio_module, "publish_new_file", failing_publish)
    (failed,) = studio.embed_files([tmp_path / "in"], "Acme", tmp_path / "out")
    assert failed.status == "failed" and "No space left" in (failed.error or "")
    assert list((tmp_path / "out").rglob("*.png")) == []  # no frame of it stays
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # nor a temp file
    assert studio.registry.all_payloads().size == 0  # nor a delivery in the registry
    monkeypatch.setattr(studio_module, "publish_new_file", real_publish)
    (again,) = studio.embed_files([tmp_path / "in"], "Acme", tmp_path / "out")
    assert again.status == "embedded" and again.frames == 5
    assert len(list((tmp_path / "out").rglob("*.png"))) == 5
    studio.close()


# --------------------------------------------------------------------------- containers, tracks


def _av_clip(
    path: Path,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    *,
    frames: int = 24,
    size: tuple[int, int] = (64, 48),
    options: dict | None = None,
    audio: str | None = None,
    audio_seconds: float | None = None,
    pts0: int = 0,
    time_base: Fraction | None = None,
    timecode: str | None = None,
    alpha: bool = False,
    videos: int = 1,
) -> Path:
    """A tiny clip at 24 fps, textured and moving, written with PyAV.

    `audio` adds silent audio in that codec (as long as the video unless
    `audio_seconds`); `pts0` and `time_base` set the first frame's pts and the stream's
    time base (a negative pts0 makes the mov muxer write an edit list that hides it);
    `timecode` a QuickTime timecode; `alpha` a left half that is transparent; `videos`
    more than one video stream.
    """
    width, height = size
    with av.open(str(path), "w") as out:
        streams = []
        for _ in range(videos):
            video = out.add_stream(codec, rate=24, options=options or {})
            video.width, video.height, video.pix_fmt = width, height, pix_fmt
            if time_base is not None:
                video.codec_context.time_base = video.time_base = time_base
            if timecode is not None:
                video.metadata["timecode"] = timecode
            streams.append(video)
        sound = out.add_stream(audio, rate=48000, layout="stereo") if audio else None
        base = textured_frame(height, width + 4 * frames, seed=3)
        for n in range(frames):
            for k, video in enumerate(streams):
                rgb = np.ascontiguousarray(base[:, 4 * n + k : 4 * n + k + width])
                if alpha:
                    see = np.full((height, width, 1), 255, np.uint8)
                    see[:, : width // 2] = 0
                    frame = av.VideoFrame.from_ndarray(np.concatenate([rgb, see], 2), "rgba")
                else:
                    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame = frame.reformat(format=pix_fmt)
                tb = video.codec_context.time_base or Fraction(1, 24)
                frame.pts, frame.time_base = round(n / 24 / tb) + pts0, tb
                out.mux(video.encode(frame))
        for video in streams:
            out.mux(video.encode(None))
        if sound is not None:
            seconds = frames / 24 if audio_seconds is None else audio_seconds
            samples = sound.codec_context.frame_size or 1024
            pcm = audio.startswith("pcm_s16")
            for j in range(math.ceil(48000 * seconds / samples)):
                chunk = av.AudioFrame.from_ndarray(
                    np.zeros((2, samples), np.int16 if pcm else np.float32),
                    format="s16p" if pcm else "fltp",
                    layout="stereo",
                )
                chunk.sample_rate, chunk.pts = 48000, j * samples
                chunk.time_base = Fraction(1, 48000)
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
    return path


def _cut(src: Path, dst: Path, fraction: float) -> Path:
    """The first `fraction` of a file's bytes, as a transfer that stopped would leave."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _frame_times(path: Path, index: int = 0) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.pts * f.time_base) for f in c.decode(c.streams.video[index])]


_VP9_FAST = {"deadline": "realtime", "cpu-used": "8"}


@pytest.mark.parametrize(
    ("suffix", "codec", "options"),
    [(".mkv", "libx264", {}), (".webm", "libvpx-vp9", _VP9_FAST)],
)
def test_truncated_matroska_and_webm_are_refused(
    tmp_path: Path, suffix: str, codec: str, options: dict
) -> None:
    # Matroska counts no frames: the check is the video's declared duration, and the
    # audio runs a second longer than the video, which a complete file may do
    whole = _av_clip(
        tmp_path / f"whole{suffix}",
        codec,
        frames=24,
        options=options,
        audio="libopus",
        audio_seconds=2.0,
    )
    out = tmp_path / "out"
    out.mkdir()
    assert mark_video(whole, out / f"whole{suffix}", KEY, PAYLOAD).frames == 24
    src = _cut(whole, tmp_path / f"cut{suffix}", 0.6)
    with pytest.raises(
        MediaError, match=rf"^{re.escape(str(src))}: truncated or corrupt: \d+ frames could be"
    ):
        mark_video(src, out / f"cut{suffix}", KEY, PAYLOAD)
    assert sorted(p.name for p in out.iterdir()) == [f"whole{suffix}"]


def test_a_timecode_track_is_kept(tmp_path: Path) -> None:
    src = _av_clip(tmp_path / "src.mov", frames=12, timecode="01:00:00:00")
    with av.open(str(src)) as c:
        assert [s.type for s in c.streams] == ["video", "data"]  # the tmcd track
    dst = tmp_path / "marked.mov"
    mark_video(src, dst, KEY, PAYLOAD)
    with av.open(str(dst)) as c:
        assert [s.type for s in c.streams] == ["video", "data"]
        assert c.streams.video[0].metadata["timecode"] == "01:00:00:00"
        assert c.streams[1].metadata["timecode"] == "01:00:00:00"


def test_a_second_video_stream_is_copied_packet_for_packet(tmp_path: Path) -> None:
    # libx264's default preset has B-frames: Matroska leaves some packets' dts unset
    src = _av_clip(tmp_path / "src.mkv", frames=24, videos=2)
    dst = tmp_path / "marked.mkv"
    mark_video(src, dst, KEY, PAYLOAD)
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        packets_a = [(bytes(p), p.pts) for p in a.demux(a.streams.video[1]) if p.size]
        packets_b = [(bytes(p), p.pts) for p in b.demux(b.streams.video[1]) if p.size]
    assert len(packets_a) == 24 and packets_b == packets_a
    assert _frame_times(dst, 1) == pytest.approx(_frame_times(src, 1))


def _alpha_plane(path: Path, decoder: str | None = None) -> tuple[str, np.ndarray]:
    """The first frame's pixel format and alpha plane (scaled to 0..1)."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        ctx = av.CodecContext.create(decoder, "r") if decoder else stream.codec_context
        frame = next(f for p in c.demux(stream) for f in ctx.decode(p))
        plane = frame.planes[3]
        bits = max(comp.bits for comp in frame.format.components)
        dtype = np.uint8 if bits == 8 else np.dtype("<u2")
        rows = np.frombuffer(memoryview(plane), dtype).reshape(plane.height, -1)
        return frame.format.name, rows[:, : plane.width] / (2**bits - 1)


def test_vp9_alpha_is_kept(tmp_path: Path) -> None:
    src = _av_clip(
        tmp_path / "src.webm",
        "libvpx-vp9",
        "yuva420p",
        frames=12,
        options=_VP9_FAST,
        alpha=True,
    )
    dst = tmp_path / "marked.webm"
    assert mark_video(src, dst, KEY, PAYLOAD).frames == 12
    fmt, alpha = _alpha_plane(dst, "libvpx-vp9")  # FFmpeg's own vp9 decoder drops alpha
    assert fmt == "yuva420p"
    np.testing.assert_allclose(alpha, _alpha_plane(src, "libvpx-vp9")[1], atol=0.05)
    assert alpha[:, :28].max() < 0.05 and alpha[:, 36:].min() > 0.95


def test_prores_4444_keeps_its_alpha_and_chroma(tmp_path: Path) -> None:
    src = _av_clip(
        tmp_path / "src.mov",
        "prores_ks",
        "yuva444p10le",
        frames=12,
        options={"profile": "4"},
        alpha=True,
    )
    dst = tmp_path / "marked.mov"
    mark_video(src, dst, KEY, PAYLOAD)
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        va, vb = a.streams.video[0].codec_context, b.streams.video[0].codec_context
        assert (
            (vb.profile, vb.format.name) == (va.profile, va.format.name) == ("4444", "yuva444p12le")
        )
    np.testing.assert_allclose(_alpha_plane(dst)[1], _alpha_plane(src)[1], atol=0.01)
    # a codec that cannot carry alpha is refused, not written without it
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(MediaError, match=rf"^{re.escape(str(src))}: its alpha channel would be"):
        mark_video(src, out / "x.mov", KEY, PAYLOAD, codec="h264")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(("name", "audio"), [("plain.mp4", None), ("sound.mov", "aac")])
def test_mjpeg_writes_limited_range_video(tmp_path: Path, name: str, audio: str | None) -> None:
    src = _av_clip(tmp_path / name, frames=12, audio=audio)
    dst = tmp_path / f"marked{Path(name).suffix}"
    mark_video(src, dst, KEY, PAYLOAD, codec="mjpeg")
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        ca, cb = a.streams.video[0].codec_context, b.streams.video[0].codec_context
        assert (cb.name, cb.format.name) == ("mjpeg", "yuv420p")  # not yuvj420p: full range
        assert ca.color_range in (0, 1) and cb.color_range == 1  # limited ("tv") both
        luma = [next(c.decode(video=0)).to_ndarray()[:48].astype(float) for c in (a, b)]
    assert abs(luma[0].mean() - luma[1].mean()) < 1.0  # the same samples, not rescaled
    assert len(_frame_times(dst)) == 12


def test_an_output_failure_is_not_blamed_on_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import watermark.clip as clip

    # mjpeg without strict -1 refuses limited-range video when it is opened, which the
    # first copied audio packet does
    strict = clip.CODEC_FAMILIES["mjpeg"]
    monkeypatch.setitem(clip.CODEC_FAMILIES, "mjpeg", clip.CodecFamily("mjpeg", "mjpeg", 2, None))
    src = _av_clip(tmp_path / "sound.mov", frames=12, audio="aac")
    out = tmp_path / "out"
    out.mkdir()
    dst = out / "x.mov"
    with pytest.raises(MediaError, match=rf"^{re.escape(str(dst))}: cannot"):
        mark_video(src, dst, KEY, PAYLOAD, codec="mjpeg")
    assert list(out.iterdir()) == []
    assert strict.options == {"strict": "-1"}


@pytest.mark.parametrize("bframes", ["0", "3"])
def test_h264_in_avi_keeps_its_frame_times(tmp_path: Path, bframes: str) -> None:
    src = _av_clip(tmp_path / "src.avi", frames=24, options={"bf": bframes}, audio="pcm_s16le")
    dst = tmp_path / "marked.avi"
    mark_video(src, dst, KEY, PAYLOAD)
    times, source = _frame_times(dst), _frame_times(src)
    # AVI stores no time stamps; with B-frames FFmpeg's guesses for the source's are not
    # in display order, so those are compared as a set
    assert sorted(times) == pytest.approx(sorted(source))
    if bframes == "0":
        assert times == pytest.approx(source)


def test_an_edit_list_hiding_pre_roll_is_not_a_truncation(tmp_path: Path) -> None:
    # 36 coded frames, the first 12 (0.5 s) before the edit list's start
    src = _av_clip(tmp_path / "src.mp4", frames=36, pts0=-6144, time_base=Fraction(1, 12288))
    with av.open(str(src)) as c:
        assert c.streams.video[0].frames == 36
    assert len(_frame_times(src)) == 24
    dst = tmp_path / "marked.mp4"
    assert mark_video(src, dst, KEY, PAYLOAD).frames == 24
    assert _frame_times(dst) == pytest.approx(_frame_times(src))


def test_a_tail_cut_h264_avi_is_called_truncated(tmp_path: Path) -> None:
    whole = _av_clip(tmp_path / "whole.avi", frames=24, options={"bf": "0"}, audio="pcm_s16le")
    assert _frame_times(whole)[0] == pytest.approx(1 / 24)  # H.264 in AVI starts a frame in
    src = _cut(whole, tmp_path / "cut.avi", 0.9)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(
        MediaError,
        match=rf"^{re.escape(str(src))}: truncated or corrupt: \d+ of the 24 frames it declares",
    ):
        mark_video(src, out / "x.avi", KEY, PAYLOAD)
    assert list(out.iterdir()) == []
