"""Colour and descriptive metadata carried from a source image file to its marked copy.

OpenCV's encoders write pixels only. A delivered frame that lost its ICC profile is
shown with other colours (a wide-gamut or print profile is then read as sRGB), one that
lost its EXIF orientation is shown turned, and one that lost its text, EXIF or XMP loses
the studio's own annotations: none of that is invisible. So the marked file gets, in the
same container format, the metadata of its source, copied byte for byte:

- PNG: ``iCCP sRGB gAMA cHRM cICP mDCv cLLi pHYs eXIf tEXt zTXt iTXt tIME`` chunks (with a
  valid CRC), inserted after ``IHDR``;
- JPEG: APP1 (EXIF, XMP, extended XMP), APP2 (ICC profile, any number of parts), APP13
  (IPTC) and COM segments, in their order, after the encoder's JFIF segment (not MPF,
  whose preview images follow the main one and are not carried);
- WebP: ``ICCP``, ``EXIF`` and ``XMP `` chunks (the file becomes an extended ``VP8X`` one);
- TIFF: the ICC profile (tag 34675), XMP (700) and ExtraSamples (338: whether alpha is
  premultiplied) of the first image.

PNG, JPEG and WebP pixels are decoded ignoring the EXIF orientation and marked on the
stored grid, so the carried orientation tag stays true. OpenCV's TIFF decoder applies the
TIFF orientation instead, so a marked TIFF is stored already turned and gets no
orientation tag (it is shown the same way). Nothing else is carried (BMP: nothing).
Reading is lenient: a malformed or unknown structure carries nothing rather than failing
the file, whose pixels the decoder has already vetted. Pure byte manipulation: no file
I/O.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

__all__ = [
    "NO_METADATA",
    "ImageMetadata",
    "grey_transparency",
    "is_cmyk",
    "jpeg_sampling",
    "read_metadata",
    "tiff_straight_alpha_at",
    "with_tiff_alpha",
    "write_metadata",
]


@dataclass(frozen=True, slots=True)
class ImageMetadata:
    """Metadata items of one image file, raw, in file order.

    Attributes
    ----------
    format : str
        Container they came from ("png", "jpeg", "webp", "tiff", "bmp"); they can only be
        written into a file of the same format.
    items : tuple of (str, bytes)
        (name, raw bytes) per item: PNG chunk type and the whole chunk (length, type,
        data, CRC); JPEG marker name ("APP1", "APP2", "APP13", "COM") and the whole
        segment; WebP FourCC and the whole chunk (padded); TIFF ``"tag:<n>"`` and the
        entry's type (uint16 LE), count (uint32 LE) and value bytes.
    """

    format: str
    items: tuple[tuple[str, bytes], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """Item names, in file order."""
        return tuple(name for name, _ in self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


NO_METADATA = ImageMetadata(format="")


def read_metadata(data: bytes, format: str) -> ImageMetadata:
    """The metadata a marked copy of this file should carry.

    Parameters
    ----------
    data : bytes
        The whole source file.
    format : str
        Its container format, as sniffed from its bytes.

    Returns
    -------
    ImageMetadata
        Empty when the format carries none or its structure cannot be walked.
    """
    reader = _READERS.get(format)
    if reader is None:
        return ImageMetadata(format=format)
    try:
        items = tuple(reader(data))
    except (struct.error, IndexError, ValueError):
        items = ()
    return ImageMetadata(format=format, items=items)


def write_metadata(encoded: bytes, metadata: ImageMetadata, format: str) -> bytes:
    """Insert `metadata` into a freshly encoded file of the same format.

    Parameters
    ----------
    encoded : bytes
        A file as OpenCV's encoder wrote it (no metadata of its own but JFIF).
    metadata : ImageMetadata
        From :func:`read_metadata` of the source file.
    format : str
        Format of `encoded`.

    Returns
    -------
    bytes
        `encoded` with the metadata; `encoded` itself when there is none.

    Raises
    ------
    ValueError
        `metadata` comes from another format, or `encoded` is not a well-formed file
        of `format`.
    """
    if not metadata.items:
        return encoded
    if metadata.format != format:
        raise ValueError(f"metadata of a {metadata.format} file cannot go into a {format} file")
    try:
        return _WRITERS[format](encoded, metadata.items)
    except (struct.error, IndexError, KeyError) as exc:
        raise ValueError(f"not a well-formed {format} file: {exc}") from None


# ------------------------------------------------------------------------------ PNG

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CARRIED = frozenset(
    {
        "iCCP",
        "sRGB",
        "gAMA",
        "cHRM",
        "cICP",
        "mDCv",
        "cLLi",
        "pHYs",
        "eXIf",
        "tEXt",
        "zTXt",
        "iTXt",
        "tIME",
    }
)


def _png_chunks(data: bytes):
    """(type, start, end) of every chunk, `end` past its CRC; stops at IEND."""
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("no PNG signature")
    pos = len(_PNG_SIGNATURE)
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8].decode("latin-1")
        end = pos + 12 + length
        if end > len(data):
            return
        yield kind, pos, end
        if kind == "IEND":
            return
        pos = end


def _read_png(data: bytes):
    for kind, start, end in _png_chunks(data):
        if kind in _PNG_CARRIED:
            body = data[start + 4 : end - 4]
            (crc,) = struct.unpack_from(">I", data, end - 4)
            if zlib.crc32(body) == crc:  # a damaged chunk is not propagated
                yield kind, data[start:end]


def _write_png(encoded: bytes, items) -> bytes:
    chunks = list(_png_chunks(encoded))
    if not chunks or chunks[0][0] != "IHDR":
        raise ValueError("PNG without IHDR")
    present = {kind for kind, _, _ in chunks}
    insert = b"".join(raw for kind, raw in items if kind not in present)
    cut = chunks[0][2]
    return encoded[:cut] + insert + encoded[cut:]


# ----------------------------------------------------------------------------- JPEG

_JPEG_CARRIED = {0xE1: "APP1", 0xE2: "APP2", 0xED: "APP13", 0xFE: "COM"}


def _jpeg_segments(data: bytes):
    """(marker, start, end) of every segment before the first scan."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("no JPEG SOI")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("JPEG marker expected")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA or marker == 0xD9:  # start of scan, end of image
            return
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise ValueError("truncated JPEG segment")
        yield marker, pos, end
        pos = end


