"""Embedding of the keyed, tiled spread-spectrum mark on luma."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ._carrier import carrier_tile, chip_level, chip_values, tile_layout
from ._color import LUMA_WEIGHTS, check_image, luma, storage_scale, to_storage
from ._detect import accusation_threshold, self_score
from ._ecc import encode_payloads
from ._keys import check_key, keyed_generator
from ._mask import masking_map
from ._params import DEFAULT_PARAMS, CodecParams

__all__ = ["WEAK_MARGIN", "EmbedResult", "amplitude_map", "embed_frame", "mark_pattern"]

# Margin under which a frame is reported weak (after the reference leak, see EmbedResult).
WEAK_MARGIN = 1.25
_REFERENCE_JPEG = 70


@dataclass(frozen=True, slots=True)
class EmbedResult:
    """Result of :func:`embed_frame`.

    Attributes
    ----------
    image : ndarray
        Marked image, same shape and dtype as the input.
    psnr_y : float
        PSNR of the luma channel against the input, in dB (inf when unchanged).
    margin : float
        How much mark survives a reference leak of this frame (luma downscaled to 1/2,
        JPEG quality 70): its trace score over the score a verdict needs
        (:func:`watermark._detect.accusation_threshold`, 10,000 registered deliveries).
        Below :data:`WEAK_MARGIN` the frame is too small or too flat to be traced reliably
        after an ordinary leak. 0 for strength 0.
    """

    image: np.ndarray
    psnr_y: float
    margin: float = 0.0

    @property
    def weak(self) -> bool:
        """True when the frame is too small or too flat to be traced reliably."""
        return self.margin < WEAK_MARGIN


def mark_pattern(key: bytes, payload: int, *, level: int = 3) -> np.ndarray:
    """The periodic carrier tile for one delivery.

    Parameters
    ----------
    key : bytes
        Studio secret.
    payload : int
        Delivery id in [0, 2**32).
    level : int
        Chip DWT level (chips of ``2**level`` px), see :func:`watermark._carrier.chip_level`.

    Returns
    -------
    (32 * 2**level, 32 * 2**level) float32 ndarray with unit RMS.
    """
    if isinstance(payload, bool) or not isinstance(payload, int | np.integer):
        raise TypeError(f"payload must be an int, got {type(payload).__name__}")
    layout = tile_layout(check_key(key))
    return carrier_tile(chip_values(layout, encode_payloads(int(payload))), level)


_DITHER_PX = 251  # prime: the dither never repeats in step with the mark's tile


def _dither_tile(key: bytes) -> np.ndarray:
    """Keyed uniform dither in [-0.5, 0.5), (251, 251) float32."""
    rng = keyed_generator(key, "dither")
    return rng.random((_DITHER_PX, _DITHER_PX), dtype=np.float32) - np.float32(0.5)


def _tiled(tile: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """`tile` repeated from the top-left corner to fill `shape` (H, W), contiguous."""
    h, w = shape
    th, tw = tile.shape
    if h <= th and w <= tw:
        return np.ascontiguousarray(tile[:h, :w])
    src = tile[: min(h, th), : min(w, tw)]
    # wrapping the border of one tile is exactly periodic tiling, in one pass
    return cv2.copyMakeBorder(src, 0, h - src.shape[0], 0, w - src.shape[1], cv2.BORDER_WRAP)


def amplitude_map(grey: np.ndarray, params: CodecParams, *, unit: float = 1.0) -> np.ndarray:
    """Mark amplitude per pixel (grey levels RMS) for a frame's luma, as embedding uses it.

    Parameters
    ----------
    grey : (H, W) ndarray
        Luma in storage units (see :func:`watermark._mask.activity_map`).
    params : CodecParams
        Masking and strength table.
    unit : float
        Storage units per grey level.

    Returns
    -------
    (H, W) float32 ndarray
    """
    return masking_map(
        grey,
        flat=params.flat_rms,
        knee=params.knee,
        ceiling=params.ceiling_rms,
        target_rms=255.0 * 10.0 ** (-params.target_psnr / 20.0),
        unit=unit,
    )


def embed_frame(
    image: np.ndarray,
    key: bytes,
    payload: int,
    *,
    strength: float = 1.0,
    params: CodecParams = DEFAULT_PARAMS,
    estimate_margin: bool = True,
) -> EmbedResult:
    """Mark one frame with a delivery id.

    The carrier tile (see :func:`mark_pattern`) is repeated from the top-left corner,
    scaled by a local-activity mask (``params.flat_rms`` grey levels in flat regions, more
    on edges and texture, up to ``params.target_psnr`` overall, see
    :func:`watermark._mask.masking_map`), and added equally to R, G and B so that chroma is
    unchanged.

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray
        RGB(A) order; uint8, uint16, or float32 in [0, 1]. Alpha passes through bit-exact.
    key : bytes
        Studio secret (>= 16 bytes).
    payload : int
        Delivery id, 0 <= payload < 2**32.
    strength : float
        Multiplier on the mark amplitude, in [0, 4]; 0 returns the input unchanged.
    params : CodecParams
        Masking and strength table.
    estimate_margin : bool
        Compute :attr:`EmbedResult.margin` (a simulated leak and a trace; costly on every
        frame of a clip); False leaves it NaN.

    Returns
    -------
    EmbedResult

    Raises
    ------
    TypeError, ValueError
        On a bad image, key, payload or strength.

    Examples
    --------
    >>> img = np.full((64, 64, 3), 128, np.uint8)
    >>> out = embed_frame(img, b"k" * 32, 7)
    >>> out.image.dtype, out.image.shape
    (dtype('uint8'), (64, 64, 3))
    """
    arr = check_image(image)
    if not 0.0 <= float(strength) <= 4.0:
        raise ValueError(f"strength must be in [0, 4], got {strength}")
    tile = mark_pattern(key, payload, level=chip_level(arr.shape))
    if strength == 0.0:
        return EmbedResult(image=arr.copy(), psnr_y=float("inf"), margin=0.0)
    unit = storage_scale(arr.dtype)
    colour = arr.ndim == 3 and arr.shape[2] >= 3
    rgb = np.ascontiguousarray(arr[..., :3]) if colour else arr.reshape(arr.shape[:2])
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if colour else rgb
    if grey.dtype == np.float64:
        grey = grey.astype(np.float32)
    mask = amplitude_map(grey, params, unit=unit)
    pattern = _tiled(tile, grey.shape)
    gain = float(strength) * unit
    if rgb.dtype.kind == "f":
        marked = _add_float(rgb, cv2.multiply(pattern, mask, scale=gain))
        psnr = _psnr_y(rgb, marked, unit)
    else:
        # pattern x mask x gain, rounded with a keyed dither: flat fills get fine grain
        # instead of +-1 blobs with hard contours, and sub-level marks are kept on average
        depth = cv2.CV_32S if rgb.dtype == np.uint16 else cv2.CV_16S
        exact = cv2.multiply(pattern, mask, dst=pattern, scale=gain)  # in place: 8K frames
        del mask
        step = cv2.add(exact, _tiled(_dither_tile(key), grey.shape), dtype=depth)
        del exact, pattern
        marked = _add_integer(rgb, step)
        psnr = _psnr_y_integer(rgb, marked, step, unit)
    out = marked
    if colour and arr.shape[2] == 4:
        out = np.dstack([marked, arr[..., 3:]])
    elif arr.ndim == 3 and not colour:
        out = marked.reshape(arr.shape)
    if rgb.dtype.kind == "f":
        marked_luma = luma(marked)
    else:  # the luma change is the step wherever nothing saturated: close enough here
        marked_luma = cv2.add(grey, step, dtype=cv2.CV_32F) * np.float32(1.0 / unit)
    if not estimate_margin:
        return EmbedResult(image=out, psnr_y=psnr, margin=float("nan"))
    margin = _margin(marked_luma, 2 ** chip_level(arr.shape), key, payload)
    return EmbedResult(image=out, psnr_y=psnr, margin=margin)


def _margin(y: np.ndarray, chip_px: int, key: bytes, payload: int) -> float:
    """Trace score after the reference leak (1/2 size, JPEG 70) over the verdict threshold.

    Parameters
    ----------
    y : (H, W) float32 ndarray
        Luma of the marked frame, 0..255 scale.
    chip_px : int
        Its chip size, in pixels.
    """
    size = (max(16, y.shape[1] // 2), max(16, y.shape[0] // 2))
    half = cv2.resize(y, size, interpolation=cv2.INTER_AREA)
    small = np.clip(np.rint(half), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, _REFERENCE_JPEG])
    leak = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) if ok else small
    leak_chip = max(1.5, chip_px * size[0] / y.shape[1])
    return max(0.0, self_score(leak, key, payload, chip_px=leak_chip)) / accusation_threshold()


def _add_float(rgb: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Add `delta` to every colour channel of a float image, clipped to [0, 1]."""
    d = delta[..., None] if rgb.ndim == 3 else delta
    return to_storage(rgb.astype(np.float32) + d, rgb.dtype)


