"""Image file I/O: the only module of the package that reads or writes image files.

Pixels cross this edge as numpy arrays in **RGB(A) order** (OpenCV's BGR(A) is converted
here and nowhere else), shape ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``, dtype uint8 or
uint16. Every failure is a :class:`~watermark.errors.MediaError` whose one-line message
starts with the file's path.

Decoding is defensive: the container header is parsed here, before OpenCV sees the bytes,
so that a file claiming enormous dimensions is refused before anything is allocated, and
a truncated PNG (no ``IEND`` chunk) or JPEG (no ``EOI`` marker after the scan) is refused
instead of being decoded partially. What the C decoders report while still returning pixels
(libjpeg's corrupt-data warnings, libtiff's errors) is caught and refused too, so that a
damaged file is never marked, indexed or traced as if its grey patches were its picture.
Only a leak's reader may ask for a damaged JPEG's recoverable part (``damaged=True``),
and it is told what the decoder reported.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import struct
import tempfile
import threading
import zlib
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import DamagedImageError, MediaError
from .metadata import (
    JPEG_FRAME_MARKERS,
    NO_METADATA,
    ImageMetadata,
    grey_transparency,
    is_cmyk,
    jpeg_sampling,
    read_metadata,
    tiff_straight_alpha_at,
    with_tiff_alpha,
    write_metadata,
)

__all__ = [
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "LIMITS",
    "STAGED_NAME",
    "LoadedImage",
    "MediaLimits",
    "discard_file",
    "encode_image",
    "fsync_folder",
    "iter_image_files",
    "publish_file",
    "publish_new_file",
    "read_image",
    "resolved_path",
    "stage_file",
    "staging_path",
    "walk_folders",
    "write_image",
]

#: Container formats read and written, by the name used in :attr:`LoadedImage.format`.
FORMATS: tuple[str, ...] = ("png", "jpeg", "tiff", "webp", "bmp")

#: File extensions picked up when a folder is walked (compared case-insensitively).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp"}
)

_ENCODE_EXTENSION = {"png": ".png", "jpeg": ".jpg", "tiff": ".tiff", "webp": ".webp", "bmp": ".bmp"}
_SIXTEEN_BIT_FORMATS = frozenset({"png", "tiff"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COMPRESSION = 6
_WEBP_LOSSLESS = 101  # OpenCV: a WebP quality above 100 selects lossless coding
#: A name :func:`staging_path` gives, with the staged file's own name as ``name``.
STAGED_NAME = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{12}\.tmp")
# link(2) errors of a file system without hard links (FAT, some network shares)
_NO_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """Bounds on the images leaktrace accepts (one table, used for every read).

    Attributes
    ----------
    min_side : int
        Smallest accepted height and width, in pixels. Smaller images cannot carry a mark.
    max_side : int
        Largest accepted height or width, in pixels (16384 covers 8K and 16K frames).
    max_pixels : int
        Largest accepted H * W (2**28, i.e. 1 GiB for 16-bit RGBA).
    max_file_bytes : int
        Largest accepted file size, in bytes.
    """

    min_side: int = 16
    max_side: int = 16384
    max_pixels: int = 2**28
    max_file_bytes: int = 2**31


#: The limits :func:`read_image` applies unless told otherwise.
LIMITS = MediaLimits()


@dataclass(frozen=True, slots=True)
class LoadedImage:
    """A decoded image file.

    Attributes
    ----------
    pixels : (H, W), (H, W, 3) or (H, W, 4) ndarray
        uint8 or uint16, RGB(A) order, read-only.
    format : str
        Container format found in the file's bytes (one of :data:`FORMATS`), whatever
        its extension says.
    bit_depth : int
        8 or 16 bits per sample.
    path : Path
        The file read.
    sha256 : str
        Hex SHA-256 of the file's bytes (64 lowercase hex digits).
    metadata : ImageMetadata
        The ICC profile, EXIF, XMP and the like that a marked copy carries over (see
        :mod:`watermark.metadata`).
    pictures : int
        Pictures the file holds: the frames of an animated PNG or WebP, the pages of a
        TIFF (reduced-resolution copies not counted); 1 for the rest. Only the first is
        decoded into `pixels`.
    cmyk : bool
        The file stores four inks (a CMYK JPEG or TIFF), which `pixels` holds converted
        to RGB (see :func:`watermark.metadata.is_cmyk`).
    jpeg_sampling : (int, int) or None
        A colour JPEG's chroma subsampling (see :func:`watermark.metadata.jpeg_sampling`),
        which a marked copy keeps; None for other files.
    damage : str
        What the decoder reported losing, for a file read with ``damaged=True`` (see
        :func:`read_image`); empty for a whole file.
    """

    pixels: np.ndarray
    format: str
    bit_depth: int
    path: Path
    sha256: str
    metadata: ImageMetadata = NO_METADATA
    pictures: int = 1
    cmyk: bool = False
    jpeg_sampling: tuple[int, int] | None = None
    damage: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the image, in pixels."""
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))


