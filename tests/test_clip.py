"""Clips: finding sequences, marking a video stream by stream, pooling a clip's frames."""

from __future__ import annotations

import re
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
    real_publish = studio_module.publish_file
    calls: list[Path] = []

    def failing_publish(tmp: Path, path: Path) -> None:
        calls.append(Path(path))
        if len(calls) == 3:  # the disk fills up on the third frame
            Path(tmp).unlink()
            raise MediaError(f"{path}: cannot write (No space left on device)")
        real_publish(tmp, path)

    monkeypatch.setattr(studio_module, "publish_file", failing_publish)
    (failed,) = studio.embed_files([tmp_path / "in"], "Acme", tmp_path / "out")
    assert failed.status == "failed" and "No space left" in (failed.error or "")
    assert list((tmp_path / "out").rglob("*.png")) == []  # no frame of it stays
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # nor a temp file
    assert studio.registry.all_payloads().size == 0  # nor a delivery in the registry
    monkeypatch.setattr(studio_module, "publish_file", real_publish)
    (again,) = studio.embed_files([tmp_path / "in"], "Acme", tmp_path / "out")
    assert again.status == "embedded" and again.frames == 5
    assert len(list((tmp_path / "out").rglob("*.png"))) == 5
    studio.close()
