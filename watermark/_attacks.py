"""Seeded, reproducible attacks on images, for robustness and false-alarm benchmarks.

Pure computation: numpy and ``cv2`` array operations only (codecs run in memory through
``cv2.imencode`` / ``cv2.imdecode``); no files are touched. The one exception is
:func:`h264`, whose encoder lives in the edge module :mod:`watermark.video` (PyAV, the
optional ``video`` extra, imported only when the attack runs, still in memory).

Every attack takes an ``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA image (RGB
order) of dtype uint8 or uint16 and returns a NEW array of the same dtype; the input is
never modified. Intensity parameters (``delta``, ``sigma`` of noise) are in 8-bit code
values and are multiplied by 257 for uint16.

Alpha policy
------------
- Geometric attacks (:func:`rescale`, :func:`crop`) transform the alpha channel with the
  colour channels.
- Filters, noise and colour changes act on the colour channels; alpha passes through
  bit-exact.
- Lossy codecs (:func:`jpeg`, :func:`webp`, :func:`h264`) and the composites that end in one
  (:func:`screenshot`, :func:`social`) return the colour channels only (alpha dropped, as
  a re-encoded leak is flattened); :func:`screenshot` first composites RGBA over its
  window background.
- :func:`player_bar` makes the bar opaque (alpha = max inside the bar).

References
----------
F. A. P. Petitcolas, R. J. Anderson, M. G. Kuhn, Attacks on copyright marking systems,
Information Hiding 1998, LNCS 1525. https://doi.org/10.1007/3-540-49380-8_16
B. An et al., WAVES: Benchmarking the robustness of image watermarks, ICML 2024.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import cv2
import numpy as np
import scipy.ndimage

from ._metrics import _LUMA_WEIGHTS

__all__ = [
    "ATTACKS",
    "BLIND_MATRIX_ATTACKS",
    "FOUNDATION_ATTACKS",
    "GEOMETRY_ATTACKS",
    "INFORMED_ATTACKS",
    "Attack",
    "apply_attack",
    "attack_names",
    "brightness",
    "contrast",
    "crop",
    "gamma",
    "gaussian_blur",
    "gaussian_noise",
    "h264",
    "hue_shift",
    "jpeg",
    "median",
    "player_bar",
    "rescale",
    "salt_pepper",
    "saturation",
    "screenshot",
    "social",
    "to_grey",
    "unsharp",
    "webp",
]

_PEAKS = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}
_WORK = np.float32  # working float for pixel arithmetic


# --------------------------------------------------------------------------- helpers


def _check_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as an ndarray after checking shape and dtype (no copy)."""
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"image must be (H, W), (H, W, 3) or (H, W, 4); got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"image is empty: shape {arr.shape}")
    if arr.dtype not in _PEAKS:
        raise TypeError(
            f"image must be uint8 or uint16; got dtype {arr.dtype} "
            "(convert float images with np.rint(img * 255).astype(np.uint8))"
        )
    return arr


def _check_number(name: str, value: float, lo: float, hi: float, *, lo_open: bool = False) -> float:
    """Check ``lo <= value <= hi`` (``lo < value`` when ``lo_open``); return it as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number; got {value!r}")
    v = float(value)
    below = v <= lo if lo_open else v < lo
    if not np.isfinite(v) or below or v > hi:
        left = "(" if lo_open else "["
        raise ValueError(f"{name} must be in {left}{lo}, {hi}]; got {value!r}")
    return v


def _check_rng(rng: np.random.Generator) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)); got {rng!r}"
        )
    return rng


def _peak(dtype: np.dtype) -> int:
    return _PEAKS[np.dtype(dtype)]


def _to_work(image: np.ndarray) -> np.ndarray:
    """Pixels as the working float, on the dtype's own scale (0..255 or 0..65535)."""
    return image.astype(_WORK)