# --------------------------------------------------------------------------- reading


def read_image(
    path: str | os.PathLike[str],
    *,
    limits: MediaLimits = LIMITS,
    single: bool = False,
    markable: bool = False,
    damaged: bool = False,
) -> LoadedImage:
    """Read and decode an image file, refusing anything malformed before decoding it.

    Parameters
    ----------
    path : str or path-like
        PNG, JPEG, TIFF, WebP or BMP file; the format is recognised from its bytes.
    limits : MediaLimits, optional
        Size bounds; see :data:`LIMITS`.
    single : bool, optional
        Refuse a file that holds more than one picture (an animation, a multi-page TIFF):
        for callers that would index the first picture alone.
    markable : bool, optional
        Refuse what a marked copy in the same format could not reproduce: several
        pictures (only the first would be marked), CMYK colour (the copy would be
        RGB, its colours those of a conversion without colour management) and a grey
        picture's transparency that the decoder drops (see
        :func:`watermark.metadata.grey_transparency`; the copy would be opaque).
    damaged : bool, optional
        Return what libjpeg recovers of a damaged JPEG instead of refusing it: data cut
        short (its end marker missing or put back) or corrupt. The lost blocks are
        libjpeg's filler (flat grey) or garbled blocks, never someone else's pixels;
        ``damage`` says what it reported. For a leak, whose surviving part still carries
        its mark; never for a file to be marked or indexed. Other formats are refused as
        without it: what OpenCV returns for a TIFF strip that does not decode is not the
        picture.

    Returns
    -------
    LoadedImage
        Pixels in RGB(A) order, format, bit depth, path and SHA-256 of the bytes.

    Raises
    ------
    MediaError
        The file is missing, unreadable, empty, larger than ``limits.max_file_bytes``,
        not a supported image, truncated or corrupt (the container's own checks, or
        lost pixels its decoder reports while decoding; with `damaged`, a JPEG only
        when libjpeg recovers nothing), smaller than ``limits.min_side``
        or larger than ``limits.max_side`` / ``limits.max_pixels`` (checked from the
        header, before decoding), decodes to an unsupported sample type, or is refused
        by `single` or `markable`.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> with tempfile.TemporaryDirectory() as d:
    ...     write_image(Path(d) / "a.png", np.zeros((16, 24, 3), np.uint8), format="png")
    ...     read_image(Path(d) / "a.png").pixels.shape
    (16, 24, 3)
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise MediaError(f"{path}: not a regular file")
        if size == 0:
            raise MediaError(f"{path}: empty file")
        if size > limits.max_file_bytes:
            raise MediaError(
                f"{path}: file too large ({size} bytes; limit {limits.max_file_bytes})"
            )
        buffer = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise MediaError(f"{path}: no such file") from None
    except OSError as exc:
        raise MediaError(f"{path}: cannot read ({exc.strerror or exc})") from None
    data = buffer.tobytes()
    if not data:
        raise MediaError(f"{path}: empty file")

    fmt = _sniff(data)
    if fmt is None:
        raise MediaError(f"{path}: not an image (unrecognised file signature)")
    cut = False  # a JPEG cut short, read with `damaged`
    try:
        if fmt == "jpeg" and damaged:
            (height, width), scan = _jpeg_header(data, limits)
            cut = not _has_jpeg_end(data, scan)
        else:
            height, width = _HEADER_PARSERS[fmt](data, limits)
    except (struct.error, IndexError):
        raise MediaError(f"{path}: corrupt or truncated {fmt.upper()} header") from None
    except _HeaderError as exc:
        error = DamagedImageError if str(exc) == _JPEG_CUT else MediaError
        raise error(f"{path}: {exc}") from None
    pictures, cmyk = _picture_count(data, fmt), is_cmyk(data, fmt)
    if (single or markable) and pictures > 1:
        raise MediaError(f"{path}: {_pictures_text(fmt, pictures)}; {_ONE_PICTURE}")
    if markable and cmyk:
        raise MediaError(
            f"{path}: a CMYK {fmt.upper()}; leaktrace marks RGB and grey pictures, and an "
            "RGB copy would not keep the file's colours: convert it to RGB first"
        )
    if markable and grey_transparency(data, fmt):
        raise MediaError(
            f"{path}: a grey {fmt.upper()} with transparency, which OpenCV decodes without "
            "it, so the marked copy would be opaque: save it as RGBA first"
        )

    if cut:  # OpenCV feeds libjpeg the buffer once: at its end, without an end marker,
        # libjpeg waits for more data and OpenCV gives up; with one, it decodes what is there
        buffer = np.concatenate([buffer, np.array([0xFF, 0xD9], np.uint8)])
    straight = tiff_straight_alpha_at(data) if fmt == "tiff" else None
    if straight is not None:  # read the samples as stored, not premultiplied by libtiff
        at, order = straight
        buffer = buffer.copy()
        buffer[at : at + 2] = np.frombuffer(struct.pack(order + "H", 1), np.uint8)
    decoded, damage = _decode(buffer)
    if damage and (decoded is None or not damaged or fmt != "jpeg"):
        error = DamagedImageError if fmt == "jpeg" and decoded is not None else MediaError
        raise error(f"{path}: corrupt {fmt.upper()} data (the decoder reports: {damage})")
    if decoded is None:
        raise MediaError(f"{path}: corrupt {fmt.upper()} data (decoder failed)")
    if cut:
        damage = "; ".join(filter(None, ["cut short, no end-of-image marker", damage]))
    try:
        pixels = _to_rgb(decoded)
    except _HeaderError as exc:
        raise MediaError(f"{path}: {exc}") from None
    if pixels.shape[:2] != (height, width):
        raise MediaError(
            f"{path}: corrupt {fmt.upper()} (decoded {pixels.shape[1]}x{pixels.shape[0]} px, "
            f"header says {width}x{height})"
        )
    pixels.setflags(write=False)
    return LoadedImage(
        pixels=pixels,
        format=fmt,
        bit_depth=8 * pixels.dtype.itemsize,
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        metadata=read_metadata(data, fmt),
        pictures=pictures,
        cmyk=cmyk,
        jpeg_sampling=jpeg_sampling(data) if fmt == "jpeg" else None,
        damage=damage,
    )


class _HeaderError(Exception):
    """Internal: a header check failed (message without the path)."""


# What the decoders write to stderr, matched line by line. libjpeg warns, and goes on with
# grey blocks, when the entropy-coded data is cut or corrupt ("Corrupt JPEG data: ..."
# except stray bytes before a marker, which it skips); OpenCV logs libtiff's errors
# ("[ERROR:...] ... TIFF_Error ...") and may still return the strips it read; libpng
# prints its errors before giving up. Those lines mean lost pixels. The warnings below
# leave the picture whole.
_DAMAGE_LINES = (
    "Corrupt JPEG data:",
    "Premature end of JPEG file",
    "Inconsistent progression sequence",
    "libpng error:",
    "[ERROR:",
)
_HARMLESS_LINES = (
    "libpng warning:",
    "Warning: unknown JFIF revision",
    "Warning: thumbnail image size",
    "Unknown Adobe color transform",
    "Invalid SOS parameters for sequential JPEG",
    "[ WARN:",
    "[ INFO:",
)
_STRAY_BYTES = "extraneous bytes before marker"
# File descriptor 2 is one per process: two threads decoding at once would swap it
# under each other.
_STDERR_LOCK = threading.Lock()


def _decode(buffer: np.ndarray) -> tuple[np.ndarray | None, str]:
    """``cv2.imdecode(buffer, IMREAD_UNCHANGED)`` and the damage its decoder reported.

    The C libraries report damage only as text on file descriptor 2, not through
    OpenCV's API, so the descriptor is pointed at a temporary file while decoding. Lines
    that mean lost pixels are returned (the first two, joined with "; ", without their
    prefixes, then how many more); the decoders' harmless warnings are dropped; anything
    else (another thread's output) is written back to stderr unchanged.
    """
    with _STDERR_LOCK, _stderr_captured() as written:
        decoded = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    damage, others = [], []
    for line in bytes(written).splitlines(keepends=True):
        text = line.decode("utf-8", "replace").strip()
        if text.startswith(_DAMAGE_LINES) and _STRAY_BYTES not in text:
            damage.append(_damage_text(text))
        elif not (text.startswith(_HARMLESS_LINES) or _STRAY_BYTES in text):
            others.append(line)
    if others:
        os.write(2, b"".join(others))
    if len(damage) > 2:  # a strip or tile per line: the first two say what it is
        damage[2:] = [f"and {len(damage) - 2} more"]
    return decoded, "; ".join(damage)


@contextmanager
def _stderr_captured() -> Iterator[bytearray]:
    """Point file descriptor 2 at a temporary file; the bytearray yielded receives what
    was written to it once the block ends (stays empty where fd 2 cannot be redirected,
    e.g. a daemon without one)."""
    written = bytearray()
    with ExitStack() as stack:
        try:
            sink = stack.enter_context(tempfile.TemporaryFile())
            saved = os.dup(2)
        except OSError:
            yield written
            return
        try:
            os.dup2(sink.fileno(), 2)
            yield written
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            written += sink.read()


def _damage_text(text: str) -> str:
    """A decoder's line without its prefixes: ``Corrupt JPEG data: bad Huffman code`` ->
    ``bad Huffman code``; ``[ERROR:0@0.03] global grfmt_tiff.cpp:117 TIFF_Error Using code
    not yet in table`` -> ``Using code not yet in table``."""
    if text.startswith("[ERROR:"):
        parts = text.split(" ", 3)
        text = parts[3] if len(parts) == 4 else text
    for prefix in ("Corrupt JPEG data: ", "TIFF_Error ", "libpng error: "):
        text = text.removeprefix(prefix)
    return text


def _sniff(data: bytes) -> str | None:
    """Container format from the leading bytes, or None."""
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM":
        return "bmp"
    return None


def _check_size(height: int, width: int, limits: MediaLimits) -> None:
    """Refuse an image whose (H, W) is outside ``limits``."""
    if height < limits.min_side or width < limits.min_side:
        raise _HeaderError(
            f"image too small ({width}x{height} px; at least "
            f"{limits.min_side}x{limits.min_side} required)"
        )
    if height > limits.max_side or width > limits.max_side or height * width > limits.max_pixels:
        raise _HeaderError(
            f"image too large ({width}x{height} px; the limit is {limits.max_side} px per side "
            f"and {limits.max_pixels} pixels)"
        )


def _png_size(data: bytes, limits: MediaLimits) -> tuple[int, int]:
    """(H, W) from IHDR, then walk every chunk: bounds, CRC, and a final IEND."""
    length, ctype = struct.unpack_from(">I4s", data, 8)
    if ctype != b"IHDR" or length != 13:
        raise _HeaderError("corrupt PNG (first chunk is not IHDR)")
    width, height = struct.unpack_from(">II", data, 16)
    _check_size(height, width, limits)
    pos, end = 8, len(data)
    while pos + 12 <= end:
        length, ctype = struct.unpack_from(">I4s", data, pos)
        stop = pos + 12 + length
        if stop > end:
            break
        (crc,) = struct.unpack_from(">I", data, stop - 4)
        if zlib.crc32(memoryview(data)[pos + 4 : stop - 4]) != crc:
            raise _HeaderError(f"corrupt PNG (bad CRC in chunk {ctype.decode('latin-1')!r})")
        if ctype == b"IEND":
            return height, width
        pos = stop
    raise _HeaderError("truncated PNG (no IEND chunk)")


_JPEG_CUT = "truncated JPEG (no end-of-image marker)"


def _jpeg_size(data: bytes, limits: MediaLimits) -> tuple[int, int]:
    """(H, W) from the SOF segment; require an EOI marker after the first scan."""
    size, scan = _jpeg_header(data, limits)
    if not _has_jpeg_end(data, scan):
        raise _HeaderError(_JPEG_CUT)
    return size


def _jpeg_header(data: bytes, limits: MediaLimits) -> tuple[tuple[int, int], int]:
    """(H, W) from the SOF segment, and the offset of the first scan's header (SOS)."""
    pos, end = 2, len(data)
    size: tuple[int, int] | None = None
    while True:
        if pos + 4 > end:
            raise _HeaderError("truncated JPEG (header ends before the image data)")
        if data[pos] != 0xFF:
            raise _HeaderError("corrupt JPEG (bad marker in header)")
        while pos + 1 < end and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos + 1]
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker == 0xD9:
            raise _HeaderError("corrupt JPEG (end marker before the image data)")
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if pos + 2 + length > end:
            raise _HeaderError("truncated JPEG (header segment cut short)")
        if marker in JPEG_FRAME_MARKERS:
            height, width = struct.unpack_from(">HH", data, pos + 5)
            _check_size(height, width, limits)
            size = (height, width)
        if marker == 0xDA:
            break
        pos += 2 + length
    if size is None:
        raise _HeaderError("corrupt JPEG (no frame header before the image data)")
    return size, pos


