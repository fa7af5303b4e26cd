"""Tests of watermark.metadata: ICC, EXIF, XMP and text carried into marked files.

Files with metadata are made and checked with Pillow, an independent reader; pixels are
checked with OpenCV (the decoder leaktrace reads with).
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps, PngImagePlugin

from watermark.media import encode_image, read_image
from watermark.metadata import NO_METADATA, ImageMetadata, read_metadata, write_metadata
from watermark.studio import Studio

from ._factories import png_chunk, texture

XMP = (
    b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
    b'02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/'
    b'elements/1.1/"><dc:title>shot 010</dc:title></rdf:Description></rdf:RDF>'
    b'</x:xmpmeta><?xpacket end="w"?>'
)


# A real ICC profile that is not sRGB (LAB identity). Made once: its header holds the
# creation time to the second, so two calls can differ.
PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()


def icc_profile() -> bytes:
    """The test ICC profile, as bytes."""
    return PROFILE


def exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    exif[0x010E] = "shot 010, layout"  # ImageDescription
    return exif.tobytes()


def pil_bytes(pixels: np.ndarray, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **params)
    return buf.getvalue()


def opened(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def decoded(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def carry(source: bytes, fmt: str, pixels: np.ndarray) -> tuple[bytes, bytes]:
    """(pixels encoded with the source's metadata, the same without)."""
    meta = read_metadata(source, fmt)
    assert meta, f"nothing read from the {fmt} source"
    return (
        encode_image(pixels, format=fmt, metadata=meta),
        encode_image(pixels, format=fmt),
    )


# --------------------------------------------------------------------------- formats


def test_png_colour_text_exif_and_xmp_are_carried() -> None:
    pixels = texture((40, 56, 3), seed=1)
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "shot 010")
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    source = pil_bytes(
        pixels, "PNG", icc_profile=icc_profile(), exif=exif_with_orientation(1), pnginfo=info
    )
    marked = np.ascontiguousarray(texture((40, 56, 3), seed=2))
    with_meta, without = carry(source, "png", marked)
    im = opened(with_meta)
    assert im.info["icc_profile"] == icc_profile()
    assert im.info["Title"] == "shot 010"
    assert im.getexif()[0x010E] == "shot 010, layout"
    assert "dc:title" in im.info["XML:com.adobe.xmp"]
    assert np.array_equal(decoded(with_meta), decoded(without))  # pixels untouched


def test_png_gamma_chromaticity_and_16_bit() -> None:
    # a PNG with gAMA + cHRM (as Synfig writes them) into a 16-bit encode
    gama = png_chunk(b"gAMA", struct.pack(">I", 45455))
    chrm = png_chunk(
        b"cHRM", struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)
    )
    plain = encode_image(texture((20, 24, 3), seed=3), format="png")
    source = plain[:33] + gama + chrm + plain[33:]
    marked = texture((20, 24, 3), np.uint16, seed=4)
    with_meta, without = carry(source, "png", marked)
    im = opened(with_meta)
    assert im.info["gamma"] == pytest.approx(0.45455)
    assert im.info["chromaticity"][0] == pytest.approx(0.3127)
    assert np.array_equal(decoded(with_meta), decoded(without))
    assert decoded(with_meta).dtype == np.uint16


def test_damaged_png_chunk_is_not_carried() -> None:
    plain = encode_image(texture((20, 24, 3), seed=3), format="png")
    bad = bytearray(png_chunk(b"tEXt", b"Title\x00shot"))
    bad[-1] ^= 0xFF  # wrong CRC
    good = png_chunk(b"tEXt", b"Author\x00studio")
    meta = read_metadata(plain[:33] + bytes(bad) + good + plain[33:], "png")
    assert meta.names == ("tEXt",)
    assert b"Author" in meta.items[0][1]


def test_jpeg_exif_orientation_icc_xmp_and_comment_are_carried(tmp_path: Path) -> None:
    # 40 x 64 stored, orientation 6: shown turned a quarter, 64 x 40
    pixels = texture((40, 64, 3), seed=5)
    source = pil_bytes(
        pixels,
        "JPEG",
        quality=95,
        exif=exif_with_orientation(6),
        icc_profile=icc_profile(),
        comment=b"layout v3",
        xmp=XMP,
    )
    (tmp_path / "a.jpg").write_bytes(source)
    stored = read_image(tmp_path / "a.jpg").pixels
    assert stored.shape == (40, 64, 3)  # marked on the stored grid, not the shown one
    with_meta, _ = carry(source, "jpeg", np.ascontiguousarray(stored))
    im = opened(with_meta)
    assert im.getexif()[0x0112] == 6
    assert im.info["icc_profile"] == icc_profile()
    assert im.info["comment"] == b"layout v3"
    assert b"dc:title" in im.info["xmp"]
    assert ImageOps.exif_transpose(im).size == ImageOps.exif_transpose(opened(source)).size
    assert with_meta[2:4] == b"\xff\xe0"  # JFIF still first


