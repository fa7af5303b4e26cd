"""Test helpers: small images and the bad files every I/O path must refuse."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "BAD_FILES",
    "CORPUS",
    "make_bad_file",
    "sha256_of",
    "texture",
    "write_encoded",
]

#: The shared test-media corpus, next to the repository (may be absent).
CORPUS = Path(__file__).parents[2] / "shared" / "corpus"

#: Bad inputs, by name: (file name, fragment the error message must contain).
BAD_FILES: dict[str, tuple[str, str]] = {
    "empty": ("empty.png", "empty file"),
    "truncated_png": ("cut.png", "truncated PNG"),
    "truncated_jpeg": ("cut.jpg", "truncated JPEG"),
    "cut_jpeg_scan": ("patched.jpg", "corrupt JPEG data"),
    "damaged_tiff": ("damaged.tif", "corrupt TIFF data"),
    "text_as_png": ("notes.png", "not an image"),
    "one_pixel": ("dot.png", "too small"),
    "huge_header": ("huge.png", "too large"),
    "missing": ("missing.png", "no such file"),
}


def texture(shape: tuple[int, ...], dtype: type = np.uint8, *, seed: int = 0) -> np.ndarray:
    """A smooth random texture (H, W[, C]) of the given dtype, full range."""
    rng = np.random.default_rng(seed)
    small = rng.random((max(2, shape[0] // 8), max(2, shape[1] // 8), *shape[2:]))
    big = cv2.resize(small.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    big = big.reshape(shape)
    peak = np.iinfo(dtype).max
    return np.clip(np.rint(big * peak), 0, peak).astype(dtype)


def write_encoded(
    path: Path, pixels: np.ndarray, ext: str = ".png", params: list[int] | None = None
) -> Path:
    """Write RGB(A) pixels with OpenCV directly (independent of watermark.media);
    parent folders are created."""
    if pixels.ndim == 3:
        code = cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
        pixels = cv2.cvtColor(pixels, code)
    ok, buf = cv2.imencode(ext, pixels, params or [])
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())
    return path


def _png_with_size(width: int, height: int) -> bytes:
    """A valid 16x16 PNG whose IHDR (CRC fixed) claims width x height."""
    _, buf = cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))
    data = bytearray(buf.tobytes())
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def make_bad_file(kind: str, folder: Path) -> Path:
    """Create (or, for "missing", only name) the bad file ``kind`` in ``folder``."""
    name, _ = BAD_FILES[kind]
    path = folder / name
    frame = texture((64, 80, 3))
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated_png":
        data = write_encoded(folder / "full.png", frame).read_bytes()
        (folder / "full.png").unlink()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_jpeg":
        data = write_encoded(folder / "full.jpg", frame, ".jpg").read_bytes()
        (folder / "full.jpg").unlink()
        path.write_bytes(data[: len(data) * 2 // 3])
    elif kind == "cut_jpeg_scan":  # cut inside the scan, end marker put back
        data = write_encoded(folder / "full.jpg", frame, ".jpg").read_bytes()
        (folder / "full.jpg").unlink()
        path.write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    elif kind == "damaged_tiff":  # 64 bytes of the LZW strip garbled
        data = bytearray(write_encoded(folder / "full.tif", frame, ".tif").read_bytes())
        (folder / "full.tif").unlink()
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(b ^ 0x5A for b in data[middle : middle + 64])
        path.write_bytes(bytes(data))
    elif kind == "text_as_png":
        path.write_text("these are meeting notes, not an image\n")
    elif kind == "one_pixel":
        write_encoded(path, np.full((1, 1, 3), 200, np.uint8))
    elif kind == "huge_header":
        path.write_bytes(_png_with_size(100_000, 100_000))
    elif kind != "missing":
        raise ValueError(kind)
    return path


def sha256_of(path: Path) -> str | None:
    """SHA-256 of a file's bytes, or None when it does not exist."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload and a valid CRC."""
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def several_pictures(path: Path, pictures: int) -> Path:
    """An animated PNG or WebP, or a multi-page TIFF (by the suffix), of `pictures`
    different 64x48 textures, written by Pillow."""
    from PIL import Image  # the test extra

    frames = [Image.fromarray(texture((48, 64, 3), seed=i)) for i in range(pictures)]
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return path


def tiff_with_thumbnail(path: Path) -> Path:
    """A little-endian, uncompressed grey TIFF: a 64x48 page, then a 16x12 copy marked
    reduced-resolution (NewSubfileType 1) in the next directory, as cameras and scanners
    write thumbnails."""
    sizes = [(64, 48, 0), (16, 12, 1)]
    pixels = [texture((h, w), seed=3).tobytes() for w, h, _ in sizes]
    offsets = [8, 8 + len(pixels[0])]
    ifd_at = [offsets[1] + len(pixels[1])]
    ifd_size = 2 + 10 * 12 + 4
    ifd_at.append(ifd_at[0] + ifd_size)
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_at[0]) + pixels[0] + pixels[1])
    for i, (w, h, subfile) in enumerate(sizes):
        entries = [
            struct.pack("<HHII", 254, 4, 1, subfile),
            struct.pack("<HHIHH", 256, 3, 1, w, 0),
            struct.pack("<HHIHH", 257, 3, 1, h, 0),
            struct.pack("<HHIHH", 258, 3, 1, 8, 0),
            struct.pack("<HHIHH", 259, 3, 1, 1, 0),
            struct.pack("<HHIHH", 262, 3, 1, 1, 0),
            struct.pack("<HHII", 273, 4, 1, offsets[i]),
            struct.pack("<HHIHH", 277, 3, 1, 1, 0),
            struct.pack("<HHIHH", 278, 3, 1, h, 0),
            struct.pack("<HHII", 279, 4, 1, w * h),
        ]
        following = ifd_at[1] if i == 0 else 0
        out += struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", following)
    path.write_bytes(bytes(out))
    return path