# APP1 and APP2 segments are carried only with these identifiers: an APP2 "MPF" segment,
# for one, points at preview images stored after the main image, which are not carried
_JPEG_IDENTIFIERS = {
    0xE1: (
        b"Exif\x00\x00",
        b"http://ns.adobe.com/xap/1.0/\x00",
        b"http://ns.adobe.com/xmp/extension/\x00",
    ),
    0xE2: (b"ICC_PROFILE\x00",),
}


def _read_jpeg(data: bytes):
    for marker, start, end in _jpeg_segments(data):
        if marker not in _JPEG_CARRIED:
            continue
        payload = data[start + 4 : end]
        if any(payload.startswith(i) for i in _JPEG_IDENTIFIERS.get(marker, (b"",))):
            yield _JPEG_CARRIED[marker], data[start:end]


def _write_jpeg(encoded: bytes, items) -> bytes:
    cut = 2
    for marker, _, end in _jpeg_segments(encoded):
        if marker != 0xE0:  # after the JFIF segment, which must come first
            break
        cut = end
    return encoded[:cut] + b"".join(raw for _, raw in items) + encoded[cut:]


# ----------------------------------------------------------------------------- WebP

_WEBP_FLAGS = {"ICCP": 0x20, "EXIF": 0x08, "XMP ": 0x04}
_WEBP_ALPHA = 0x10


def _webp_chunks(data: bytes):
    """(fourcc, start, end) of every chunk, `end` past its padding."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("no RIFF WEBP header")
    pos = 12
    while pos + 8 <= len(data):
        fourcc = data[pos : pos + 4].decode("latin-1")
        (size,) = struct.unpack_from("<I", data, pos + 4)
        end = pos + 8 + size + (size & 1)
        if end > len(data) + (size & 1):
            raise ValueError("truncated WebP chunk")
        yield fourcc, pos, min(end, len(data))
        pos = end


def _read_webp(data: bytes):
    for fourcc, start, end in _webp_chunks(data):
        if fourcc in _WEBP_FLAGS:
            raw = data[start:end]
            yield fourcc, raw + b"\x00" * (len(raw) & 1)


def _webp_canvas(fourcc: str, payload: bytes) -> tuple[int, int, bool]:
    """(width, height, has alpha) from a simple file's VP8L or VP8 bitstream."""
    if fourcc == "VP8L":
        (bits,) = struct.unpack_from("<I", payload, 1)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool((bits >> 28) & 1)
    if fourcc == "VP8 ":
        w, h = struct.unpack_from("<HH", payload, 6)
        return w & 0x3FFF, h & 0x3FFF, False
    raise ValueError(f"unexpected first WebP chunk {fourcc!r}")