def _has_jpeg_end(data: bytes, start: int) -> bool:
    """An EOI marker after offset `start` (past the header: an EXIF thumbnail has its own)."""
    return data.find(b"\xff\xd9", start) >= 0


def _tiff_size(data: bytes, limits: MediaLimits) -> tuple[int, int]:
    """(H, W) as decoded, from the first IFD's ImageWidth (256), ImageLength (257) and
    Orientation (274) tags: OpenCV's TIFF decoder applies the orientation, so a quarter
    turn (orientations 5 to 8) swaps the sides."""
    order = "<" if data[:2] == b"II" else ">"
    big = struct.unpack_from(order + "H", data, 2)[0] == 43
    if big:
        (ifd,) = struct.unpack_from(order + "Q", data, 8)
        (count,) = struct.unpack_from(order + "Q", data, ifd)
        first, step, value_at = ifd + 8, 20, 12
    else:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, ifd)
        first, step, value_at = ifd + 2, 12, 8
    if count > 4096:
        raise _HeaderError("corrupt TIFF (implausible directory)")
    found: dict[int, int] = {}
    for i in range(count):  # directory entries, not pixels
        entry = first + i * step
        tag, typ = struct.unpack_from(order + "HH", data, entry)
        if tag == 274 and typ == 3:
            (found[tag],) = struct.unpack_from(order + "H", data, entry + value_at)
        if tag in (256, 257):
            code = {3: "H", 4: "I", 16: "Q"}.get(typ)
            if code is None:
                raise _HeaderError("corrupt TIFF (bad size tag type)")
            (found[tag],) = struct.unpack_from(order + code, data, entry + value_at)
    if 256 not in found or 257 not in found:
        raise _HeaderError("corrupt TIFF (no image size tags)")
    _check_size(found[257], found[256], limits)
    if 5 <= found.get(274, 1) <= 8:
        return found[256], found[257]
    return found[257], found[256]


