"""Tests of watermark.media: formats, bit depths, atomic writes and every refusal."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from watermark import media
from watermark.errors import DamagedImageError, LeaktraceError, MediaError
from watermark.media import (
    LIMITS,
    MediaLimits,
    encode_image,
    iter_image_files,
    publish_file,
    read_image,
    stage_file,
    write_image,
)

from ._factories import (
    BAD_FILES,
    CORPUS,
    make_bad_file,
    png_chunk,
    several_pictures,
    sha256_of,
    texture,
    tiff_with_thumbnail,
    write_encoded,
)

_STD_LUMA_Q = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ]
)


def jpeg_quality_of(data: bytes) -> int:
    """IJG quality whose luminance table matches the file's first DQT table (by sum)."""
    pos = data.index(b"\xff\xdb")
    table = np.frombuffer(data[pos + 5 : pos + 69], np.uint8).astype(int)
    sums = {}
    for q in range(1, 101):
        scale = 5000 // q if q < 50 else 200 - 2 * q
        sums[q] = int(np.clip((_STD_LUMA_Q * scale + 50) // 100, 1, 255).sum())
    return min(sums, key=lambda q: abs(sums[q] - int(table.sum())))


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- round trips

LOSSLESS_CASES = [
    (fmt, dtype, channels)
    for fmt in ("png", "tiff", "bmp", "webp")
    for dtype in (np.uint8, np.uint16)
    for channels in (None, 3, 4)
    if not (dtype == np.uint16 and fmt in ("bmp", "webp"))
]


@pytest.mark.parametrize(("fmt", "dtype", "channels"), LOSSLESS_CASES)
def test_lossless_round_trip(tmp_path: Path, fmt: str, dtype: type, channels: int | None) -> None:
    shape = (48, 64) if channels is None else (48, 64, channels)
    pixels = texture(shape, dtype)
    if channels == 4:
        pixels[..., 3] = np.maximum(pixels[..., 3], 1)  # WebP drops RGB under alpha 0
    pixels.setflags(write=False)
    path = tmp_path / f"frame.{fmt}"
    write_image(path, pixels, format=fmt)
    loaded = read_image(path)
    assert loaded.format == fmt
    assert loaded.bit_depth == 8 * np.dtype(dtype).itemsize
    assert loaded.pixels.dtype == dtype
    assert loaded.shape == (48, 64)
    assert loaded.sha256 == sha256_of(path)
    assert not loaded.pixels.flags.writeable
    expected = pixels
    if fmt == "webp" and channels is None:  # WebP has no grey mode
        expected = np.repeat(pixels[..., None], 3, axis=2)
    np.testing.assert_array_equal(loaded.pixels, expected)
    assert no_temp_files(tmp_path)


def test_rgb_order_is_preserved(tmp_path: Path) -> None:
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[..., 0] = 255  # pure red in RGB
    path = write_encoded(tmp_path / "red.png", pixels)
    assert tuple(read_image(path).pixels[0, 0]) == (255, 0, 0)
    bgr = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    assert tuple(bgr[0, 0]) == (0, 0, 255)


@pytest.mark.parametrize("quality", [95, 70])
def test_jpeg_quality(tmp_path: Path, quality: int) -> None:
    pixels = texture((64, 64, 3))
    path = tmp_path / "frame.jpg"
    write_image(path, pixels, format="jpeg", jpeg_quality=quality)
    assert jpeg_quality_of(path.read_bytes()) == quality
    loaded = read_image(path)
    assert loaded.format == "jpeg" and loaded.bit_depth == 8
    assert np.abs(loaded.pixels.astype(int) - pixels).mean() < 8


def test_jpeg_grey(tmp_path: Path) -> None:
    path = tmp_path / "grey.jpg"
    write_image(path, texture((32, 40)), format="jpeg")
    assert read_image(path).pixels.shape == (32, 40)


def test_format_comes_from_bytes_not_extension(tmp_path: Path) -> None:
    path = write_encoded(tmp_path / "actually_png.jpg", texture((32, 32, 3)))
    assert read_image(path).format == "png"


def test_write_replaces_existing_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "frame.png"
    write_image(path, np.zeros((16, 16), np.uint8), format="png")
    write_image(path, np.full((16, 16), 9, np.uint8), format="png")
    assert int(read_image(path).pixels[0, 0]) == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame.png"]


def test_failed_write_leaves_existing_file_intact(tmp_path: Path) -> None:
    path = write_encoded(tmp_path / "frame.png", texture((16, 16, 3)))
    before = sha256_of(path)
    with pytest.raises(ValueError, match="16-bit"):
        write_image(path, np.zeros((16, 16), np.uint16), format="jpeg")
    assert sha256_of(path) == before
    assert no_temp_files(tmp_path)


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_files_are_refused(tmp_path: Path, kind: str) -> None:
    path = make_bad_file(kind, tmp_path)
    before = sha256_of(path)
    with pytest.raises(MediaError, match=BAD_FILES[kind][1]) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert "\n" not in message
    assert isinstance(info.value, LeaktraceError)
    assert sha256_of(path) == before


@pytest.mark.parametrize("kind", ["cut_jpeg_scan", "damaged_tiff"])
def test_decoder_damage_reports_are_refused_and_kept_off_stderr(
    tmp_path: Path, kind: str, capfd: pytest.CaptureFixture[str]
) -> None:
    path = make_bad_file(kind, tmp_path)
    with pytest.raises(MediaError, match=r"the decoder reports: \S"):
        read_image(path)
    assert capfd.readouterr().err == ""  # the decoder's own line was caught, not printed


@pytest.mark.parametrize(
    ("kind", "reported"),
    [
        ("truncated_jpeg", "cut short, no end-of-image marker; premature end of data segment"),
        ("cut_jpeg_scan", "premature end of data segment"),
    ],
)
def test_damaged_files_are_read_on_request_with_what_the_decoder_reported(
    tmp_path: Path, kind: str, reported: str, capfd: pytest.CaptureFixture[str]
) -> None:
    path = make_bad_file(kind, tmp_path)
    before = sha256_of(path)
    image = read_image(path, damaged=True)
    assert reported in image.damage and "\n" not in image.damage
    assert image.shape == (64, 80) and image.sha256 == before == sha256_of(path)
    whole = texture((64, 80, 3))  # what make_bad_file encoded: the first rows survive
    assert np.abs(image.pixels[:8].astype(int) - whole[:8]).mean() < 8.0
    assert capfd.readouterr().err == ""


def test_jpeg_damage_is_refused_as_its_own_kind(tmp_path: Path) -> None:
    for kind in ("truncated_jpeg", "cut_jpeg_scan"):
        with pytest.raises(DamagedImageError, match=BAD_FILES[kind][1]):
            read_image(make_bad_file(kind, tmp_path))
    with pytest.raises(MediaError) as info:
        read_image(make_bad_file("damaged_tiff", tmp_path))
    assert not isinstance(info.value, DamagedImageError)  # not readable with damaged=True


def test_whole_files_read_with_damaged_report_no_damage(tmp_path: Path) -> None:
    path = write_encoded(tmp_path / "ok.jpg", texture((32, 48, 3)), ".jpg")
    image = read_image(path, damaged=True)
    assert image.damage == "" and np.array_equal(image.pixels, read_image(path).pixels)


@pytest.mark.parametrize(
    "kind", ["damaged_tiff", "truncated_png", "empty", "text_as_png", "huge_header"]
)
def test_damaged_admits_only_jpeg_damage(tmp_path: Path, kind: str) -> None:
    path = make_bad_file(kind, tmp_path)
    with pytest.raises(MediaError, match=BAD_FILES[kind][1]):
        read_image(path, damaged=True)


def test_harmless_decoder_warnings_are_neither_refused_nor_printed(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    pixels = texture((32, 48, 3))
    good = write_encoded(tmp_path / "ok.jpg", pixels, ".jpg").read_bytes()
    path = tmp_path / "stray.jpg"  # libjpeg: "3 extraneous bytes before marker 0xd9"
    path.write_bytes(good[:-2] + b"\x11\x11\x11" + good[-2:])
    assert np.array_equal(read_image(path).pixels, read_image(tmp_path / "ok.jpg").pixels)
    assert capfd.readouterr().err == ""


def _decoder_writing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> Path:
    """A PNG whose decode (cv2.imdecode, patched) first writes `text` to fd 2, as the C
    decoders do."""
    decode = media.cv2.imdecode

    def chatty(buffer: np.ndarray, flags: int) -> np.ndarray:
        os.write(2, text.encode())
        return decode(buffer, flags)

    monkeypatch.setattr(media.cv2, "imdecode", chatty)
    return write_encoded(tmp_path / "ok.png", texture((32, 48, 3)))


def test_other_output_during_a_decode_still_reaches_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    harmless = "[ WARN:0@0.1] global loadsave.cpp:1 a harmless warning\n"
    other = "progress 50%\n"  # e.g. another thread's progress bar
    path = _decoder_writing(monkeypatch, tmp_path, harmless + other)
    assert read_image(path).shape == (32, 48)
    assert capfd.readouterr().err == other


def test_many_damage_lines_are_cut_to_two_and_a_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    lines = "".join(
        f"[ERROR:0@0.1] global grfmt_tiff.cpp:117 TIFF_Error strip {strip}\n" for strip in range(5)
    )
    path = _decoder_writing(monkeypatch, tmp_path, lines)
    with pytest.raises(MediaError, match=r"reports: strip 0; strip 1; and 3 more\)$"):
        read_image(path)
    assert capfd.readouterr().err == ""


def test_huge_header_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_bad_file("huge_header", tmp_path)

    def forbidden(*args: object) -> None:
        raise AssertionError("decoder called on a huge image")

    monkeypatch.setattr(media.cv2, "imdecode", forbidden)
    with pytest.raises(MediaError, match=r"100000x100000 px"):
        read_image(path)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="not a regular file"):
        read_image(tmp_path)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_encoded(tmp_path / "a.png", texture((16, 16)))

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(media.np, "fromfile", denied)
    with pytest.raises(MediaError, match="cannot read"):
        read_image(path)


def test_file_size_limit(tmp_path: Path) -> None:
    path = write_encoded(tmp_path / "a.png", texture((16, 16)))
    with pytest.raises(MediaError, match="file too large"):
        read_image(path, limits=MediaLimits(max_file_bytes=10))


def test_pixel_limits(tmp_path: Path) -> None:
    path = write_encoded(tmp_path / "a.png", texture((40, 40)))
    with pytest.raises(MediaError, match="too large"):
        read_image(path, limits=MediaLimits(max_side=32))
    with pytest.raises(MediaError, match="too large"):
        read_image(path, limits=MediaLimits(max_pixels=1000))
    assert LIMITS.max_side == 16384 and LIMITS.max_pixels == 2**28 and LIMITS.min_side == 16


_IHDR_16 = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 0, 0, 0, 0))


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (media._PNG_SIGNATURE + b"\x00\x00", "corrupt or truncated PNG header"),
        (media._PNG_SIGNATURE + png_chunk(b"tEXt", b"x" * 13), "first chunk is not IHDR"),
        (media._PNG_SIGNATURE + _IHDR_16[:-1] + b"\x00", "bad CRC in chunk 'IHDR'"),
        (
            media._PNG_SIGNATURE
            + _IHDR_16
            + png_chunk(b"IDAT", b"garbage")
            + png_chunk(b"IEND", b""),
            r"the decoder reports: IDAT: incorrect header check\)$",
        ),
    ],
    ids=["short", "no-ihdr", "bad-crc", "garbage-idat"],
)
def test_corrupt_png(
    tmp_path: Path, data: bytes, fragment: str, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(data)
    with pytest.raises(MediaError, match=fragment):
        read_image(path)
    assert capfd.readouterr().err == ""  # libpng's own "libpng error:" line is not echoed


def _jpeg_bytes(tmp_path: Path) -> bytes:
    return write_encoded(tmp_path / "ok.jpg", texture((32, 32, 3)), ".jpg").read_bytes()


def test_corrupt_jpeg_variants(tmp_path: Path) -> None:
    good = _jpeg_bytes(tmp_path)
    sos = good.index(b"\xff\xda")
    sof = good.index(b"\xff\xc0")
    app0_end = 4 + struct.unpack_from(">H", good, 4)[0]
    cases = {
        "header ends before": good[:4],
        "bad marker": good[:app0_end] + b"\x00" + good[app0_end + 1 :],
        "end marker before": good[:2] + b"\xff\xd9\x00\x00",
        "segment cut short": good[: sof + 6],
        "no frame header": good[:sof] + b"\xff\xfe" + good[sof + 2 :],  # SOF -> COM
        "no end-of-image": good[: sos + 40],
    }
    for fragment, data in cases.items():
        path = tmp_path / "bad.jpg"
        path.write_bytes(data)
        with pytest.raises(MediaError, match=fragment):
            read_image(path)


def test_jpeg_fill_bytes_and_standalone_markers(tmp_path: Path) -> None:
    good = _jpeg_bytes(tmp_path)
    path = tmp_path / "padded.jpg"
    path.write_bytes(good[:2] + b"\xff\xff\x01" + good[2:])  # fill byte, then a TEM marker
    assert read_image(path).shape == (32, 32)


def _tiff(entries: list[tuple[int, int, int]], order: str = "<") -> bytes:
    """A classic TIFF header + one IFD of (tag, type, value) entries, no pixel data."""
    magic = b"II*\x00" if order == "<" else b"MM\x00*"
    body = magic + struct.pack(order + "I", 8) + struct.pack(order + "H", len(entries))
    for tag, typ, value in entries:
        body += struct.pack(order + "HHI", tag, typ, 1) + struct.pack(order + "I", value)
    return body + b"\x00" * 4


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (_tiff([(256, 4, 100_000), (257, 4, 100_000)]), "too large"),
        (_tiff([(256, 3, 100_000 % 65536), (257, 3, 8)], ">"), "too small"),
        (_tiff([(256, 2, 64), (257, 4, 64)]), "bad size tag type"),
        (_tiff([(256, 4, 64)]), "no image size tags"),
        (b"II*\x00" + struct.pack("<IH", 8, 5000), "implausible directory"),
        (b"II+\x00" + struct.pack("<HHQQ", 8, 0, 16, 0), "no image size tags"),
        (_tiff([(256, 4, 64), (257, 4, 64)]), 'missing required "StripOffsets"'),
    ],
    ids=["huge", "tiny-bigendian", "bad-type", "no-tags", "bad-ifd", "bigtiff", "no-data"],
)
def test_corrupt_tiff(tmp_path: Path, data: bytes, fragment: str) -> None:
    path = tmp_path / "bad.tif"
    path.write_bytes(data)
    with pytest.raises(MediaError, match=fragment):
        read_image(path)