def _write_webp(encoded: bytes, items) -> bytes:
    chunks = list(_webp_chunks(encoded))
    if not chunks:
        raise ValueError("WebP without chunks")
    fourcc, start, end = chunks[0]
    flags = 0
    for name, _ in items:
        flags |= _WEBP_FLAGS[name]
    if fourcc == "VP8X":
        vp8x = bytearray(encoded[start:end])
        vp8x[8] |= flags
        rest = encoded[end:]
    else:
        width, height, alpha = _webp_canvas(fourcc, encoded[start + 8 : end])
        body = bytes([flags | (_WEBP_ALPHA if alpha else 0), 0, 0, 0])
        body += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        vp8x = bytearray(b"VP8X" + struct.pack("<I", len(body)) + body)
        rest = encoded[start:]
    # the order the container wants: VP8X, ICCP, image data, EXIF, XMP
    iccp = b"".join(raw for name, raw in items if name == "ICCP")
    tail = b"".join(raw for name, raw in items if name == "EXIF")
    tail += b"".join(raw for name, raw in items if name == "XMP ")
    chunks_bytes = bytes(vp8x) + iccp + rest + tail
    return b"RIFF" + struct.pack("<I", 4 + len(chunks_bytes)) + b"WEBP" + chunks_bytes


# ----------------------------------------------------------------------------- TIFF

# ExtraSamples (338): what the samples past the colour ones are. OpenCV's TIFF encoder
# writes RGBA without it, and libtiff's RGBA reader (which many viewers use) then takes
# the fourth sample for premultiplied alpha: a straight-alpha picture would be shown
# with its half-transparent pixels too bright. So the source's value is carried, and an
# RGBA file written without a source says "unassociated" (2), what RGBA arrays hold.
_TIFF_EXTRA_SAMPLES = 338
_TIFF_UNASSOCIATED_ALPHA = 2
_TIFF_SHORT = 3

# tag -> the value types it is carried with (BYTE, UNDEFINED: byte strings, so the
# file's byte order does not matter; ExtraSamples' SHORTs are kept little-endian here and
# written in the marked file's order)
_TIFF_CARRIED = {34675: (7, 1), 700: (1, 7), _TIFF_EXTRA_SAMPLES: (3,)}


def is_cmyk(data: bytes, format: str) -> bool:
    """Whether the file stores its colour as four inks: a JPEG of four components (CMYK
    or YCCK) or a separated TIFF (PhotometricInterpretation 5). The decoder hands such a
    file over as RGB, without its colour management. Lenient like the readers: False
    when the structure cannot be read.

    Parameters
    ----------
    data : bytes
        The whole file.
    format : str
        Its container format ("png", "jpeg", "webp", "tiff", "bmp").
    """
    try:
        if format == "jpeg":
            frame = _jpeg_frame(data)
            return frame is not None and data[frame + 9] == 4  # Nf, after P, Y and X
        if format == "tiff":
            return _tiff_shorts(data, (262,)).get(262) == 5
    except (ValueError, struct.error, IndexError):
        pass
    return False


def grey_transparency(data: bytes, format: str) -> bool:
    """Whether the file is a grey picture with transparency that OpenCV's decoder drops:
    a grey PNG with a transparent grey value (``tRNS``; it expands that of colour and
    palette PNGs to alpha) or a grey TIFF with an alpha sample (ExtraSamples 1 or 2).
    Lenient like the readers: False when the structure cannot be read.

    Parameters
    ----------
    data : bytes
        The whole file.
    format : str
        Its container format ("png", "jpeg", "webp", "tiff", "bmp").
    """
    try:
        if format == "png":
            if data[25] != 0:  # IHDR colour type 0: grey
                return False
            for kind, _, _ in _png_chunks(data):
                if kind in ("tRNS", "IDAT"):  # tRNS must come before the image data
                    return kind == "tRNS"
            return False
        if format == "tiff":
            values = _tiff_shorts(data, (262, _TIFF_EXTRA_SAMPLES))
            return values.get(262) in (0, 1) and values.get(_TIFF_EXTRA_SAMPLES) in (1, 2)
    except (ValueError, struct.error, IndexError):
        pass
    return False