def _webp_size(data: bytes, limits: MediaLimits) -> tuple[int, int]:
    """(H, W) from the VP8 / VP8L / VP8X chunk; the RIFF size must fit the file."""
    (riff_size,) = struct.unpack_from("<I", data, 4)
    chunk = data[12:16]
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise _HeaderError("corrupt WebP (bad VP8 start code)")
        width, height = (v & 0x3FFF for v in struct.unpack_from("<HH", data, 26))
    elif chunk == b"VP8L":
        if data[20] != 0x2F:
            raise _HeaderError("corrupt WebP (bad VP8L signature)")
        (bits,) = struct.unpack_from("<I", data, 21)
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif chunk == b"VP8X":
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
    else:
        raise _HeaderError("corrupt WebP (unknown first chunk)")
    _check_size(height, width, limits)
    if riff_size + 8 > len(data):
        raise _HeaderError("truncated WebP (file shorter than its RIFF header says)")
    return height, width


def _bmp_size(data: bytes, limits: MediaLimits) -> tuple[int, int]:
    """(H, W) from the DIB header; uncompressed pixel data must fit the file."""
    (offset,) = struct.unpack_from("<I", data, 10)
    (dib,) = struct.unpack_from("<I", data, 14)
    if dib == 12:
        width, height = struct.unpack_from("<HH", data, 18)
        bpp, compression = struct.unpack_from("<H", data, 24)[0], 0
    else:
        width, height, _, bpp, compression = struct.unpack_from("<iiHHI", data, 18)
    width, height = abs(width), abs(height)
    _check_size(height, width, limits)
    stride = (width * bpp + 31) // 32 * 4
    if offset >= len(data) or (compression in (0, 3) and offset + stride * height > len(data)):
        raise _HeaderError("truncated BMP (pixel data cut short)")
    return height, width