def _riff(chunk: bytes, body: bytes, riff_size: int | None = None) -> bytes:
    payload = b"WEBP" + chunk + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", len(payload) if riff_size is None else riff_size) + payload


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (_riff(b"VP8 ", b"\x00" * 3 + b"\x9d\x01\x2a" + struct.pack("<HH", 8, 8)), "too small"),
        (
            _riff(b"VP8 ", b"\x00" * 3 + b"\x00\x00\x00" + struct.pack("<HH", 64, 64)),
            "bad VP8 start code",
        ),
        (_riff(b"VP8L", b"\x2f" + struct.pack("<I", 0) + b"\x00" * 4), "too small"),
        (_riff(b"VP8L", b"\x00" + struct.pack("<I", 0) + b"\x00" * 4), "bad VP8L signature"),
        (_riff(b"VP8X", b"\x00" * 4 + (99_999).to_bytes(3, "little") * 2), "too large"),
        (_riff(b"ABCD", b"\x00" * 10), "unknown first chunk"),
        (
            _riff(b"VP8X", b"\x00" * 4 + (63).to_bytes(3, "little") * 2, riff_size=5000),
            "truncated WebP",
        ),
    ],
    ids=["vp8-tiny", "vp8-code", "vp8l-tiny", "vp8l-sig", "vp8x-huge", "unknown", "truncated"],
)
def test_corrupt_webp(tmp_path: Path, data: bytes, fragment: str) -> None:
    path = tmp_path / "bad.webp"
    path.write_bytes(data)
    with pytest.raises(MediaError, match=fragment):
        read_image(path)