def _from_work(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round to nearest and clip to the dtype's range: the one float -> integer path."""
    return np.clip(np.rint(values), 0, _peak(dtype)).astype(dtype)


def _split_alpha(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(colour, alpha) views: colour is (H, W) or (H, W, 3); alpha (H, W) or None."""
    if image.ndim == 3 and image.shape[2] == 4:
        return image[..., :3], image[..., 3]
    return image, None


def _with_alpha(colour: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Reattach alpha (copied) to a new colour array; colour alone when alpha is None."""
    if alpha is None:
        return colour
    return np.dstack([colour, alpha])


def _colour_op(image: np.ndarray, op: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply ``op`` (working float in, working float out) to the colour channels."""
    colour, alpha = _split_alpha(image)
    out = _from_work(op(_to_work(colour)), image.dtype)
    return _with_alpha(out, alpha)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit version of an image (uint16 divided by 257, rounded)."""
    if image.dtype == np.uint8:
        return image
    return _from_work(_to_work(image) / 257.0, np.dtype(np.uint8))


def _from_uint8(image8: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Back from 8 bits to ``dtype`` (uint16: times 257, exact)."""
    if np.dtype(dtype) == np.uint8:
        return image8
    return image8.astype(np.uint16) * np.uint16(257)


def _codec(image: np.ndarray, ext: str, params: list[int]) -> np.ndarray:
    """Encode and decode in memory through OpenCV; colour channels only, 8-bit codec."""
    colour, _ = _split_alpha(image)
    img8 = _to_uint8(colour)
    bgr = img8 if img8.ndim == 2 else np.ascontiguousarray(img8[..., ::-1])  # cv2 wants BGR
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a {bgr.shape} image as {ext}")
    dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if dec.ndim == 3 and img8.ndim == 2:  # WebP decodes grey as 3 equal channels
        dec = dec[..., 0]
    elif dec.ndim == 3:
        dec = dec[..., 2::-1]
    return _from_uint8(np.ascontiguousarray(dec), image.dtype)


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize to ``shape`` = (H, W): INTER_AREA when shrinking, INTER_CUBIC otherwise."""
    h, w = shape
    shrink = h * w < image.shape[0] * image.shape[1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return cv2.resize(image, (w, h), interpolation=interp)  # cv2 takes (width, height)


def _luma_native(colour: np.ndarray) -> np.ndarray:
    """BT.601 luma of (H, W, 3) working-float RGB, on the same scale."""
    return colour @ _LUMA_WEIGHTS.astype(_WORK)


# --------------------------------------------------------------------------- codecs


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """JPEG re-compression in memory (libjpeg through OpenCV, 4:2:0 chroma).

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) uint8 or uint16 ndarray
        RGB order. uint16 goes through 8 bits (JPEG is 8-bit) and back (x 257).
    quality : int
        JPEG quality, 1..100.

    Returns
    -------
    (H, W) or (H, W, 3) ndarray, same dtype; alpha is dropped.

    Raises
    ------
    ValueError
        If ``quality`` is outside 1..100.

    Examples
    --------
    >>> import numpy as np
    >>> jpeg(np.zeros((16, 16, 4), np.uint8), 50).shape
    (16, 16, 3)
    """
    img = _check_image(image)
    q = _check_number("quality", quality, 1, 100)
    return _codec(img, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, round(q)])


def webp(image: np.ndarray, quality: int) -> np.ndarray:
    """Lossy WebP re-compression in memory (libwebp through OpenCV).

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) uint8 or uint16 ndarray
        RGB order; uint16 goes through 8 bits.
    quality : int
        WebP quality, 1..100 (100 is still lossy here: OpenCV switches to lossless above
        100 only).

    Returns
    -------
    (H, W) or (H, W, 3) ndarray, same dtype; alpha is dropped.

    Raises
    ------
    ValueError
        If ``quality`` is outside 1..100.

    Examples
    --------
    >>> import numpy as np
    >>> webp(np.zeros((16, 16), np.uint16), 50).dtype
    dtype('uint16')
    """
    img = _check_image(image)
    q = _check_number("quality", quality, 1, 100)
    return _codec(img, ".webp", [cv2.IMWRITE_WEBP_QUALITY, round(q)])


def h264(image: np.ndarray, crf: int, *, frames: int = 8) -> np.ndarray:
    """H.264 (libx264) re-encode of a frame of a slow pan: see :func:`video_codec`."""
    return video_codec(image, crf, frames=frames, encoder="libx264")


def hevc(image: np.ndarray, crf: int, *, frames: int = 8) -> np.ndarray:
    """HEVC (libx265) re-encode of a frame of a slow pan: see :func:`video_codec`."""
    return video_codec(image, crf, frames=frames, encoder="libx265")


def video_codec(
    image: np.ndarray, crf: int, *, frames: int = 8, encoder: str = "libx264"
) -> np.ndarray:
    """Video re-encode in memory (yuv420p, through PyAV): a frame of a slow pan.

    The frame becomes a ``frames``-long clip in which the picture drifts by 1 px right and
    1 px down per frame (a slow diagonal pan), so the encoder must motion-compensate and
    code a residual, as in a real shot; a clip of identical frames would let it code the
    middle frame as skip blocks copying the first (intra) frame, which only measures
    intra coding. The middle frame (index ``frames // 2``) is shown unshifted, so it is
    returned without any resampling. With x264's default GOP (3 B-frames) it is a B- or
    P-frame.

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) uint8 or uint16 ndarray
        RGB order. uint16 goes through 8 bits (the clip is 8-bit) and back (x 257); grey is
        encoded as three equal channels and returned as BT.601 luma.
    crf : int
        Constant rate factor, 0..51 (28: a streaming-grade re-encode).
    frames : int
        Clip length, 1..64 (1: a single intra frame).
    encoder : str
        ``"libx264"`` (H.264) or ``"libx265"`` (HEVC).

    Returns
    -------
    (H, W) or (H, W, 3) ndarray, same dtype; alpha is dropped (as in :func:`jpeg`).

    Raises
    ------
    ValueError
        If ``crf`` or ``frames`` is out of range.
    ImportError
        If PyAV (the ``video`` extra) is missing or has no libx264.

    Notes
    -----
    yuv420p needs even sides: the clip is the image padded by edge replication to even
    (H, W), plus ``frames - 1`` px of drift margin (edge replication too), and the result
    is cropped back to (H, W). Frame ``k`` shows ``padded[k : k + He, k : k + We]`` with
    ``m = frames // 2`` px of margin on the top and left, so frame ``m`` is the image.
    The codec runs in :func:`watermark.video.video_roundtrip` (one encoder thread,
    bit-reproducible); this module never imports ``av`` itself.

    Examples
    --------
    >>> import numpy as np
    >>> video_codec(np.zeros((15, 21, 4), np.uint8), 28).shape  # doctest: +SKIP
    (15, 21, 3)
    """
    img = _check_image(image)
    q = _check_number("crf", crf, 0, 51)
    n = _check_number("frames", frames, 1, 64)
    if q != round(q) or n != round(n):
        raise ValueError(
            f"crf and frames must be whole numbers; got crf={crf!r}, frames={frames!r}"
        )
    n, m = round(n), round(n) // 2
    colour, _ = _split_alpha(img)
    rgb8 = _to_uint8(colour)
    if rgb8.ndim == 2:
        rgb8 = np.repeat(rgb8[..., None], 3, axis=2)
    h, w = rgb8.shape[:2]
    he, we = h + h % 2, w + w % 2
    pad = ((m, he - h + n - 1 - m), (m, we - w + n - 1 - m), (0, 0))
    padded = np.pad(rgb8, pad, mode="edge")
    clip = np.stack([padded[k : k + he, k : k + we] for k in range(n)])

    from .video import video_roundtrip  # the edge module that imports av (lazily)

    out8 = video_roundtrip(clip, crf=round(q), encoder=encoder)[m, :h, :w]
    if colour.ndim == 2:
        out8 = _from_work(_luma_native(_to_work(out8)), np.dtype(np.uint8))
    return _from_uint8(np.ascontiguousarray(out8), img.dtype)


# --------------------------------------------------------------------------- geometry


def rescale(image: np.ndarray, factor: float) -> np.ndarray:
    """Resize by ``factor``: INTER_AREA when shrinking, INTER_CUBIC when enlarging.

    Parameters
    ----------
    image : (H, W[, C]) uint8 or uint16 ndarray
    factor : float
        Scale factor, 0 < factor <= 8. Output size is ``(round(H * factor),
        round(W * factor))`` (Python ``round``: halves go to even).

    Returns
    -------
    (round(H f), round(W f)[, C]) ndarray, same dtype; alpha is resized with the colour.

    Raises
    ------
    ValueError
        If ``factor`` is out of range or the output would have a zero side.

    Examples
    --------
    >>> import numpy as np
    >>> rescale(np.zeros((100, 60, 3), np.uint8), 0.5).shape
    (50, 30, 3)
    """
    img = _check_image(image)
    f = _check_number("factor", factor, 0.0, 8.0, lo_open=True)
    h, w = round(img.shape[0] * f), round(img.shape[1] * f)
    if h < 1 or w < 1:
        raise ValueError(
            f"factor {factor!r} shrinks a {img.shape[:2]} image to ({h}, {w}); use a larger factor"
        )
    if (h, w) == img.shape[:2]:
        return img.copy()
    return _resize(img, (h, w))


def crop(image: np.ndarray, area_fraction: float, *, rng: np.random.Generator) -> np.ndarray:
    """Cut out a region keeping ``area_fraction`` of the area, at a random offset.

    Parameters
    ----------
    image : (H, W[, C]) uint8 or uint16 ndarray
    area_fraction : float
        Fraction of the area kept, 0 < area_fraction <= 1. The region keeps the frame's
        aspect ratio: ``(round(H sqrt(a)), round(W sqrt(a)))``, at least 1 x 1.
    rng : numpy.random.Generator
        Draws the offset (uniform over all positions where the region fits).

    Returns
    -------
    ndarray
        A copy of the region (no resize back); alpha is cropped with the colour.

    Raises
    ------
    ValueError
        If ``area_fraction`` is outside (0, 1].
    TypeError
        If ``rng`` is not a Generator.

    Examples
    --------
    >>> import numpy as np
    >>> crop(np.zeros((100, 200), np.uint8), 0.25, rng=np.random.default_rng(0)).shape
    (50, 100)
    """
    img = _check_image(image)
    a = _check_number("area_fraction", area_fraction, 0.0, 1.0, lo_open=True)
    _check_rng(rng)
    side = float(np.sqrt(a))
    h = max(1, round(img.shape[0] * side))
    w = max(1, round(img.shape[1] * side))
    r0 = int(rng.integers(0, img.shape[0] - h + 1))
    c0 = int(rng.integers(0, img.shape[1] - w + 1))
    return img[r0 : r0 + h, c0 : c0 + w].copy()


# --------------------------------------------------------------------------- filters


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of the colour channels (reflect-101 border).

    Parameters
    ----------
    image : (H, W[, C]) uint8 or uint16 ndarray
    sigma : float
        Standard deviation in pixels, 0 <= sigma <= 50 (0 returns a copy). The kernel
        spans about +/- 3 sigma (OpenCV's choice for 8-bit and float images).

    Returns
    -------
    ndarray, same shape and dtype.

    Raises
    ------
    ValueError
        If ``sigma`` is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> gaussian_blur(np.full((8, 8), 7, np.uint8), 1.0).max()
    np.uint8(7)
    """
    img = _check_image(image)
    s = _check_number("sigma", sigma, 0.0, 50.0)
    if s == 0.0:
        return img.copy()
    return _colour_op(img, lambda x: cv2.GaussianBlur(x, (0, 0), s))


def median(image: np.ndarray, ksize: int) -> np.ndarray:
    """Median filter of the colour channels over a ``ksize`` x ``ksize`` square.

    Parameters
    ----------
    image : (H, W[, C]) uint8 or uint16 ndarray
    ksize : int
        Odd window side, 3..15. Border: replicate.

    Returns
    -------
    ndarray, same shape and dtype.

    Raises
    ------
    ValueError
        If ``ksize`` is not an odd integer in 3..15.

    Examples
    --------
    >>> import numpy as np
    >>> median(np.eye(5, dtype=np.uint8) * 9, 3).max()
    np.uint8(9)
    """
    img = _check_image(image)
    if isinstance(ksize, bool) or not isinstance(ksize, (int, np.integer)):
        raise TypeError(f"ksize must be an int; got {ksize!r}")
    if not 3 <= ksize <= 15 or ksize % 2 == 0:
        raise ValueError(f"ksize must be odd and in 3..15; got {ksize!r}")
    k = int(ksize)
    colour, alpha = _split_alpha(img)
    if img.dtype == np.uint8 or k <= 5:  # cv2.medianBlur limits uint16 to ksize 3 and 5
        out = cv2.medianBlur(np.ascontiguousarray(colour), k)
    else:
        size = (k, k) if colour.ndim == 2 else (k, k, 1)
        out = scipy.ndimage.median_filter(colour, size=size, mode="nearest")
    return _with_alpha(out, alpha)


def unsharp(image: np.ndarray, *, sigma: float = 1.0, amount: float = 1.0) -> np.ndarray:
    """Unsharp masking: ``x + amount (x - blur_sigma(x))`` on the colour channels.

    Parameters
    ----------
    image : (H, W[, C]) uint8 or uint16 ndarray
    sigma : float
        Gaussian blur standard deviation in pixels, 0 < sigma <= 50.
    amount : float
        Gain of the high-pass detail added back, 0 <= amount <= 10.

    Returns
    -------
    ndarray, same shape and dtype (rounded and clipped).

    Raises
    ------
    ValueError
        If ``sigma`` or ``amount`` is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> unsharp(np.full((8, 8, 3), 100, np.uint8)).max()
    np.uint8(100)
    """
    img = _check_image(image)
    s = _check_number("sigma", sigma, 0.0, 50.0, lo_open=True)
    g = _check_number("amount", amount, 0.0, 10.0)
    return _colour_op(img, lambda x: x + g * (x - cv2.GaussianBlur(x, (0, 0), s)))


# --------------------------------------------------------------------------- noise


def gaussian_noise(image: np.ndarray, sigma: float, *, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise, independent per pixel and colour channel.

    Parameters
    ----------
    image : (H, W[, C]) uint8 or uint16 ndarray
    sigma : float
        Standard deviation in 8-bit code values (x 257 for uint16), 0 <= sigma <= 255.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray, same shape and dtype (rounded and clipped); alpha untouched.

    Raises
    ------
    ValueError
        If ``sigma`` is out of range.
    TypeError
        If ``rng`` is not a Generator.

    Examples
    --------
    >>> import numpy as np
    >>> out = gaussian_noise(np.full((8, 8), 128, np.uint8), 5, rng=np.random.default_rng(0))
    >>> out.dtype
    dtype('uint8')
    """
    img = _check_image(image)
    s = _check_number("sigma", sigma, 0.0, 255.0) * (_peak(img.dtype) / 255.0)
    _check_rng(rng)

    def add(x: np.ndarray) -> np.ndarray:
        return x + _WORK(s) * rng.standard_normal(x.shape, dtype=_WORK)

    return _colour_op(img, add)


def salt_pepper(image: np.ndarray, amount: float, *, rng: np.random.Generator) -> np.ndarray:
    """Set a random fraction of the pixels to black or white (half each on average).

    Parameters
    ----------
    image : (H, W[, C]) uint8 or uint16 ndarray
    amount : float
        Expected fraction of pixels hit, 0 <= amount <= 1; all colour channels of a hit
        pixel change together; alpha is untouched.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray, same shape and dtype.

    Raises
    ------
    ValueError
        If ``amount`` is outside [0, 1].
    TypeError
        If ``rng`` is not a Generator.

    Examples
    --------
    >>> import numpy as np
    >>> out = salt_pepper(np.full((8, 8), 9, np.uint8), 1.0, rng=np.random.default_rng(0))
    >>> sorted(set(out.ravel().tolist()))
    [0, 255]
    """
    img = _check_image(image)
    a = _check_number("amount", amount, 0.0, 1.0)
    _check_rng(rng)
    hit = rng.random(img.shape[:2]) < a
    salt = rng.random(img.shape[:2]) < 0.5
    out = img.copy()
    colour = out[..., :3] if out.ndim == 3 else out  # a view into ``out``
    colour[hit & salt] = _peak(img.dtype)
    colour[hit & ~salt] = 0
    return out


# --------------------------------------------------------------------------- colour


def brightness(image: np.ndarray, delta: float) -> np.ndarray:
    """Add ``delta`` to every colour channel.

    Parameters
    ----------
    image : (H, W[, C]) uint8 or uint16 ndarray
    delta : float
        Offset in 8-bit code values (x 257 for uint16), -255 <= delta <= 255.

    Returns
    -------
    ndarray, same shape and dtype (clipped).

    Raises
    ------
    ValueError
        If ``delta`` is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> brightness(np.full((2, 2), 250, np.uint8), 25)[0, 0]
    np.uint8(255)
    """
    img = _check_image(image)
    d = _check_number("delta", delta, -255.0, 255.0) * (_peak(img.dtype) / 255.0)
    return _colour_op(img, lambda x: x + _WORK(d))


def contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """Scale the colour channels about the image's mean luma (as PIL's ImageEnhance).

    Parameters
    ----------
    image : (H, W[, C]) uint8 or uint16 ndarray
    factor : float
        Contrast gain, 0 <= factor <= 10 (1 unchanged, 0 flat grey at the mean).

    Returns
    -------
    ndarray, same shape and dtype: ``mean + factor (x - mean)``, rounded and clipped.

    Raises
    ------
    ValueError
        If ``factor`` is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> contrast(np.array([[0, 200]], np.uint8), 0.5).tolist()
    [[50, 150]]
    """
    img = _check_image(image)
    f = _check_number("factor", factor, 0.0, 10.0)

    def op(x: np.ndarray) -> np.ndarray:
        mean = _WORK(np.mean(x if x.ndim == 2 else _luma_native(x), dtype=np.float64))
        return mean + _WORK(f) * (x - mean)

    return _colour_op(img, op)


def gamma(image: np.ndarray, g: float) -> np.ndarray:
    """Gamma curve ``peak * (x / peak) ** g`` on the colour channels.

    Parameters
    ----------
    image : (H, W[, C]) uint8 or uint16 ndarray
    g : float
        Exponent, 0 < g <= 10; g < 1 brightens the mid-tones, g > 1 darkens them.

    Returns
    -------
    ndarray, same shape and dtype.

    Raises
    ------
    ValueError
        If ``g`` is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> gamma(np.array([[0, 64, 255]], np.uint8), 0.5).tolist()
    [[0, 128, 255]]
    """
    img = _check_image(image)
    e = _check_number("g", g, 0.0, 10.0, lo_open=True)
    p = _WORK(_peak(img.dtype))
    return _colour_op(img, lambda x: p * np.power(x / p, _WORK(e)))


def saturation(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend each RGB pixel with its luma: ``Y + factor (rgb - Y)``.

    Parameters
    ----------
    image : (H, W[, C]) uint8 or uint16 ndarray
        A grey image is returned as a copy.
    factor : float
        Saturation gain, 0 <= factor <= 10 (0 grey, 1 unchanged).

    Returns
    -------
    ndarray, same shape and dtype.

    Raises
    ------
    ValueError
        If ``factor`` is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> saturation(np.array([[[200, 100, 0]]], np.uint8), 0.0).tolist()
    [[[118, 118, 118]]]
    """
    img = _check_image(image)
    f = _check_number("factor", factor, 0.0, 10.0)
    if img.ndim == 2:
        return img.copy()

    def op(x: np.ndarray) -> np.ndarray:
        y = _luma_native(x)[..., None]
        return y + _WORK(f) * (x - y)

    return _colour_op(img, op)


def hue_shift(image: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate the hue (HSV model) by ``degrees``.

    Parameters
    ----------
    image : (H, W[, C]) uint8 or uint16 ndarray
        A grey image is returned as a copy.
    degrees : float
        Hue rotation, -360 <= degrees <= 360.

    Returns
    -------
    ndarray, same shape and dtype.

    Raises
    ------
    ValueError
        If ``degrees`` is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> hue_shift(np.array([[[255, 0, 0]]], np.uint8), 120).tolist()
    [[[0, 255, 0]]]
    """
    img = _check_image(image)
    d = _check_number("degrees", degrees, -360.0, 360.0)
    if img.ndim == 2:
        return img.copy()
    p = _WORK(_peak(img.dtype))

    def op(x: np.ndarray) -> np.ndarray:
        hsv = cv2.cvtColor(np.ascontiguousarray(x / p), cv2.COLOR_RGB2HSV)  # H in [0, 360)
        hsv[..., 0] = np.mod(hsv[..., 0] + _WORK(d), _WORK(360.0))
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * p

    return _colour_op(img, op)


def to_grey(image: np.ndarray) -> np.ndarray:
    """Convert to grey (BT.601 luma); RGB input keeps 3 (equal) channels.

    Parameters
    ----------
    image : (H, W[, C]) uint8 or uint16 ndarray
        Grey input is returned as a copy; RGBA keeps its alpha.

    Returns
    -------
    ndarray, same shape and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> to_grey(np.array([[[255, 0, 0]]], np.uint8)).tolist()
    [[[76, 76, 76]]]
    """
    img = _check_image(image)
    if img.ndim == 2:
        return img.copy()
    return _colour_op(img, lambda x: np.repeat(_luma_native(x)[..., None], 3, axis=2))


# --------------------------------------------------------------------------- composites

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _put_text(canvas8: np.ndarray, text: str, height_px: int, org_rc: tuple[int, int]) -> None:
    """Draw white anti-aliased ``text`` about ``height_px`` tall at (row, col) baseline.

    Thin wrapper: OpenCV takes the origin as (x, y) and needs a uint8 canvas.
    """
    scale = max(height_px, 4) / 22.0  # HERSHEY_SIMPLEX caps are ~22 px at scale 1
    thickness = max(1, round(scale * 1.5))
    white = (255,) * (1 if canvas8.ndim == 2 else canvas8.shape[2])
    cv2.putText(canvas8, text, (org_rc[1], org_rc[0]), _FONT, scale, white, thickness, cv2.LINE_AA)


def _timecode(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def player_bar(
    image: np.ndarray, height_fraction: float, *, rng: np.random.Generator
) -> np.ndarray:
    """Paint an opaque video-player control bar (time code, progress line) at the bottom.

    Parameters
    ----------
    image : (H, W[, C]) uint8 or uint16 ndarray
    height_fraction : float
        Bar height as a fraction of H, 0 < height_fraction <= 0.5 (at least 1 px).
    rng : numpy.random.Generator
        Draws the play position shown (time code text and progress).

    Returns
    -------
    ndarray, same shape and dtype; alpha is set to opaque inside the bar.

    Raises
    ------
    ValueError
        If ``height_fraction`` is out of range.
    TypeError
        If ``rng`` is not a Generator.

    Examples
    --------
    >>> import numpy as np
    >>> out = player_bar(np.zeros((90, 160, 3), np.uint8), 0.1, rng=np.random.default_rng(0))
    >>> bool(out[:81].any()), bool(out[81:].any())
    (False, True)
    """
    img = _check_image(image)
    hf = _check_number("height_fraction", height_fraction, 0.0, 0.5, lo_open=True)
    _check_rng(rng)
    h, w = img.shape[:2]
    bar_h = max(1, round(h * hf))
    total = int(rng.integers(600, 3 * 3600))
    pos = int(rng.integers(0, total))

    ch = 1 if img.ndim == 2 else 3
    bar = np.full((bar_h, w, ch), 24, dtype=np.uint8)  # near-black, 8-bit canvas
    _put_text(bar, f"{_timecode(pos)} / {_timecode(total)}", bar_h // 2, (bar_h * 3 // 4, 8))
    line_r = max(0, bar_h // 6)
    done = round(w * pos / total)
    bar[line_r : line_r + max(1, bar_h // 12), :done] = (230, 40, 40) if ch == 3 else 140

    out = img.copy()
    bar_native = _from_uint8(bar if ch == 3 else bar[..., 0], img.dtype)
    if img.ndim == 2:
        out[h - bar_h :] = bar_native
    else:
        out[h - bar_h :, :, :3] = bar_native
        if img.shape[2] == 4:
            out[h - bar_h :, :, 3] = _peak(img.dtype)
    return out


def screenshot(image: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """Simulate a screenshot of a viewer window: scale 0.667, UI frame around, JPEG 80.

    The image is shrunk to 0.667 (INTER_AREA), RGBA composited over the window background,
    and pasted into a canvas with a dark title bar (with text) and light borders whose
    widths the ``rng`` draws (title bar 20..40 px, sides and bottom 4..40 px), then the
    whole canvas is JPEG-compressed at quality 80.

    Parameters
    ----------
    image : (H, W[, C]) uint8 or uint16 ndarray
    rng : numpy.random.Generator

    Returns
    -------
    (H', W') or (H', W', 3) ndarray, same dtype, larger than the scaled image; no alpha.

    Raises
    ------
    TypeError
        If ``rng`` is not a Generator.

    Examples
    --------
    >>> import numpy as np
    >>> out = screenshot(np.zeros((300, 300, 3), np.uint8), rng=np.random.default_rng(0))
    >>> out.shape[0] > 200 and out.shape[1] > 200
    True
    """
    img = _check_image(image)
    _check_rng(rng)
    small = rescale(img, 0.667)
    colour, alpha = _split_alpha(small)
    background = 238.0 * _peak(img.dtype) / 255.0
    if alpha is not None:
        a = _to_work(alpha)[..., None] / _WORK(_peak(img.dtype))
        colour = _from_work(_to_work(colour) * a + _WORK(background) * (1 - a), img.dtype)

    top = int(rng.integers(20, 41))
    left, right, bottom = (int(v) for v in rng.integers(4, 41, size=3))
    h, w = colour.shape[:2]
    ch = 1 if colour.ndim == 2 else 3
    canvas = np.full((top + h + bottom, left + w + right, ch), 238, dtype=np.uint8)
    canvas[:top] = 48
    _put_text(canvas, "frame_0001.png - Image Viewer", top // 2, (top * 3 // 4, left + 4))
    canvas = _from_uint8(canvas if ch == 3 else canvas[..., 0], img.dtype)
    canvas[top : top + h, left : left + w] = colour
    return jpeg(canvas, 80)


def social(image: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """Social-media style re-share: downscale 0.5, JPEG 70, keep 80 % of the area.

    Parameters
    ----------
    image : (H, W[, C]) uint8 or uint16 ndarray
    rng : numpy.random.Generator
        Draws the crop offset.

    Returns
    -------
    ndarray, same dtype, about (0.447 H, 0.447 W); no alpha.

    Raises
    ------
    TypeError
        If ``rng`` is not a Generator.

    Examples
    --------
    >>> import numpy as np
    >>> social(np.zeros((200, 100, 3), np.uint8), rng=np.random.default_rng(0)).shape
    (89, 45, 3)
    """
    img = _check_image(image)
    _check_rng(rng)
    return crop(jpeg(rescale(img, 0.5), 70), 0.8, rng=rng)


# --------------------------------------------------------------------------- geometry II


def _warp(image: np.ndarray, matrix: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Affine (2x3) or perspective (3x3) warp, cubic, black outside; alpha carried along."""
    flags = cv2.INTER_CUBIC
    border = {"borderMode": cv2.BORDER_CONSTANT, "borderValue": 0}
    if matrix.shape == (2, 3):
        return cv2.warpAffine(image, matrix, size_wh, flags=flags, **border)
    return cv2.warpPerspective(image, matrix, size_wh, flags=flags, **border)


def rotate(image: np.ndarray, degrees: float, *, inner_crop: bool = False) -> np.ndarray:
    """Rotate about the centre, counter-clockwise; corners black, size kept.

    Parameters
    ----------
    image : (H, W[, C]) uint8 or uint16 ndarray
    degrees : float
        Angle in degrees, in [-180, 180].
    inner_crop : bool
        Crop to the largest axis-aligned rectangle inside the rotated frame (no black).

    Returns
    -------
    ndarray, same dtype; (H, W[, C]), or smaller with `inner_crop`.

    Examples
    --------
    >>> rotate(np.zeros((40, 60, 3), np.uint8), 5).shape
    (40, 60, 3)
    """
    img = _check_image(image)
    a = _check_number("degrees", degrees, -180.0, 180.0)
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), a, 1.0)
    out = _warp(img, m, (w, h))
    if not inner_crop:
        return out
    # largest axis-aligned rectangle of the same aspect inside the rotated w x h frame
    t = np.radians(abs(a) % 180.0)
    t = min(t, np.pi - t)
    s, c = np.sin(t), np.cos(t)
    k = min(w / (w * c + h * s), h / (w * s + h * c))
    ch, cw = max(1, int(h * k)), max(1, int(w * k))
    top, left = (h - ch) // 2, (w - cw) // 2
    return out[top : top + ch, left : left + cw].copy()


def aspect(image: np.ndarray, factor: float) -> np.ndarray:
    """Stretch the width by ``factor`` (height kept): anamorphic re-framing.

    Examples
    --------
    >>> aspect(np.zeros((40, 60, 3), np.uint8), 1.1).shape
    (40, 66, 3)
    """
    img = _check_image(image)
    f = _check_number("factor", factor, 0.25, 4.0)
    return _resize(img, (img.shape[0], max(1, round(img.shape[1] * f))))


def flip(image: np.ndarray) -> np.ndarray:
    """Mirror left-right.

    Examples
    --------
    >>> flip(np.arange(6, dtype=np.uint8).reshape(2, 3))[0].tolist()
    [2, 1, 0]
    """
    return np.ascontiguousarray(_check_image(image)[:, ::-1])


def perspective(image: np.ndarray, amount: float, *, rng: np.random.Generator) -> np.ndarray:
    """Move each corner inwards by up to ``amount`` of the side, at random; size kept.

    A phone or camcorder pointed at a screen at a slight angle. Outside the warped frame
    is black.

    Parameters
    ----------
    image : (H, W[, C]) uint8 or uint16 ndarray
    amount : float
        Largest corner displacement, as a fraction of the width / height, in [0, 0.45].
    rng : numpy.random.Generator

    Examples
    --------
    >>> perspective(np.zeros((40, 60), np.uint8), 0.03, rng=np.random.default_rng(0)).shape
    (40, 60)
    """
    img = _check_image(image)
    f = _check_number("amount", amount, 0.0, 0.45)
    _check_rng(rng)
    h, w = img.shape[:2]
    src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    inward = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], np.float32)
    shift = rng.uniform(0.0, f, size=(4, 2)).astype(np.float32) * np.array([w, h], np.float32)
    m = cv2.getPerspectiveTransform(src, src + inward * shift)
    return _warp(img, m, (w, h))


def matte(image: np.ndarray, ratio: float) -> np.ndarray:
    """Black bars over the frame so the visible picture has aspect ``ratio``; size kept.

    A ratio wider than the frame's puts bars above and below (letterbox, e.g. 2.39 on a
    16:9 frame); a narrower one puts them left and right (pillarbox, e.g. 4/3). The
    picture under the bars is lost.

    Examples
    --------
    >>> out = matte(np.full((90, 160), 9, np.uint8), 2.39)
    >>> out.shape, int(out[0, 80]), int(out[45, 80])
    ((90, 160), 0, 9)
    """
    img = _check_image(image)
    r = _check_number("ratio", ratio, 0.2, 5.0)
    h, w = img.shape[:2]
    out = img.copy()
    colour = out[..., :3] if out.ndim == 3 and out.shape[2] == 4 else out
    if r >= w / h:
        keep = min(h, round(w / r))
        top = (h - keep) // 2
        colour[:top] = 0
        colour[top + keep :] = 0
    else:
        keep = min(w, round(h * r))
        left = (w - keep) // 2
        colour[:, :left] = 0
        colour[:, left + keep :] = 0
    return out


def occlusion(image: np.ndarray, fraction: float, *, rng: np.random.Generator) -> np.ndarray:
    """Paint opaque rectangles of random flat colours over ``fraction`` of the area.

    Examples
    --------
    >>> out = occlusion(np.zeros((40, 60, 3), np.uint8), 0.4, rng=np.random.default_rng(0))
    >>> bool(out.any())
    True
    """
    img = _check_image(image)
    f = _check_number("fraction", fraction, 0.0, 0.9)
    _check_rng(rng)
    out = img.copy()
    h, w = img.shape[:2]
    covered = np.zeros((h, w), bool)
    peak = _peak(img.dtype)
    for _ in range(64):  # a bounded number of rectangles
        if covered.mean() >= f:
            break
        rh = int(rng.integers(max(1, h // 8), max(2, h // 2)))
        rw = int(rng.integers(max(1, w // 8), max(2, w // 2)))
        top, left = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
        colour = rng.integers(0, peak + 1, size=out.shape[2:] or None)
        out[top : top + rh, left : left + rw] = colour
        if out.ndim == 3 and out.shape[2] == 4:
            out[top : top + rh, left : left + rw, 3] = peak
        covered[top : top + rh, left : left + rw] = True
    return out


def overlay(image: np.ndarray, opacity: float, *, rng: np.random.Generator) -> np.ndarray:
    """Blend a large semi-transparent text logo (a rival's watermark) over the frame.

    Examples
    --------
    >>> overlay(np.zeros((60, 80, 3), np.uint8), 0.5, rng=np.random.default_rng(0)).shape
    (60, 80, 3)
    """
    img = _check_image(image)
    a = _check_number("opacity", opacity, 0.0, 1.0)
    _check_rng(rng)
    colour, alpha = _split_alpha(img)
    h, w = colour.shape[:2]
    stamp = np.zeros((h, w), np.uint8)
    size = max(8, h // 6)
    for row in range(size, h, 2 * size):
        _put_text(stamp, "LEAKED COPY", size, (row, int(rng.integers(0, max(1, w // 4)))))
    m = (stamp.astype(_WORK) / 255.0) * _WORK(a)
    if colour.ndim == 3:
        m = m[..., None]
    white = _WORK(_peak(img.dtype))
    out = _from_work(_to_work(colour) * (1 - m) + white * m, img.dtype)
    return _with_alpha(out, alpha)


def camcorder(image: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """A phone filming a screen: perspective 3 %, blur 1, brightness +10, noise 5, JPEG 70.

    Examples
    --------
    >>> camcorder(np.zeros((40, 60, 3), np.uint8), rng=np.random.default_rng(0)).shape
    (40, 60, 3)
    """
    img = _check_image(image)
    _check_rng(rng)
    out = perspective(img, 0.03, rng=rng)
    out = gaussian_blur(out, 1.0)
    out = brightness(out, 10)
    out = gaussian_noise(out, 5, rng=rng)
    return jpeg(out, 70)


def camcorder_heavy(image: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """A phone filming a screen badly: perspective 10 %, blur 2, noise 5, gamma 1.3, JPEG 50.

    Examples
    --------
    >>> camcorder_heavy(np.zeros((40, 60, 3), np.uint8), rng=np.random.default_rng(0)).shape
    (40, 60, 3)
    """
    img = _check_image(image)
    _check_rng(rng)
    out = perspective(img, 0.10, rng=rng)
    out = gaussian_blur(out, 2.0)
    out = gaussian_noise(out, 5, rng=rng)
    out = gamma(out, 1.3)
    return jpeg(out, 50)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True, slots=True)
class Attack:
    """A named attack with its parameters bound.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"jpeg50"``.
    family : str
        What varies along a strength ladder: ``"jpeg"``, ``"webp"``, ``"h264"``, ``"hevc"``,
        ``"rescale"``, ``"crop"``, ``"rotation"``, ``"aspect"``, ``"perspective"``,
        ``"flip"``, ``"matte"``, ``"blur"``, ``"median"``, ``"sharpen"``, ``"noise"``,
        ``"impulse"``, ``"brightness"``, ``"contrast"``, ``"gamma"``, ``"saturation"``,
        ``"hue"``, ``"grey"``, ``"overlay"``, ``"occlusion"``, ``"playerbar"``,
        ``"screenshot"``, ``"camcorder"``, ``"social"`` (and ``"none"``).
    strength : float
        The attack's main parameter in its family's units (:data:`FAMILY_UNITS`).
    fn : callable
        ``fn(image, rng) -> image``.
    group : str
        Coarse kind, for tables: ``"none"``, ``"compression"``, ``"codec"`` (video),
        ``"geometry"``, ``"filter"``, ``"noise"``, ``"colour"``, ``"composite"``.
    informed_only : bool
        Beyond what blind decoding aims at (the informed-trace set: a 0.2 downscale, a
        heavy camcorder chain); ``leaktrace bench`` runs it only when named.
    """

    name: str
    family: str
    strength: float
    fn: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    group: str = "none"
    informed_only: bool = False


#: Units of each family's strength, for tables and plot axes.
FAMILY_UNITS: Mapping[str, str] = MappingProxyType(
    {
        "none": "",
        "jpeg": "JPEG quality",
        "webp": "WebP quality",
        "h264": "x264 CRF",
        "hevc": "x265 CRF",
        "rescale": "scale factor",
        "crop": "area kept (fraction)",
        "rotation": "degrees",
        "aspect": "width factor",
        "perspective": "corner shift (fraction of side)",
        "flip": "",
        "matte": "visible aspect ratio",
        "blur": "Gaussian sigma (px)",
        "median": "kernel (px)",
        "sharpen": "unsharp amount",
        "noise": "Gaussian sigma (grey levels)",
        "impulse": "fraction of pixels",
        "brightness": "grey levels",
        "contrast": "factor",
        "gamma": "gamma",
        "saturation": "factor",
        "hue": "degrees",
        "grey": "",
        "overlay": "opacity",
        "occlusion": "area covered (fraction)",
        "playerbar": "height (fraction)",
        "screenshot": "scale",
        "camcorder": "",
        "social": "scale",
    }
)


def _identity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _check_image(image).copy()


def _build() -> dict[str, Attack]:
    table: list[Attack] = [Attack("none", "none", 0.0, _identity, "none")]

    def add(name: str, family: str, strength: float, fn, group: str, informed=False) -> None:
        table.append(Attack(name, family, float(strength), fn, group, informed))

    for q in (15, 30, 50, 70, 90):
        add(f"jpeg{q}", "jpeg", q, lambda im, rng, q=q: jpeg(im, q), "compression")
    for q in (30, 50, 70, 90):
        add(f"webp{q}", "webp", q, lambda im, rng, q=q: webp(im, q), "compression")
    for crf in (23, 28, 30, 40):
        add(f"h264crf{crf}", "h264", crf, lambda im, rng, c=crf: h264(im, c), "codec")
    for crf in (23, 30, 40):
        add(f"hevccrf{crf}", "hevc", crf, lambda im, rng, c=crf: hevc(im, c), "codec")
    add("scale0.2", "rescale", 0.2, lambda im, rng: rescale(im, 0.2), "geometry", True)
    for f in (0.25, 0.4, 0.5, 0.6, 0.75, 0.8, 1.25, 1.5, 2.0):
        add(f"scale{f:g}", "rescale", f, lambda im, rng, f=f: rescale(im, f), "geometry")
    for pct in (10, 25, 50, 80, 90):
        add(
            f"crop{pct}",
            "crop",
            pct / 100,
            lambda im, rng, a=pct / 100: crop(im, a, rng=rng),
            "geometry",
        )
    for deg in (0.5, 1, 2, 5, 15, 30, 90, 180):
        add(f"rotate{deg:g}", "rotation", deg, lambda im, rng, d=deg: rotate(im, d), "geometry")
    add("rotate5crop", "rotation", 5, lambda im, rng: rotate(im, 5, inner_crop=True), "geometry")
    for f in (0.9, 1.1):
        add(f"aspect{f:g}", "aspect", f, lambda im, rng, f=f: aspect(im, f), "geometry")
    for pct in (3, 10, 20):
        add(
            f"perspective{pct}",
            "perspective",
            pct / 100,
            lambda im, rng, a=pct / 100: perspective(im, a, rng=rng),
            "geometry",
        )
    add("flip", "flip", 1.0, lambda im, rng: flip(im), "geometry")
    add("letterbox2.39", "matte", 2.39, lambda im, rng: matte(im, 2.39), "geometry")
    add("pillarbox4:3", "matte", 4 / 3, lambda im, rng: matte(im, 4 / 3), "geometry")
    for sg in (1, 2, 3):
        add(f"blur{sg}", "blur", sg, lambda im, rng, sg=sg: gaussian_blur(im, sg), "filter")
    for k in (3, 5, 7):
        add(f"median{k}", "median", k, lambda im, rng, k=k: median(im, k), "filter")
    add("unsharp", "sharpen", 1.0, lambda im, rng: unsharp(im, sigma=1.0, amount=1.0), "filter")
    add("unsharp2", "sharpen", 2.0, lambda im, rng: unsharp(im, sigma=1.0, amount=2.0), "filter")
    for sg in (2, 5, 10, 20):
        add(
            f"noise{sg}",
            "noise",
            sg,
            lambda im, rng, sg=sg: gaussian_noise(im, sg, rng=rng),
            "noise",
        )
    add("saltpepper1", "impulse", 0.01, lambda im, rng: salt_pepper(im, 0.01, rng=rng), "noise")
    for d in (25, -25, 50):
        add(f"brightness{d:+d}", "brightness", d, lambda im, rng, d=d: brightness(im, d), "colour")
    for f in (0.5, 0.7, 1.3):
        add(f"contrast{f:g}", "contrast", f, lambda im, rng, f=f: contrast(im, f), "colour")
    for g in (0.7, 1.4):
        add(f"gamma{g:g}", "gamma", g, lambda im, rng, g=g: gamma(im, g), "colour")
    add("saturation0.5", "saturation", 0.5, lambda im, rng: saturation(im, 0.5), "colour")
    for d in (10, 30):
        add(f"hue{d}", "hue", d, lambda im, rng, d=d: hue_shift(im, d), "colour")
    add("grey", "grey", 0.0, lambda im, rng: to_grey(im), "colour")
    add("overlay0.5", "overlay", 0.5, lambda im, rng: overlay(im, 0.5, rng=rng), "composite")
    for pct in (10, 25, 40):
        add(
            f"occlusion{pct}",
            "occlusion",
            pct / 100,
            lambda im, rng, a=pct / 100: occlusion(im, a, rng=rng),
            "composite",
        )
    add("playerbar", "playerbar", 0.1, lambda im, rng: player_bar(im, 0.1, rng=rng), "composite")
    add("screenshot", "screenshot", 0.667, lambda im, rng: screenshot(im, rng=rng), "composite")
    add("camcorder", "camcorder", 0.0, lambda im, rng: camcorder(im, rng=rng), "composite")
    add(
        "camcorder10",
        "camcorder",
        0.1,
        lambda im, rng: camcorder_heavy(im, rng=rng),
        "composite",
        True,
    )
    add("social", "social", 0.5, lambda im, rng: social(im, rng=rng), "composite")
    # The foundation issue's name for the same pipeline as ``social``.
    add("combined", "social", 0.5, lambda im, rng: social(im, rng=rng), "composite")
    return {a.name: a for a in table}


ATTACKS: Mapping[str, Attack] = MappingProxyType(_build())
"""Every named attack, read-only, in a stable order (see :func:`attack_names`)."""

FOUNDATION_ATTACKS: tuple[str, ...] = ("none", "jpeg50", "scale0.5", "crop50", "combined")
"""The foundation issue's acceptance set."""

BLIND_MATRIX_ATTACKS: tuple[str, ...] = (
    "none",
    "jpeg90",
    "jpeg70",
    "jpeg50",
    "jpeg30",
    "webp50",
    "h264crf28",
    "scale0.75",
    "scale0.5",
    "scale0.25",
    "scale1.5",
    "crop80",
    "crop50",
    "crop25",
    "blur1",
    "blur2",
    "median3",
    "median5",
    "unsharp",
    "noise5",
    "noise10",
    "saltpepper1",
    "brightness+25",
    "brightness-25",
    "contrast0.7",
    "contrast1.3",
    "gamma0.7",
    "gamma1.4",
    "saturation0.5",
    "hue10",
    "grey",
    "playerbar",
    "screenshot",
    "social",
)
"""The blind robustness issue's attack matrix."""

GEOMETRY_ATTACKS: tuple[str, ...] = (
    "rotate1",
    "rotate2",
    "rotate5",
    "rotate15",
    "rotate5crop",
    "aspect0.9",
    "aspect1.1",
    "flip",
    "letterbox2.39",
    "pillarbox4:3",
    "scale0.4",
    "scale0.6",
    "scale0.8",
    "scale1.25",
    "perspective3",
    "camcorder",
)
"""The blind geometry issue's list."""

INFORMED_ATTACKS: tuple[str, ...] = (
    "crop10",
    "rotate30",
    "rotate90",
    "rotate180",
    "perspective10",
    "perspective20",
    "scale0.2",
    "flip",
    "occlusion40",
    "camcorder10",
)
"""The informed-trace issue's list (it also requires the two lists above)."""

_FAMILIES = tuple(dict.fromkeys(a.family for a in ATTACKS.values()))
_GROUPS = tuple(dict.fromkeys(a.group for a in ATTACKS.values()))


def attack_names(family: str | None = None, *, group: str | None = None) -> tuple[str, ...]:
    """Names in :data:`ATTACKS`, in registry order, optionally of one family or group.

    Parameters
    ----------
    family : str, optional
        A family (see :class:`Attack`), e.g. ``"jpeg"`` or ``"rotation"``.
    group : str, optional
        A coarse group: ``"none"``, ``"compression"``, ``"codec"``, ``"geometry"``,
        ``"filter"``, ``"noise"``, ``"colour"`` or ``"composite"``.

    Returns
    -------
    tuple of str

    Raises
    ------
    ValueError
        If ``family`` or ``group`` is unknown.

    Examples
    --------
    >>> attack_names("median")
    ('median3', 'median5', 'median7')
    >>> attack_names(group="codec")[:2]
    ('h264crf23', 'h264crf28')
    """
    if family is not None and family not in _FAMILIES:
        raise ValueError(f"unknown attack family {family!r}; choose one of {_FAMILIES}")
    if group is not None and group not in _GROUPS:
        raise ValueError(f"unknown attack group {group!r}; choose one of {_GROUPS}")
    return tuple(
        a.name
        for a in ATTACKS.values()
        if (family is None or a.family == family) and (group is None or a.group == group)
    )


def apply_attack(name: str, image: np.ndarray, *, seed: int) -> np.ndarray:
    """Apply the named attack with an rng derived from ``seed`` and ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`ATTACKS`.
    image : (H, W[, C]) uint8 or uint16 ndarray
        Not modified; (H, W, 1) is attacked as grey and keeps its channel axis.
    seed : int
        Non-negative. The rng is ``np.random.default_rng([seed, crc32(name)])``, so the
        same (name, image, seed) always gives the same output and different attacks draw
        independent streams.

    Returns
    -------
    ndarray
        The attacked image (new array, same dtype).

    Raises
    ------
    ValueError
        If ``name`` is unknown or ``seed`` negative.
    TypeError
        If ``seed`` is not an int.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((64, 64, 3), np.uint8)
    >>> apply_attack("crop50", img, seed=1).shape
    (45, 45, 3)
    """
    attack = ATTACKS.get(name)
    if attack is None:
        raise ValueError(
            f"unknown attack {name!r}; see attack_names() for the {len(ATTACKS)} names"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int; got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0; got {seed}")
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:  # grey with a channel axis: attacked as grey
        return attack.fn(_check_image(arr[..., 0]), rng)[..., None]
    return attack.fn(_check_image(arr), rng)