_HEADER_PARSERS = {
    "png": _png_size,
    "jpeg": _jpeg_size,
    "tiff": _tiff_size,
    "webp": _webp_size,
    "bmp": _bmp_size,
}


# luma over chroma sampling factors -> OpenCV's JPEG sampling parameter
_JPEG_SAMPLING = {
    (1, 1): cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    (2, 1): cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
    (2, 2): cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
    (1, 2): cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440,
    (4, 1): cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411,
}

_ONE_PICTURE = (
    "leaktrace marks one picture per file: save each as its own file, "
    "or the frames as an image sequence"
)
_MAX_IFDS = 4096  # TIFF directories walked at most (a chain that loops is corrupt)


def _picture_count(data: bytes, fmt: str) -> int:
    """Pictures an image file holds: animation frames or TIFF pages (see
    :attr:`LoadedImage.pictures`); 1 when the container has a single picture.

    Reads chunk and directory headers only. A chain that cannot be followed to its end
    counts the pictures found up to there (the first one decodes on its own).

    Parameters
    ----------
    data : bytes
        The whole file.
    fmt : str
        Its format, one of :data:`FORMATS`.

    Returns
    -------
    int, >= 1
    """
    try:
        if fmt == "png":
            return _png_pictures(data)
        if fmt == "webp":
            return _webp_pictures(data)
        if fmt == "tiff":
            return _tiff_pages(data)
    except (struct.error, IndexError):
        pass
    return 1