def test_webp_lossy_file_is_read(tmp_path: Path) -> None:
    path = write_encoded(
        tmp_path / "lossy.webp", texture((32, 48, 3)), ".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]
    )
    assert read_image(path).shape == (32, 48)


def test_corrupt_bmp(tmp_path: Path) -> None:
    good = write_encoded(tmp_path / "ok.bmp", texture((32, 32, 3)), ".bmp").read_bytes()
    path = tmp_path / "cut.bmp"
    path.write_bytes(good[: len(good) - 100])
    with pytest.raises(MediaError, match="truncated BMP"):
        read_image(path)
    core = bytearray(
        b"BM" + b"\x00" * 8 + struct.pack("<II", 26, 12) + struct.pack("<HHHH", 20000, 20, 1, 24)
    )
    path.write_bytes(bytes(core))
    with pytest.raises(MediaError, match="too large"):
        read_image(path)


def test_decoder_results_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_encoded(tmp_path / "a.png", texture((16, 16, 3)))
    fakes = {
        "unsupported sample type float32": np.zeros((16, 16), np.float32),
        "unsupported channel count 2": np.zeros((16, 16, 2), np.uint8),
        "header says 16x16": np.zeros((17, 16), np.uint8),
    }
    for fragment, fake in fakes.items():
        monkeypatch.setattr(media.cv2, "imdecode", lambda buf, flags, fake=fake: fake)
        with pytest.raises(MediaError, match=fragment):
            read_image(path)
    monkeypatch.setattr(media.cv2, "imdecode", lambda buf, flags: np.zeros((16, 16, 1), np.uint8))
    assert read_image(path).pixels.shape == (16, 16)