def _add_integer(rgb: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Add the integer `step` to every colour channel, saturating.

    For integer images ``round(x + d) == x + round(d)``, so the delta is rounded once and
    added with OpenCV's saturating integer add.
    """
    d = cv2.merge((step, step, step)) if rgb.ndim == 3 else step
    depth = cv2.CV_16U if rgb.dtype == np.uint16 else cv2.CV_8U
    return cv2.add(rgb, d, dtype=depth)


_SPARSE_EDGE = 0.02  # fraction of saturated pixels below which they are handled one by one


def _psnr_y_integer(before: np.ndarray, after: np.ndarray, step: np.ndarray, unit: float) -> float:
    """Exact luma PSNR (0..255 scale) of an integer image marked with `step` on R, G and B.

    Where no channel saturated, the luma change is exactly `step` (the BT.601 weights sum
    to 1), so only saturated pixels need the full computation; when they are many (white
    paper, black bars) the whole frame is computed at once.
    """
    top = float(np.iinfo(before.dtype).max)
    if before.ndim == 3:
        inside = cv2.inRange(after, (1.0, 1.0, 1.0), (top - 1.0,) * 3)
    else:
        inside = cv2.inRange(after, 1.0, top - 1.0)
    n_edge = inside.size - cv2.countNonZero(inside)
    if n_edge > _SPARSE_EDGE * inside.size:
        return _psnr_y(before, after, unit)
    total = cv2.norm(step, cv2.NORM_L2SQR, mask=inside)
    if n_edge:
        points = np.asarray(cv2.findNonZero(cv2.bitwise_not(inside))).reshape(-1, 2)
        cols, rows = points[:, 0], points[:, 1]
        b = before[rows, cols].astype(np.float64)
        a = after[rows, cols].astype(np.float64)
        diff = (a - b) @ LUMA_WEIGHTS.astype(np.float64) if before.ndim == 3 else a - b
        total += float(np.sum(diff**2))
    mse = total / (unit * unit) / step.size
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


_STRIP_ROWS = 512  # rows per strip: bounds the float copies of 8K frames


def _psnr_y(before: np.ndarray, after: np.ndarray, unit: float) -> float:
    """Exact luma PSNR (0..255 scale) between two images of the same dtype."""
    total = 0.0
    for top in range(0, before.shape[0], _STRIP_ROWS):  # strips, not pixels: bounded memory
        rows = slice(top, top + _STRIP_ROWS)
        diff = cv2.subtract(after[rows], before[rows], dtype=cv2.CV_32F)
        if diff.ndim == 3:
            diff = cv2.transform(diff, LUMA_WEIGHTS.reshape(1, 3))
        total += cv2.norm(diff, cv2.NORM_L2SQR)
    mse = total / (unit * unit) / (before.shape[0] * before.shape[1])
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))