def _pictures_text(fmt: str, pictures: int) -> str:
    if fmt == "tiff":
        return f"a TIFF of {pictures} pages"
    return f"an animated {fmt.upper() if fmt == 'png' else 'WebP'} of {pictures} frames"


def _png_pictures(data: bytes) -> int:
    """Frames of an animated PNG: the acTL chunk's count, which comes before IDAT."""
    pos = 8
    while pos + 12 <= len(data):
        length, ctype = struct.unpack_from(">I4s", data, pos)
        if ctype == b"acTL":
            return max(1, struct.unpack_from(">I", data, pos + 8)[0])
        if ctype in (b"IDAT", b"IEND"):
            break
        pos += 12 + length
    return 1


def _webp_pictures(data: bytes) -> int:
    """Frames of an animated WebP: its ANMF chunks (VP8X with the animation flag)."""
    if data[12:16] != b"VP8X" or not data[20] & 0x02:
        return 1
    frames, pos = 0, 12
    while pos + 8 <= len(data):
        ctype = data[pos : pos + 4]
        (length,) = struct.unpack_from("<I", data, pos + 4)
        frames += ctype == b"ANMF"
        pos += 8 + length + (length & 1)
    return max(1, frames)


def _tiff_pages(data: bytes) -> int:
    """Directories of a TIFF's main chain that are pages: not marked as reduced-resolution
    copies (thumbnails, pyramid levels) by bit 0 of NewSubfileType (tag 254)."""
    order = "<" if data[:2] == b"II" else ">"
    big = struct.unpack_from(order + "H", data, 2)[0] == 43
    count_code, offset_code, step, value_at = ("Q", "Q", 20, 12) if big else ("H", "I", 12, 8)
    (ifd,) = struct.unpack_from(order + offset_code, data, 8 if big else 4)
    pages, seen = 0, set()
    while ifd and ifd not in seen and len(seen) < _MAX_IFDS:
        seen.add(ifd)
        (count,) = struct.unpack_from(order + count_code, data, ifd)
        first = ifd + struct.calcsize(count_code)
        reduced = False
        for i in range(min(int(count), 8)):  # entries go by tag: 254 comes first, if at all
            tag, typ = struct.unpack_from(order + "HH", data, first + i * step)
            if tag > 254:
                break
            if tag == 254 and typ == 4:
                reduced = bool(
                    struct.unpack_from(order + "I", data, first + i * step + value_at)[0] & 1
                )
        pages += not reduced
        (ifd,) = struct.unpack_from(order + offset_code, data, first + int(count) * step)
    return max(1, pages)


def _to_rgb(decoded: np.ndarray) -> np.ndarray:
    """OpenCV's (H, W[, C]) BGR(A) result -> contiguous RGB(A), uint8 / uint16 only."""
    if decoded.dtype not in (np.uint8, np.uint16):
        raise _HeaderError(f"unsupported sample type {decoded.dtype} (only 8- and 16-bit)")
    if decoded.ndim == 3 and decoded.shape[2] == 1:
        decoded = decoded[:, :, 0]
    if decoded.ndim == 2:
        return np.ascontiguousarray(decoded)
    channels = decoded.shape[2]
    if channels == 3:
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA)
    raise _HeaderError(f"unsupported channel count {channels}")


# --------------------------------------------------------------------------- listing