def jpeg_sampling(data: bytes) -> tuple[int, int] | None:
    """Chroma subsampling of a colour JPEG: its luma component's horizontal and vertical
    sampling factors over its chroma components', e.g. (1, 1) for 4:4:4, (2, 1) for 4:2:2,
    (2, 2) for 4:2:0. None for a grey or CMYK JPEG, unequal chroma factors, or a structure
    that cannot be read.

    Parameters
    ----------
    data : bytes
        The whole file.
    """
    try:
        frame = _jpeg_frame(data)
        if frame is None or data[frame + 9] != 3:  # Nf: components
            return None
        # each component: id, Hi << 4 | Vi, table
        y, cb, cr = (data[frame + 11 + 3 * i] for i in range(3))
        if cb != cr or cb & 0x0F == 0 or cb >> 4 == 0:
            return None
        h, h_rest = divmod(y >> 4, cb >> 4)
        v, v_rest = divmod(y & 0x0F, cb & 0x0F)
        return None if h_rest or v_rest else (h, v)
    except (ValueError, struct.error, IndexError):
        return None


# JPEG start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC)
JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_frame(data: bytes) -> int | None:
    """Offset of a JPEG's start-of-frame segment (its marker's 0xFF), or None."""
    for marker, start, _ in _jpeg_segments(data):
        if marker in JPEG_FRAME_MARKERS:
            return start
    return None