def test_jpeg_mpf_segment_is_not_carried() -> None:
    # an APP2 "MPF" segment points at preview images after the main one's EOI
    plain = encode_image(texture((24, 24, 3), seed=6), format="jpeg")
    mpf = b"MPF\x00" + b"MM\x00\x2a" + b"\x00" * 8
    icc = b"ICC_PROFILE\x00\x01\x01" + b"profile"
    segments = b"".join(b"\xff\xe2" + struct.pack(">H", len(p) + 2) + p for p in (mpf, icc))
    meta = read_metadata(plain[:20] + segments + plain[20:], "jpeg")
    assert meta.names == ("APP2",)
    assert b"ICC_PROFILE" in meta.items[0][1]


def test_jpeg_large_icc_profile_in_several_segments() -> None:
    big = icc_profile() + b"\x00" * 150_000  # Pillow splits it into 3 APP2 segments
    source = pil_bytes(texture((24, 24, 3), seed=6), "JPEG", icc_profile=big)
    meta = read_metadata(source, "jpeg")
    assert meta.names.count("APP2") == 3
    with_meta = encode_image(texture((24, 24, 3), seed=7), format="jpeg", metadata=meta)
    assert opened(with_meta).info["icc_profile"] == big


@pytest.mark.parametrize("channels", [3, 4])
def test_webp_icc_exif_and_xmp_make_an_extended_file(channels: int) -> None:
    pixels = texture((30, 34, channels), seed=8)
    source = pil_bytes(
        pixels,
        "WEBP",
        lossless=True,
        icc_profile=icc_profile(),
        exif=exif_with_orientation(3),
        xmp=XMP,
    )
    marked = texture((30, 34, channels), seed=9)
    with_meta, without = carry(source, "webp", marked)
    assert with_meta[12:16] == b"VP8X"
    im = opened(with_meta)
    assert im.info["icc_profile"] == icc_profile()
    assert im.getexif()[0x0112] == 3
    assert b"dc:title" in im.info["xmp"]
    assert im.mode == ("RGBA" if channels == 4 else "RGB")
    assert np.array_equal(decoded(with_meta), decoded(without))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_icc_and_xmp_are_carried(dtype: type) -> None:
    source = pil_bytes(
        texture((20, 28, 3), seed=10), "TIFF", icc_profile=icc_profile(), tiffinfo={700: XMP}
    )
    meta = read_metadata(source, "tiff")
    assert set(meta.names) == {"tag:700", "tag:34675"}
    marked = texture((20, 28, 3), dtype, seed=11)
    with_meta = encode_image(marked, format="tiff", metadata=meta)
    tags = Image.open(io.BytesIO(with_meta)).tag_v2
    assert bytes(tags[34675]) == icc_profile()
    assert b"dc:title" in bytes(tags[700])
    assert np.array_equal(decoded(with_meta), decoded(encode_image(marked, format="tiff")))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_turned_tiff_is_read_turned_and_written_upright(tmp_path: Path, orientation: int) -> None:
    # OpenCV applies a TIFF's orientation: the pixels arrive as shown, a quarter turn
    # swaps the sides (this used to be refused as corrupt), and no tag is carried
    stored = texture((20, 28, 3), seed=12)
    path = tmp_path / "turned.tif"
    path.write_bytes(pil_bytes(stored, "TIFF", tiffinfo={274: orientation, 700: XMP}))
    loaded = read_image(path)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    assert np.array_equal(loaded.pixels, shown)
    assert loaded.metadata.names == ("tag:700",)
    out = encode_image(loaded.pixels, format="tiff", metadata=loaded.metadata)
    assert 274 not in Image.open(io.BytesIO(out)).tag_v2
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(out))), shown)


def _extra_samples(data: bytes) -> tuple[int, ...] | None:
    return Image.open(io.BytesIO(data)).tag_v2.get(338)


def test_straight_alpha_tiff_is_read_as_stored_and_written_as_straight(tmp_path: Path) -> None:
    # libtiff's RGBA interface, which OpenCV decodes 8-bit TIFFs with, premultiplied the
    # colours of a straight-alpha TIFF (colour under alpha 0 lost), and the copy, written
    # without ExtraSamples, was taken for premultiplied by libtiff and for straight by
    # Pillow: not the source's picture in either
    rgba = texture((24, 32, 4), seed=14)
    rgba[:, :8, 3] = 0  # colour under full transparency
    path = tmp_path / "straight.tif"
    Image.fromarray(rgba, "RGBA").save(path)
    assert _extra_samples(path.read_bytes()) == (2,)  # Pillow writes straight alpha
    loaded = read_image(path)
    assert np.array_equal(loaded.pixels, rgba)
    out = encode_image(loaded.pixels, format="tiff", metadata=loaded.metadata)
    assert _extra_samples(out) == (2,)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(out))), rgba)
    (tmp_path / "copy.tif").write_bytes(out)
    assert np.array_equal(read_image(tmp_path / "copy.tif").pixels, rgba)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_alpha_keeps_its_kind(tmp_path: Path, dtype: type) -> None:
    # premultiplied stays premultiplied; a TIFF written without a source says straight
    rgba = texture((16, 20, 4), dtype, seed=15)
    plain = encode_image(rgba, format="tiff")
    assert _extra_samples(plain) == (2,)
    (tmp_path / "plain.tif").write_bytes(plain)
    assert np.array_equal(read_image(tmp_path / "plain.tif").pixels, rgba)
    at = plain.index(struct.pack("<HHIH", 338, 3, 1, 2))
    premultiplied = plain[: at + 8] + struct.pack("<H", 1) + plain[at + 10 :]
    meta = read_metadata(premultiplied, "tiff")
    assert _extra_samples(encode_image(rgba, format="tiff", metadata=meta)) == (1,)
    grey = read_metadata(encode_image(rgba[..., 0], format="tiff"), "tiff")
    assert _extra_samples(encode_image(rgba[..., 0], format="tiff", metadata=meta)) is None
    assert not grey