def resolved_path(path: str | os.PathLike[str]) -> Path:
    """The absolute path with symbolic links resolved; as given (made absolute) when they
    cannot be (a loop of links), so that such a path fails where it is read, with its
    own error, not where it is listed."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # RuntimeError: Python < 3.13 on a loop of links
        return Path(path).absolute()


def walk_folders(
    root: str | os.PathLike[str], *, exclude: str | os.PathLike[str] | None = None
) -> Iterator[tuple[Path, list[str]]]:
    """Every folder under `root` (itself first) with its visible file names, sorted.

    Hidden files and folders (a leading dot) are skipped, and so is the folder `exclude`
    (e.g. the output folder inside an input folder).

    Raises
    ------
    MediaError
        A folder that cannot be listed (its files would be left out without a word).
    """

    def unreadable(exc: OSError) -> None:
        raise MediaError(f"{exc.filename}: cannot read folder ({exc.strerror or exc})")

    excluded = resolved_path(exclude) if exclude is not None else None
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and (excluded is None or resolved_path(here / d) != excluded)
        )
        yield here, sorted(n for n in filenames if not n.startswith("."))


def iter_image_files(
    inputs: Iterable[str | os.PathLike[str]], *, exclude: str | os.PathLike[str] | None = None
) -> list[tuple[Path, Path]]:
    """Expand files and folders into the image files to process.

    Parameters
    ----------
    inputs : iterable of path-like
        Files (taken as given, whatever their extension or existence, so that a bad
        one fails later with its own error) and folders (walked recursively, keeping
        files whose extension is in :data:`IMAGE_EXTENSIONS`, case-insensitively;
        hidden files and folders are skipped).
    exclude : path-like, optional
        A folder whose content is never picked up by a walk (the output folder).

    Returns
    -------
    list of (Path, Path)
        ``(path, relative_path)`` pairs: a file input maps to its name, a file found
        in a folder to its path relative to that folder. Each folder's files are
        sorted; inputs keep their order; a path listed twice is kept once.

    Examples
    --------
    >>> iter_image_files(["missing.png"])
    [(PosixPath('missing.png'), PosixPath('missing.png'))]
    """
    result: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for item in inputs:
        root = Path(item)
        if root.is_dir():
            found: list[tuple[Path, Path]] = []
            for here, names in walk_folders(root, exclude=exclude):
                found.extend(
                    (here / name, (here / name).relative_to(root))
                    for name in names
                    if Path(name).suffix.lower() in IMAGE_EXTENSIONS
                )
            pairs = sorted(found, key=lambda pair: pair[1].as_posix())
        else:
            pairs = [(root, Path(root.name))]
        for path, rel in pairs:
            key = resolved_path(path)
            if key not in seen:
                seen.add(key)
                result.append((path, rel))
    return result


# --------------------------------------------------------------------------- writing


def encode_image(
    pixels: np.ndarray,
    *,
    format: str,
    jpeg_quality: int = 95,
    metadata: ImageMetadata | None = None,
    jpeg_sampling: tuple[int, int] | None = None,
) -> bytes:
    """Encode pixels into the bytes of an image file.

    Parameters
    ----------
    pixels : (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) ndarray
        uint8 or uint16, RGB(A) order (one channel: grey). Not modified.
    format : str
        One of :data:`FORMATS`. 16-bit samples need ``"png"`` or ``"tiff"``; alpha
        cannot go to ``"jpeg"``. PNG, TIFF, BMP and WebP are written losslessly.
    jpeg_quality : int, optional
        JPEG quality, 1 to 100.
    metadata : ImageMetadata, optional
        Metadata of the source file (:attr:`LoadedImage.metadata`) to carry into this
        one; it must come from a file of the same `format`.
    jpeg_sampling : (int, int), optional
        Chroma subsampling of a colour JPEG (:attr:`LoadedImage.jpeg_sampling`): (1, 1),
        (2, 1), (2, 2), (1, 2) or (4, 1); default the encoder's 4:2:0.

    Returns
    -------
    bytes
        The encoded file.

    Raises
    ------
    TypeError
        ``pixels`` is not uint8 / uint16.
    ValueError
        Unknown format, bad shape, quality out of range, a format that cannot hold
        the samples (16-bit JPEG/WebP/BMP, alpha in JPEG), or metadata of another format.
    MediaError
        The encoder failed.

    Examples
    --------
    >>> encode_image(np.zeros((16, 16), np.uint8), format="png")[:4]
    b'\\x89PNG'
    """
    pixels = np.asarray(pixels)
    if pixels.ndim == 3 and pixels.shape[2] == 1:  # grey with a channel axis
        pixels = pixels[..., 0]
    if format not in _ENCODE_EXTENSION:
        raise ValueError(f"format must be one of {FORMATS}; got {format!r}")
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        raise ValueError(f"pixels must be (H, W), (H, W, 3) or (H, W, 4); got shape {pixels.shape}")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise TypeError(
            f"pixels must be uint8 or uint16; got {pixels.dtype} (round and clip first)"
        )
    if pixels.dtype == np.uint16 and format not in _SIXTEEN_BIT_FORMATS:
        raise ValueError(f"{format} cannot store 16-bit samples; use png or tiff")
    if format == "jpeg" and pixels.ndim == 3 and pixels.shape[2] == 4:
        raise ValueError("jpeg cannot store alpha; use png, tiff, webp or bmp")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100; got {jpeg_quality}")
    if metadata and metadata.format != format:
        raise ValueError(f"metadata of a {metadata.format} file cannot go into a {format} file")
    if pixels.ndim == 3:
        code = cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
        pixels = cv2.cvtColor(pixels, code)
    if jpeg_sampling is not None and jpeg_sampling not in _JPEG_SAMPLING:
        raise ValueError(
            f"jpeg_sampling must be one of {sorted(_JPEG_SAMPLING)}; got {jpeg_sampling}"
        )
    params = {
        "png": [cv2.IMWRITE_PNG_COMPRESSION, _PNG_COMPRESSION],
        "jpeg": [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)],
        "webp": [cv2.IMWRITE_WEBP_QUALITY, _WEBP_LOSSLESS],
    }.get(format, [])
    if format == "jpeg" and jpeg_sampling is not None:
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, _JPEG_SAMPLING[jpeg_sampling]]
    ok, encoded = cv2.imencode(_ENCODE_EXTENSION[format], pixels, params)
    if not ok:
        raise MediaError(f"cannot encode a {pixels.shape} {pixels.dtype} image as {format}")
    if format == "tiff" and pixels.ndim == 3 and pixels.shape[2] == 4:
        metadata = with_tiff_alpha(metadata)  # OpenCV leaves the alpha undeclared
    if not metadata:
        return encoded.tobytes()
    try:
        return write_metadata(encoded.tobytes(), metadata, format)
    except ValueError as exc:  # the encoder's own output did not parse: a bug, not input
        raise MediaError(f"cannot add metadata to the encoded {format}: {exc}") from None


def staging_path(path: str | os.PathLike[str]) -> Path:
    """A new hidden temporary name beside `path` to stage it under:
    ``<folder>/.<name>.<12 hex>.tmp`` (:data:`STAGED_NAME` recognises it)."""
    path = Path(path)
    return path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"


def stage_file(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to a new hidden temporary file next to ``path``, fsynced.

    The first half of an atomic write: :func:`publish_file` moves it into place,
    :func:`discard_file` drops it. On any failure no temporary file is left.

    Parameters
    ----------
    path : path-like
        Final destination; its folder must exist.
    data : bytes
        File content.

    Returns
    -------
    Path
        The temporary file, ``<folder>/.<name>.<random>.tmp``.

    Raises
    ------
    MediaError
        The folder is missing or unwritable, or the write failed (disk full...).
    """
    path = Path(path)
    tmp = staging_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise MediaError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise MediaError(f"{path}: cannot write ({exc.strerror or exc})") from None
        raise
    return tmp