def test_corpus_files_decode() -> None:
    frames = CORPUS / "frames"
    if not frames.is_dir():
        pytest.skip(f"test corpus not found at {CORPUS}")
    rgba = read_image(frames / "pcrunner_lose_dorokhova_565x513_rgba.png")
    assert rgba.pixels.shape == (513, 565, 4) and rgba.format == "png"
    jpg = read_image(frames / "sintel_scales_1143x486.jpg")
    assert jpg.pixels.shape == (486, 1143, 3) and jpg.format == "jpeg"
    disguised = read_image(frames / "cosmos_laundromat_1920x804.png")
    assert disguised.shape == (804, 1920)


# --------------------------------------------------------------------------- encoding


def test_encode_refusals() -> None:
    grey = np.zeros((16, 16), np.uint8)
    with pytest.raises(ValueError, match="format must be one of"):
        encode_image(grey, format="gif")
    with pytest.raises(ValueError, match="shape"):
        encode_image(np.zeros((16, 16, 2), np.uint8), format="png")
    with pytest.raises(TypeError, match="float32"):
        encode_image(np.zeros((16, 16), np.float32), format="png")
    with pytest.raises(ValueError, match="16-bit"):
        encode_image(np.zeros((16, 16), np.uint16), format="webp")
    with pytest.raises(ValueError, match="alpha"):
        encode_image(np.zeros((16, 16, 4), np.uint8), format="jpeg")
    with pytest.raises(ValueError, match="jpeg_quality"):
        encode_image(grey, format="jpeg", jpeg_quality=0)