def test_big_endian_tiff_source() -> None:
    # a hand-made big-endian IFD: an ICC stub (UNDEFINED) and a 6-byte XMP packet (BYTE)
    header = b"MM\x00\x2a" + struct.pack(">I", 8)
    data_at = 8 + 2 + 2 * 12 + 4
    ifd = struct.pack(">H", 2)
    ifd += struct.pack(">HHII", 700, 1, 6, data_at)
    ifd += struct.pack(">HHII", 34675, 7, 8, data_at + 6)
    ifd += struct.pack(">I", 0)
    meta = read_metadata(header + ifd + b"<xmp/>" + b"ICCstub!", "tiff")
    out = encode_image(texture((16, 16, 3), seed=12), format="tiff", metadata=meta)
    tags = Image.open(io.BytesIO(out)).tag_v2
    assert bytes(tags[700]) == b"<xmp/>"
    assert bytes(tags[34675]) == b"ICCstub!"


# ----------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "tiff", "bmp"])
def test_plain_files_carry_nothing_and_encode_unchanged(fmt: str) -> None:
    pixels = texture((18, 22, 3), seed=13)
    plain = encode_image(pixels, format=fmt)
    meta = read_metadata(plain, fmt)
    assert not meta
    assert encode_image(pixels, format=fmt, metadata=meta) == plain


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "tiff"])
def test_garbage_carries_nothing(fmt: str) -> None:
    for junk in (b"", b"\x00" * 7, b"RIFF\xff\xff\xff\xffWEBPVP8X", b"II*\x00\xff\xff\xff\xff"):
        assert read_metadata(junk, fmt).items == ()


def test_metadata_of_another_format_is_refused() -> None:
    meta = read_metadata(pil_bytes(texture((16, 16, 3)), "PNG", icc_profile=icc_profile()), "png")
    with pytest.raises(ValueError, match="png file cannot go into a jpeg"):
        encode_image(texture((16, 16, 3)), format="jpeg", metadata=meta)
    with pytest.raises(ValueError, match="png file cannot go into a webp"):
        write_metadata(encode_image(texture((16, 16, 3)), format="webp"), meta, "webp")
    assert encode_image(texture((16, 16, 3)), format="jpeg", metadata=NO_METADATA)
    assert not ImageMetadata(format="png")


# --------------------------------------------------------------------------- studio


def test_studio_marked_files_keep_their_profile_and_orientation(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "sheet.png").write_bytes(
        pil_bytes(texture((200, 240, 3), seed=14), "PNG", icc_profile=icc_profile())
    )
    (src / "photo.jpg").write_bytes(
        pil_bytes(
            texture((200, 300, 3), seed=15), "JPEG", quality=95, exif=exif_with_orientation(6)
        )
    )
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    with Studio.create(tmp_path / "home") as studio:
        studio.add_vendor("Acme")
        records = studio.embed_files([src], "Acme", tmp_path / "out")
        assert [r.error for r in records] == [None, None]
        sheet = opened((tmp_path / "out" / "sheet.png").read_bytes())
        photo = opened((tmp_path / "out" / "photo.jpg").read_bytes())
        assert sheet.info["icc_profile"] == icc_profile()
        assert photo.getexif()[0x0112] == 6
        traced = studio.trace_files([tmp_path / "out"])
        assert sorted(t.vendor for t in traced) == ["Acme", "Acme"]
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before  # inputs untouched


def test_studio_sequence_frames_keep_their_profile(tmp_path: Path) -> None:
    seq = tmp_path / "in" / "shot_010"
    seq.mkdir(parents=True)
    for n in range(1, 4):
        frame = texture((64, 80, 3), seed=20 + n)
        (seq / f"shot_010.{n:04d}.png").write_bytes(
            pil_bytes(frame, "PNG", icc_profile=icc_profile())
        )
    with Studio.create(tmp_path / "home") as studio:
        studio.add_vendor("Acme")
        records = studio.embed_files([tmp_path / "in"], "Acme", tmp_path / "out")
        assert [r.error for r in records] == [None]
    frames = sorted((tmp_path / "out").rglob("*.png"))
    assert len(frames) == 3
    assert all(opened(f.read_bytes()).info["icc_profile"] == icc_profile() for f in frames)


# --------------------------------------------------------------------------- helpers