def publish_file(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Atomically move a staged file into place (``os.replace``), then fsync the folder.

    Raises
    ------
    MediaError
        The rename failed; the temporary file is removed.
    """
    tmp, path = Path(tmp), Path(path)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise MediaError(f"{path}: cannot write ({exc.strerror or exc})") from None
    fsync_folder(path.parent)


def publish_new_file(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """Move a staged file into place only where nothing is yet, then fsync the folder.

    A hard link, unlike a rename, never replaces what is there: a file, or even a dangling
    symbolic link, that appeared at `path` after it was checked (another process writing
    the same output) stays as it is. A file system without hard links gets a rename,
    checked just before.

    Returns
    -------
    bool
        True when published; False when `path` was taken (the temporary file is removed).

    Raises
    ------
    MediaError
        The move failed otherwise; the temporary file is removed.
    """
    tmp, path = Path(tmp), Path(path)
    try:
        os.link(tmp, path)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        return False
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            tmp.unlink(missing_ok=True)
            raise MediaError(f"{path}: cannot write ({exc.strerror or exc})") from None
        if os.path.lexists(path):
            tmp.unlink(missing_ok=True)
            return False
        publish_file(tmp, path)
        return True
    tmp.unlink(missing_ok=True)
    fsync_folder(path.parent)
    return True


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Make a rename or link inside `folder` durable (where a folder can be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def discard_file(tmp: str | os.PathLike[str]) -> None:
    """Remove a staged temporary file if it still exists."""
    Path(tmp).unlink(missing_ok=True)


def write_image(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    *,
    format: str,
    jpeg_quality: int = 95,
    metadata: ImageMetadata | None = None,
) -> None:
    """Encode and write an image atomically (temp file, fsync, ``os.replace``).

    Parameters
    ----------
    path : path-like
        Destination; its folder must exist. An existing file is replaced atomically:
        readers see the old or the new file, never a partial one.
    pixels : (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) ndarray
        uint8 or uint16, RGB(A) order (one channel: grey).
    format : str
        One of :data:`FORMATS` (the extension of ``path`` is not consulted).
    jpeg_quality : int, optional
        JPEG quality, 1 to 100.
    metadata : ImageMetadata, optional
        Source metadata to carry, see :func:`encode_image`.

    Raises
    ------
    TypeError, ValueError
        See :func:`encode_image`.
    MediaError
        The file could not be written; nothing is left behind.
    """
    data = encode_image(pixels, format=format, jpeg_quality=jpeg_quality, metadata=metadata)
    publish_file(stage_file(path, data), path)