def _tiff_ifd0(data: bytes) -> tuple[str, int, list[tuple[int, int, int, int]]]:
    """Byte order, IFD0 offset and its (tag, type, count, entry offset) entries."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or struct.unpack_from(order + "H", data, 2)[0] != 42:
        raise ValueError("not a classic TIFF")
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    (n,) = struct.unpack_from(order + "H", data, ifd)
    entries = []
    for k in range(n):
        at = ifd + 2 + 12 * k
        tag, kind, count = struct.unpack_from(order + "HHI", data, at)
        entries.append((tag, kind, count, at))
    return order, ifd, entries


def _read_tiff(data: bytes):
    order, _, entries = _tiff_ifd0(data)
    for tag, kind, count, at in entries:
        if kind not in _TIFF_CARRIED.get(tag, ()):
            continue
        size = count * (2 if kind == _TIFF_SHORT else 1)
        if size <= 4:
            raw = data[at + 8 : at + 8 + size]
        else:
            (offset,) = struct.unpack_from(order + "I", data, at + 8)
            raw = data[offset : offset + size]
            if len(raw) != size:
                raise ValueError("TIFF value past the end of the file")
        if kind == _TIFF_SHORT:  # kept little-endian, whatever the source's order
            raw = struct.pack(f"<{count}H", *struct.unpack(f"{order}{count}H", raw))
        yield f"tag:{tag}", struct.pack("<HI", kind, count) + raw


def with_tiff_alpha(metadata: ImageMetadata | None) -> ImageMetadata | None:
    """TIFF metadata that says what an RGBA file's fourth sample is, without a source.

    A TIFF source's metadata is returned as it is: it carries the source's ExtraSamples,
    or the source had none and the copy keeps its samples described alike. Without a
    source (None or :data:`NO_METADATA`), unassociated alpha: RGBA pixels hold straight
    alpha.

    Parameters
    ----------
    metadata : ImageMetadata or None
        From :func:`read_metadata` of a TIFF source, or None (no source).

    Returns
    -------
    ImageMetadata or None
        `metadata`, or TIFF metadata of one ExtraSamples item.
    """
    if metadata is not None and metadata.format:
        return metadata
    value = struct.pack("<HIH", _TIFF_SHORT, 1, _TIFF_UNASSOCIATED_ALPHA)
    return ImageMetadata(format="tiff", items=((f"tag:{_TIFF_EXTRA_SAMPLES}", value),))


def tiff_straight_alpha_at(data: bytes) -> tuple[int, str] | None:
    """Where a TIFF says its one extra sample is straight (unassociated) alpha.

    OpenCV decodes 8-bit TIFFs through libtiff's RGBA interface, which premultiplies
    straight alpha into the colours (and zeroes the colour under alpha 0): a marked copy
    would not hold the source's samples. Premultiplied alpha is handed over as stored,
    so the reader says "premultiplied" at this offset in the bytes it decodes, and gets
    the samples as stored.

    Parameters
    ----------
    data : bytes
        The whole file.

    Returns
    -------
    (int, str) or None
        The offset of the ExtraSamples value (a SHORT inside its directory entry) and
        the file's byte order (``"<"`` or ``">"``); None when the first directory has no
        single ExtraSamples value of 2, or cannot be read.
    """
    try:
        order, _, entries = _tiff_ifd0(data)
        for tag, kind, count, at in entries:
            if tag == _TIFF_EXTRA_SAMPLES and kind == _TIFF_SHORT and count == 1:
                value = struct.unpack_from(order + "H", data, at + 8)[0]
                return (at + 8, order) if value == _TIFF_UNASSOCIATED_ALPHA else None
    except (ValueError, struct.error, IndexError):
        pass
    return None


def _tiff_shorts(data: bytes, tags: tuple[int, ...]) -> dict[int, int]:
    """The first value of each of `tags` that the first directory holds as SHORTs
    (PhotometricInterpretation 262, SamplesPerPixel 277, ExtraSamples 338, ...)."""
    order, _, entries = _tiff_ifd0(data)
    return {
        tag: struct.unpack_from(order + "H", data, at + 8)[0]
        for tag, kind, _, at in entries
        if tag in tags and kind == _TIFF_SHORT
    }


def _tiff_extra_samples(data: bytes) -> int:
    """Samples per pixel past the colour ones (RGB: 3, grey: 1) of a classic TIFF."""
    found = _tiff_shorts(data, (262, 277))
    colours = 3 if found.get(262) == 2 else 1
    return found.get(277, 1) - colours


def _write_tiff(encoded: bytes, items) -> bytes:
    order, ifd, entries = _tiff_ifd0(encoded)
    n = len(entries)
    (next_ifd,) = struct.unpack_from(order + "I", encoded, ifd + 2 + 12 * n)
    carried = {int(name[4:]): raw for name, raw in items}
    extra = carried.get(_TIFF_EXTRA_SAMPLES)
    if extra is not None and struct.unpack_from("<I", extra, 2)[0] != _tiff_extra_samples(
        encoded
    ):  # the decoder dropped or added samples: the source's description is not this file's
        del carried[_TIFF_EXTRA_SAMPLES]
    out = bytearray(encoded)
    new_entries: dict[int, bytes] = {
        tag: encoded[at : at + 12] for tag, _, _, at in entries if tag not in carried
    }
    for tag, raw in carried.items():
        kind, count = struct.unpack_from("<HI", raw)
        value = raw[6:]
        if kind == _TIFF_SHORT:
            value = struct.pack(f"{order}{count}H", *struct.unpack(f"<{count}H", value))
        if len(value) <= 4:
            field = value.ljust(4, b"\x00")
        else:
            out += b"\x00" * (len(out) & 1)  # values start on a word boundary
            field = struct.pack(order + "I", len(out))
            out += value
        new_entries[tag] = struct.pack(order + "HHI", tag, kind, count) + field
    out += b"\x00" * (len(out) & 1)
    new_ifd = len(out)
    out += struct.pack(order + "H", len(new_entries))
    out += b"".join(new_entries[tag] for tag in sorted(new_entries))  # tags ascend
    out += struct.pack(order + "I", next_ifd)
    struct.pack_into(order + "I", out, 4, new_ifd)
    return bytes(out)


_READERS = {"png": _read_png, "jpeg": _read_jpeg, "webp": _read_webp, "tiff": _read_tiff}
_WRITERS = {"png": _write_png, "jpeg": _write_jpeg, "webp": _write_webp, "tiff": _write_tiff}