def test_encoder_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media.cv2, "imencode", lambda ext, img, params: (False, None))
    with pytest.raises(MediaError, match="cannot encode"):
        encode_image(np.zeros((16, 16), np.uint8), format="png")


def test_encode_does_not_modify_input() -> None:
    pixels = texture((16, 16, 3))
    pixels.setflags(write=False)
    copy = pixels.copy()
    encode_image(pixels, format="png")
    np.testing.assert_array_equal(pixels, copy)


# --------------------------------------------------------------------------- atomic writes


def test_stage_into_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="cannot write"):
        stage_file(tmp_path / "nope" / "a.png", b"data")


def test_stage_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(media.os, "fsync", full)
    with pytest.raises(MediaError, match="No space left"):
        stage_file(tmp_path / "a.png", b"data")
    assert list(tmp_path.iterdir()) == []


def test_stage_interrupted_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(media.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        stage_file(tmp_path / "a.png", b"data")
    assert list(tmp_path.iterdir()) == []


def test_stage_then_publish(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    tmp = stage_file(target, b"payload")
    assert (
        tmp.parent == tmp_path and tmp.name.startswith(".a.bin.") and tmp.read_bytes() == b"payload"
    )
    assert not target.exists()
    publish_file(tmp, target)
    assert target.read_bytes() == b"payload" and not tmp.exists()
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_publish_failure_removes_temp(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    (target / "child").mkdir(parents=True)  # a non-empty folder cannot be replaced by a file
    tmp = stage_file(tmp_path / "x", b"data")
    with pytest.raises(MediaError, match="cannot write"):
        publish_file(tmp, target)
    assert not tmp.exists()


def test_discard(tmp_path: Path) -> None:
    tmp = stage_file(tmp_path / "x", b"data")
    media.discard_file(tmp)
    media.discard_file(tmp)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- listing


def test_iter_image_files(tmp_path: Path) -> None:
    root = tmp_path / "shots"
    for rel in [
        "b.PNG",
        "a.jpg",
        "sub/c.TIFF",
        "sub/deep/d.webp",
        "notes.txt",
        ".hidden.png",
        ".cache/e.png",
        "out/f.png",
    ]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    single = tmp_path / "single.bmp"
    single.write_bytes(b"x")
    found = iter_image_files(
        [root, single, root / "a.jpg", tmp_path / "missing.png"], exclude=root / "out"
    )
    rels = [rel.as_posix() for _, rel in found]
    assert rels == ["a.jpg", "b.PNG", "sub/c.TIFF", "sub/deep/d.webp", "single.bmp", "missing.png"]
    assert found[2][0] == root / "sub" / "c.TIFF"
    assert [rel.as_posix() for _, rel in iter_image_files([root])][-1] == "sub/deep/d.webp"
    assert "out/f.png" in [rel.as_posix() for _, rel in iter_image_files([root])]
    assert iter_image_files([tmp_path / "notes.txt"]) == [
        (tmp_path / "notes.txt", Path("notes.txt"))
    ]


# --------------------------------------------------------------------- several pictures


@pytest.mark.parametrize(
    ("name", "pictures", "words"),
    [
        ("anim.png", 3, "an animated PNG of 3 frames"),
        ("anim.webp", 3, "an animated WebP of 3 frames"),
        ("pages.tiff", 2, "a TIFF of 2 pages"),
    ],
)
def test_a_file_of_several_pictures_is_counted_and_refused_when_one_is_needed(
    tmp_path: Path, name: str, pictures: int, words: str
) -> None:
    path = several_pictures(tmp_path / name, pictures)
    before = sha256_of(path)
    loaded = read_image(path)
    assert loaded.pictures == pictures
    assert loaded.shape == (48, 64)
    # the first picture is the one decoded (WebP frames come back lossy: the nearest one)
    error = [
        np.abs(loaded.pixels[..., :3].astype(int) - texture((48, 64, 3), seed=i)).mean()
        for i in range(pictures)
    ]
    assert error[0] < 8.0 and error[0] < min(error[1:]) / 4
    with pytest.raises(MediaError) as caught:
        read_image(path, single=True)
    message = str(caught.value)
    assert message.startswith(f"{path}: {words}; ") and "\n" not in message
    assert sha256_of(path) == before


def test_one_picture_files_count_one(tmp_path: Path) -> None:
    # a still written as one frame, and a TIFF whose second directory is a thumbnail
    still = several_pictures(tmp_path / "still.webp", 1)
    thumbnail = tiff_with_thumbnail(tmp_path / "thumb.tif")
    assert read_image(still, single=True).pictures == 1
    loaded = read_image(thumbnail, single=True)
    assert loaded.pictures == 1 and loaded.shape == (48, 64)
    np.testing.assert_array_equal(loaded.pixels, texture((48, 64), seed=3))
    png = write_encoded(tmp_path / "a.png", texture((40, 50, 3)))
    assert read_image(png, single=True).pictures == 1
    # a directory chain that loops back to its start is walked once
    data = bytearray(thumbnail.read_bytes())
    first = struct.unpack_from("<I", data, 4)[0]
    data[-4:] = struct.pack("<I", first)
    looped = tmp_path / "looped.tif"
    looped.write_bytes(bytes(data))
    assert read_image(looped, single=True).pictures == 1


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_files_are_read_as_rgb_but_not_marked(tmp_path: Path, suffix: str) -> None:
    from PIL import Image  # the test extra

    rgb = texture((48, 64, 3))
    cmyk = tmp_path / f"inks{suffix}"
    Image.fromarray(rgb).convert("CMYK").save(cmyk)
    plain = tmp_path / f"plain{suffix}"
    Image.fromarray(rgb).save(plain)
    loaded = read_image(cmyk)
    assert loaded.cmyk and loaded.shape == (48, 64)  # RGB (a CMYK TIFF: RGBA)
    assert not read_image(plain, markable=True).cmyk
    with pytest.raises(MediaError, match=r"a CMYK (JPEG|TIFF); leaktrace marks RGB and grey"):
        read_image(cmyk, markable=True)
    read_image(cmyk, single=True)  # indexing an original is not marking it


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_grey_transparency_the_decoder_drops_is_not_marked(tmp_path: Path, suffix: str) -> None:
    # OpenCV decodes a grey PNG's tRNS and a grey TIFF's alpha sample to plain grey: the
    # marked copy was written opaque, its transparency gone without a word
    from PIL import Image  # the test extra

    grey = texture((48, 64))
    path = tmp_path / f"grey{suffix}"
    if suffix == ".png":
        Image.fromarray(grey).save(path, transparency=int(grey[0, 0]))
    else:
        Image.fromarray(np.dstack([grey, texture((48, 64), seed=1)]), "LA").save(path)
    assert read_image(path).pixels.shape == (48, 64)  # what the decoder hands over
    with pytest.raises(MediaError, match=r"a grey (PNG|TIFF) with transparency"):
        read_image(path, markable=True)
    read_image(path, single=True)  # a leak or an original to index is read as grey
    Image.fromarray(grey).save(plain := tmp_path / f"plain{suffix}")
    read_image(plain, markable=True)
    Image.fromarray(np.dstack([grey] * 3)).save(rgb := tmp_path / "rgb.png", transparency=(1, 2, 3))
    assert read_image(rgb, markable=True).pixels.shape == (48, 64, 4)  # expanded to alpha


@pytest.mark.parametrize(("subsampling", "factors"), [(0, (1, 1)), (1, (2, 1)), (2, (2, 2))])
def test_a_marked_jpeg_keeps_its_chroma_subsampling(
    tmp_path: Path, subsampling: int, factors: tuple[int, int]
) -> None:
    from PIL import Image, JpegImagePlugin  # the test extra

    source = tmp_path / "source.jpg"
    Image.fromarray(texture((64, 96, 3))).save(source, quality=95, subsampling=subsampling)
    loaded = read_image(source)
    assert loaded.jpeg_sampling == factors
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(encode_image(loaded.pixels, format="jpeg", jpeg_sampling=factors))
    assert JpegImagePlugin.get_sampling(Image.open(copy)) == subsampling
    grey = write_encoded(tmp_path / "grey.jpg", texture((64, 96)), ".jpg")
    assert read_image(grey).jpeg_sampling is None
    with pytest.raises(ValueError, match="jpeg_sampling must be one of"):
        encode_image(loaded.pixels, format="jpeg", jpeg_sampling=(3, 1))
