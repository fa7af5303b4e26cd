"""Embedding of the keyed, tiled spread-spectrum mark on luma."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ._carrier import TILE_CHIPS, carrier_tile, chip_level, chip_levels, chip_values, tile_layout
from ._color import LUMA_WEIGHTS, check_image, luma, storage_scale, to_storage
from ._detect import accusation_threshold, self_score
from ._ecc import encode_payloads
from ._keys import check_key, keyed_generator
from ._mask import activity_map, black_fade, masking_table, transparent_pixels
from ._params import DEFAULT_PARAMS, CodecParams
from ._ssim_budget import (
    WindowStatistics,
    local_share,
    predicted_ssim,
    ssim_capped_table,
    window_statistics,
)

__all__ = ["WEAK_MARGIN", "EmbedResult", "amplitude_map", "embed_frame", "mark_pattern"]

# Margin under which a frame is reported weak (after the reference leak, see EmbedResult).
WEAK_MARGIN = 1.25
_REFERENCE_JPEG = 70
# Luma range the reference leak keeps, grey levels: a brightness shift of +-25 (the blind
# robustness matrix's) or a contrast lift clips paper white and near-black fills, and
# whatever mark they carried with them.
_REFERENCE_LEVELS = (25.0, 230.0)
# Frames marked with 4-px chips (chip level 2) that are mostly flat fill face a second
# reference leak, the frame itself after WebP at this quality: WebP's 4x4 transforms smooth
# 4-px chips out of flat fills, which the half-size JPEG does not show (flat cel frames at
# 1280x720 kept margins of 1.5 to 1.9 there, and WebP 50 erased the mark from 11 of 12).
# 8-px chips and larger ride through it (cel frames at 1920x1080: every one traced after
# WebP 50). On frames under _WEBP_FLAT_SHARE flat fill the WebP margin fell at most 13 % below the
# JPEG one (generated frames of every kind and the corpus frames under 1000 px), so they
# skip the encode, which would cost them most of an embed (about 80 ms at 1280x720).
_REFERENCE_WEBP = 50
_WEBP_LEVEL = 2
_WEBP_FLAT_SHARE = 0.5  # share of pixels whose mark sits at the flat-fill floor
# A weak frame from 720 px up takes 8-px chips only when their margin exceeds the 4-px one
# this many times (embed_frame). The reference leak halves the frame, so 4-px chips meet
# it as 2-px ones and it favours 8-px chips; near ties go either way with the payload.
# The corpus pencil sketch at 928x1024 (leaktrace bench's size) gave ratios of 0.92 to
# 1.15 over three payloads; taking 8-px chips whenever their margin was larger, two of
# its three bench deliveries lost 8 of their 164 leaks (brightness, heavy codecs, the
# camcorder chain). Weak generated frames at 1280x720: cel 3.1 to 9.9, toned and white
# pages 1.4 to 6.4 (all but one of each over 1.5).
_LARGER_CHIPS_GAIN = 1.5


@dataclass(frozen=True, slots=True)
class EmbedResult:
    """Result of :func:`embed_frame`.

    Attributes
    ----------
    image : ndarray
        Marked image, same shape and dtype as the input.
    psnr_y : float
        PSNR of the luma channel against the input, in dB (inf when unchanged).
    level : int
        Chip DWT level the frame was marked with (chips of ``2**level`` px).
    margin : float
        How much mark survives a reference leak of this frame (luma downscaled to 1/2,
        JPEG quality 70): its trace score over the score a verdict needs
        (:func:`watermark._detect.accusation_threshold`, 10,000 registered deliveries).
        The leak's luma is also clipped to 25..230 before its JPEG, as a brightness shift
        of +-25 clips it at one end (or contrast 1.3 at both): paper white and near-black
        fills keep no mark through such a leak. A frame marked with 4-px chips (short side
        under 1000 px) that is at least half flat fill also faces its luma after WebP 50,
        and the margin is the smaller of the two. Below :data:`WEAK_MARGIN` the frame is
        too small, too flat or too close to white or black to be traced reliably after an
        ordinary leak. 0 for strength 0.
    """

    image: np.ndarray
    psnr_y: float
    level: int
    margin: float = 0.0

    @property
    def weak(self) -> bool:
        """True when the frame is too small, too flat or too close to white or black to be
        traced reliably."""
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


def amplitude_map(
    grey: np.ndarray,
    params: CodecParams,
    *,
    unit: float = 1.0,
    level: int | None = None,
    clear: np.ndarray | None = None,
) -> np.ndarray:
    """Mark amplitude per pixel (grey levels RMS) for a frame's luma, as embedding uses it.

    Parameters
    ----------
    grey : (H, W) ndarray
        Luma in storage units (see :func:`watermark._mask.activity_map`).
    params : CodecParams
        Masking and strength table.
    unit : float
        Storage units per grey level.
    level : int, optional
        Chip DWT level the frame was marked with (the SSIM budget depends on it); None:
        the size rule's (:func:`watermark._carrier.chip_level`).
    clear : (H, W) uint8 ndarray, optional
        The frame's :func:`watermark._mask.transparent_pixels`, which keep their mark
        when the SSIM budget has room for it (as in :func:`embed_frame`).

    Returns
    -------
    (H, W) float32 ndarray
    """
    act = activity_map(grey, unit=unit)
    chosen = chip_level(grey.shape) if level is None else int(level)
    raw = _amplitude_table(act, params)
    stats, clear = _frame_statistics(grey, act, clear, raw, params, chosen, unit)
    table = _budgeted_table(raw, stats, params, chosen, unit)
    return _mask_amplitude(grey, act, table, fade=params.black_fade, unit=unit, clear=clear)


def _mask_amplitude(
    grey: np.ndarray,
    activity: np.ndarray,
    table: np.ndarray,
    *,
    fade: float,
    unit: float,
    clear: np.ndarray | None,
) -> np.ndarray:
    """Mark amplitude per pixel, float32 (grey levels): ``table[activity]``, faded toward
    black on flat near-black pixels but `clear` ones (:func:`watermark._mask.black_fade`)."""
    amplitude = cv2.LUT(activity, table)
    keep = black_fade(grey, activity, fade=fade, unit=unit, clear=clear)
    return amplitude if keep is None else cv2.multiply(amplitude, keep, dst=amplitude)


def _amplitude_table(activity: np.ndarray, params: CodecParams) -> np.ndarray:
    """(256,) float32 amplitude per activity level, see :func:`watermark._mask.masking_table`."""
    return masking_table(
        activity,
        flat=params.flat_rms,
        knee=params.knee,
        ceiling=params.ceiling_rms,
        target_rms=255.0 * 10.0 ** (-params.target_psnr / 20.0),
    )


def _rounding_noise(unit: float) -> float:
    """Variance that dithered rounding to integer storage adds, grey levels squared: 1/6
    of a storage step squared; 0 for float storage."""
    return 0.0 if unit < 1.0 else 1.0 / (6.0 * unit * unit)


def _frame_statistics(
    grey: np.ndarray,
    activity: np.ndarray,
    clear: np.ndarray | None,
    table: np.ndarray,
    params: CodecParams,
    level: int,
    unit: float,
) -> tuple[WindowStatistics | None, np.ndarray | None]:
    """The SSIM budget's window statistics (None: no budget) and the transparent pixels
    that keep their whole mark (None: none).

    Transparent pixels are never seen where alpha is honoured, but SSIM measured on the
    RGB counts them and a leak that drops alpha shows them: black, mostly, where the
    mark costs SSIM most. They keep the whole mark (and carry it into such leaks) when
    the frame's prediction with it, uncapped (`table` of chips of `level`), stays at
    ``params.min_ssim``; else they fade like any other near-black pixel.
    """
    if params.min_ssim <= 0:
        return None, clear
    if clear is not None:
        stats = window_statistics(grey, activity, unit=unit, clear=clear)
        predicted = predicted_ssim(
            table,
            stats,
            share=local_share(level),
            noise=_rounding_noise(unit),
            fade=params.black_fade,
        )
        if predicted >= params.min_ssim:
            return stats, clear
    return window_statistics(grey, activity, unit=unit), None


def _budgeted_table(
    table: np.ndarray,
    stats: WindowStatistics | None,
    params: CodecParams,
    level: int,
    unit: float,
) -> np.ndarray:
    """`table` capped by the SSIM budget for chips of `level` (:mod:`watermark._ssim_budget`);
    `stats` None (``params.min_ssim`` 0): `table`."""
    if stats is None:
        return table
    return ssim_capped_table(
        table,
        stats,
        share=local_share(level),
        noise=_rounding_noise(unit),
        min_ssim=params.min_ssim,
        floor=params.flat_rms,
        fade=params.black_fade,
    )


def embed_frame(
    image: np.ndarray,
    key: bytes,
    payload: int,
    *,
    strength: float = 1.0,
    params: CodecParams = DEFAULT_PARAMS,
    estimate_margin: bool = True,
    level: int | None = None,
) -> EmbedResult:
    """Mark one frame with a delivery id.

    The carrier tile (see :func:`mark_pattern`) is repeated from the top-left corner,
    scaled by a local-activity mask (``params.flat_rms`` grey levels in flat regions, more
    on edges and texture, up to ``params.target_psnr`` overall, see
    :func:`watermark._mask.masking_map`) whose largest amplitudes are capped where the
    frame's predicted SSIM would fall under ``params.min_ssim`` (see
    :mod:`watermark._ssim_budget`) and which fades toward black on flat pixels darker
    than ``params.black_fade`` (:func:`watermark._mask.black_fade`; wholly transparent
    pixels keep their mark when the budget has room for it), and added equally to R, G
    and B so that chroma is unchanged.

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray
        RGB(A) order; uint8, uint16, or float32 in [0, 1]. Alpha passes through bit-exact.
    key : bytes
        Studio secret (>= 16 bytes).
    payload : int
        Delivery id, 0 <= payload < 2**32.
    strength : float
        Multiplier on the mark amplitude (the SSIM budget's, which holds at 1), in [0, 4];
        0 returns the input unchanged.
    params : CodecParams
        Masking and strength table.
    estimate_margin : bool
        Compute :attr:`EmbedResult.margin` (a simulated leak and a trace; costly on every
        frame of a clip); False leaves it NaN.
    level : int, optional
        Chip DWT level, 1 to 5 (chips of ``2**level`` px). None chooses: the size rule
        (:func:`watermark._carrier.chip_level`), except that a frame with a short side of
        720 to 999 px whose 4-px mark is weak is marked with 8-px chips when these keep
        more than 1.5 times its margin (flat cel frames, whose 4-px chips WebP smooths
        out). That choice needs `estimate_margin`. A clip passes its frames' level so that
        every frame carries the same chips.

    Returns
    -------
    EmbedResult

    Raises
    ------
    TypeError, ValueError
        On a bad image, key, payload, strength or level.

    Examples
    --------
    >>> img = np.full((64, 64, 3), 128, np.uint8)
    >>> out = embed_frame(img, b"k" * 32, 7)
    >>> out.image.dtype, out.image.shape, out.level
    (dtype('uint8'), (64, 64, 3), 2)
    """
    arr = check_image(image)
    if not 0.0 <= float(strength) <= 4.0:
        raise ValueError(f"strength must be in [0, 4], got {strength}")
    if level is not None and (isinstance(level, bool) or level not in range(1, 6)):
        raise ValueError(f"level must be an integer in [1, 5], got {level!r}")
    chosen = chip_level(arr.shape) if level is None else int(level)
    tile = mark_pattern(key, payload, level=chosen)  # checks the key and payload first
    if strength == 0.0:
        return EmbedResult(image=arr.copy(), psnr_y=float("inf"), level=chosen, margin=0.0)
    colour = arr.ndim == 3 and arr.shape[2] >= 3
    rgb = np.ascontiguousarray(arr[..., :3]) if colour else arr.reshape(arr.shape[:2])
    # OpenCV's colour conversion takes no float64; the grey is float32 either way
    grey = rgb.astype(np.float32) if rgb.dtype == np.float64 else rgb
    if colour:
        grey = cv2.cvtColor(grey, cv2.COLOR_RGB2GRAY)
    unit = storage_scale(arr.dtype)
    activity = activity_map(grey, unit=unit)
    raw = _amplitude_table(activity, params)
    stats, clear = _frame_statistics(
        grey, activity, transparent_pixels(arr), raw, params, chosen, unit
    )
    host = _Host(arr, rgb, grey, activity, clear)
    table = _budgeted_table(raw, stats, params, chosen, unit)
    result = _embed_at(host, table, tile, key, payload, strength, params, estimate_margin)
    # A weak 4-px mark on a frame from 720 px up is also tried with 8-px chips, kept when
    # its margin is clearly larger: flat cel frames at 1280x720 then survive WebP 50.
    # Under 720 px 8-px chips cost the geometric attacks (rotation then crop, the
    # camcorder chain and the screenshot, on generated cel frames at 640x360), which the
    # margin does not see.
    if level is None and result.weak and len(chip_levels(arr.shape)) > 1:  # NaN: not weak
        tile = mark_pattern(key, payload, level=chosen + 1)
        table = _budgeted_table(raw, stats, params, chosen + 1, unit)
        larger = _embed_at(host, table, tile, key, payload, strength, params, estimate_margin)
        if larger.margin > _LARGER_CHIPS_GAIN * result.margin:
            result = larger
    return result


@dataclass(frozen=True, slots=True)
class _Host:
    """A frame to mark: the input, its RGB (or grey) pixels, luma, activity map and
    transparent pixels (:func:`watermark._mask.transparent_pixels`)."""

    arr: np.ndarray
    rgb: np.ndarray
    grey: np.ndarray
    activity: np.ndarray
    clear: np.ndarray | None


def _embed_at(
    host: _Host,
    table: np.ndarray,
    tile: np.ndarray,
    key: bytes,
    payload: int,
    strength: float,
    params: CodecParams,
    estimate_margin: bool,
) -> EmbedResult:
    """:func:`embed_frame` with the carrier `tile` (:func:`mark_pattern` of `payload`)
    and the amplitude `table`."""
    arr, rgb, grey, activity = host.arr, host.rgb, host.grey, host.activity
    level = (tile.shape[0] // TILE_CHIPS).bit_length() - 1
    unit = storage_scale(arr.dtype)
    colour = arr.ndim == 3 and arr.shape[2] >= 3
    gain = float(strength) * unit
    if rgb.dtype.kind == "f":
        mask = _mask_amplitude(
            grey, activity, table, fade=params.black_fade, unit=unit, clear=host.clear
        )
        marked = _add_float(rgb, cv2.multiply(_tiled(tile, grey.shape), mask, scale=gain))
        psnr = _psnr_y(rgb, marked, unit)
        half_luma = _half_size(luma(marked)) if estimate_margin else None
    else:
        marked, psnr, half_luma = _mark_integer(
            rgb,
            grey,
            activity,
            table,
            tile,
            _dither_tile(key),
            gain,
            fade=params.black_fade,
            clear=host.clear,
            want_half=estimate_margin,
        )
    out = marked
    if colour and arr.shape[2] == 4:
        out = np.dstack([marked, arr[..., 3:]])
    elif arr.ndim == 3 and not colour:
        out = marked.reshape(arr.shape)
    if half_luma is None:
        return EmbedResult(image=out, psnr_y=psnr, level=level, margin=float("nan"))
    leak_chip = 2**level * half_luma.shape[1] / arr.shape[1]
    margin = _margin(half_luma, leak_chip, key, payload)
    if level == _WEBP_LEVEL and _flat_share(activity, table) >= _WEBP_FLAT_SHARE:
        margin = min(margin, _webp_margin(luma(marked), float(2**level), key, payload))
    return EmbedResult(image=out, psnr_y=psnr, level=level, margin=margin)


# Rows per strip are chosen so that one float32 strip is about this many bytes: the
# strip's pattern, mask, step and marked rows then stay in the CPU cache between steps.
_STRIP_BYTES = 1 << 18


def _strip_rows(width: int, period: int) -> int:
    """Rows per strip: a power of two (so it divides the carrier's period and keeps 2x2
    blocks whole) near ``_STRIP_BYTES`` of float32, between 8 and `period`."""
    budget = max(8, min(period, 512, _STRIP_BYTES // (4 * width)))
    return 1 << (budget.bit_length() - 1)


def _mark_integer(
    rgb: np.ndarray,
    grey: np.ndarray,
    activity: np.ndarray,
    table: np.ndarray,
    tile: np.ndarray,
    dither: np.ndarray,
    gain: float,
    *,
    fade: float,
    clear: np.ndarray | None,
    want_half: bool,
) -> tuple[np.ndarray, float, np.ndarray | None]:
    """Add the masked, dithered mark to an integer image, strip by strip.

    Every step is per pixel, so strips give exactly the whole-frame result; they keep
    the working set in cache and the temporaries small (8K frames).

    Parameters
    ----------
    rgb : (H, W, 3) or (H, W) uint8 or uint16 ndarray
    grey : (H, W) ndarray
        Its luma, same dtype.
    activity : (H, W) uint8 ndarray
        :func:`watermark._mask.activity_map` of `grey`.
    table : (256,) float32 ndarray
        Amplitude per activity level, grey levels.
    tile, dither : 2-D float32 ndarray
        Carrier tile and keyed dither tile, both repeated from the top-left corner.
    gain : float
        Strength times storage units per grey level.
    fade : float
        Grey level below which the mask fades toward black on flat pixels
        (:func:`watermark._mask.black_fade`); 0: no fade.
    clear : (H, W) uint8 ndarray or None
        Pixels that never fade (:func:`watermark._mask.transparent_pixels`).
    want_half : bool
        Also return the marked luma at half size (see :func:`_half_size`).

    Returns
    -------
    marked : ndarray, like `rgb`
    psnr_y : float
        Exact luma PSNR of `marked` against `rgb`, dB.
    half_luma : float32 ndarray or None
        ``grey + step`` (0..255 scale) at half size: the luma change is the step wherever
        nothing saturated, which is close enough for the margin estimate.
    """
    h, w = grey.shape
    unit = storage_scale(rgb.dtype)
    depth = cv2.CV_16U if rgb.dtype == np.uint16 else cv2.CV_8U
    colour = rgb.ndim == 3
    period = tile.shape[0]
    rows = _strip_rows(w, period)
    # one full-width period of each tile, made once: every strip's rows are then a view
    # (the strips start at multiples of `rows`, which divides the carrier's period; the
    # dither's prime period is covered by `rows` extra rows)
    pattern_rows = _tiled(tile, (min(h, period), w))
    dither_rows = _tiled(dither, (min(h, dither.shape[0] + rows), w))
    marked = np.empty_like(rgb)
    # the half-size luma is made strip by strip when it is an exact 2x2 reduction
    # (each output pixel then depends on its own block only); else from the whole frame
    by_strip = h % 2 == 0 and w % 2 == 0 and _half_shape((h, w)) == (h // 2, w // 2)
    marked_luma = np.empty((h, w), np.float32) if want_half and not by_strip else None
    half = np.empty((h // 2, w // 2), np.float32) if want_half and by_strip else None
    squared = 0.0
    for top in range(0, h, rows):
        band = slice(top, min(h, top + rows))
        n = band.stop - top
        pattern = pattern_rows[top % period : top % period + n]
        start = top % dither.shape[0]
        dither_band = dither_rows[start : start + n]
        mask = _mask_amplitude(
            grey[band],
            activity[band],
            table,
            fade=fade,
            unit=unit,
            clear=None if clear is None else clear[band],
        )
        # pattern x mask x gain, rounded with a keyed dither: flat fills get fine grain
        # instead of +-1 blobs with hard contours, and sub-level marks are kept on average
        exact = cv2.multiply(pattern, mask, dst=mask, scale=gain)
        # the rounded step split into its positive and negative parts (one is 0), so that
        # x + step saturates with two same-type integer ops: round(-v) == -round(v), and
        # (-v) + (-d) == -(v + d) exactly in floating point
        up = cv2.add(exact, dither_band, dtype=depth)
        down = cv2.addWeighted(exact, -1.0, dither_band, -1.0, 0.0, dtype=depth)
        src, out = rgb[band], marked[band]
        up_c, down_c = (up, down)
        if colour:
            up_c = cv2.cvtColor(up, cv2.COLOR_GRAY2RGB)
            down_c = cv2.cvtColor(down, cv2.COLOR_GRAY2RGB)
        cv2.add(src, up_c, dst=out)
        cv2.subtract(out, down_c, dst=out)
        flat = (n, -1)  # countNonZero takes one channel
        clipped = cv2.countNonZero(cv2.subtract(up_c, cv2.bitwise_not(src)).reshape(flat)) or (
            cv2.countNonZero(cv2.subtract(down_c, src).reshape(flat))
        )
        if clipped:  # each channel moved by at most the step and in its direction
            change = cv2.absdiff(out, src).astype(np.float32)
            if colour:
                change = cv2.transform(change, LUMA_WEIGHTS.reshape(1, 3))
            squared += cv2.norm(change, cv2.NORM_L2SQR)
        else:  # every channel moved by the step, and so did the luma (weights sum to 1)
            squared += cv2.norm(up, cv2.NORM_L2SQR) + cv2.norm(down, cv2.NORM_L2SQR)
        if want_half:
            # integers in float32: exact in any order
            lum = cv2.add(grey[band], up, dtype=cv2.CV_32F)
            cv2.subtract(lum, down, dst=lum, dtype=cv2.CV_32F)
            if unit != 1.0:
                lum *= np.float32(1.0 / unit)
            if half is not None:
                reduced = cv2.resize(lum, (w // 2, n // 2), interpolation=cv2.INTER_AREA)
                half[top // 2 : (top + n) // 2] = reduced
            else:
                marked_luma[band] = lum
    mse = squared / (unit * unit) / (h * w)
    psnr = float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))
    return marked, psnr, _half_size(marked_luma) if marked_luma is not None else half


def _half_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of the reference leak: half of each side, at least 16 px."""
    return max(16, shape[0] // 2), max(16, shape[1] // 2)


def _half_size(y: np.ndarray) -> np.ndarray:
    """`y` resized to :func:`_half_shape` by area averaging."""
    h, w = _half_shape(y.shape[:2])
    return cv2.resize(y, (w, h), interpolation=cv2.INTER_AREA)


def _margin(half: np.ndarray, leak_chip: float, key: bytes, payload: int) -> float:
    """Trace score after the reference leak over the verdict threshold.

    The reference leak is the frame at 1/2 size, its luma clipped to ``_REFERENCE_LEVELS``
    (what brightness +-25 clips, without moving the rest), JPEG 70.

    Parameters
    ----------
    half : (H, W) float32 ndarray
        Luma of the marked frame at half size (:func:`_half_size`), 0..255 scale.
    leak_chip : float
        Chip size in `half`, in pixels.
    """
    small = np.clip(np.rint(half), *_REFERENCE_LEVELS).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, _REFERENCE_JPEG])
    leak = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) if ok else small
    score = self_score(leak, key, payload, chip_px=max(1.5, leak_chip))
    return max(0.0, score) / accusation_threshold()


def _flat_share(activity: np.ndarray, table: np.ndarray) -> float:
    """Share of pixels, in [0, 1], whose amplitude (``table[activity]``) is the flat-fill
    floor, the table's smallest value."""
    # the histogram masking_table takes too: OpenCV's is a fifth of np.bincount's time
    counts = cv2.calcHist([activity], [0], None, [table.size], [0, table.size]).ravel()
    return float(counts[table <= table.min()].sum()) / activity.size


def _webp_margin(y: np.ndarray, chip_px: float, key: bytes, payload: int) -> float:
    """Trace score after WebP ``_REFERENCE_WEBP`` of the marked luma `y` (full size,
    float32, 0..255; chips of `chip_px` pixels) over the verdict threshold."""
    grey = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".webp", grey, [cv2.IMWRITE_WEBP_QUALITY, _REFERENCE_WEBP])
    leak = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) if ok else grey
    score = self_score(leak, key, payload, chip_px=chip_px)
    return max(0.0, score) / accusation_threshold()


def _add_float(rgb: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Add `delta` to every colour channel of a float image, clipped to [0, 1]."""
    d = delta[..., None] if rgb.ndim == 3 else delta
    return to_storage(rgb.astype(np.float32) + d, rgb.dtype)


def _luma_change_squared(before: np.ndarray, after: np.ndarray) -> float:
    """Sum of squared BT.601 luma changes between two images (storage units squared)."""
    diff = cv2.subtract(after, before, dtype=cv2.CV_32F)
    if diff.ndim == 3:
        diff = cv2.transform(diff, LUMA_WEIGHTS.reshape(1, 3))
    return float(cv2.norm(diff, cv2.NORM_L2SQR))


_STRIP_ROWS = 512  # rows per strip: bounds the float copies of 8K frames


def _psnr_y(before: np.ndarray, after: np.ndarray, unit: float) -> float:
    """Exact luma PSNR (0..255 scale) between two images of the same dtype."""
    total = 0.0
    for top in range(0, before.shape[0], _STRIP_ROWS):  # strips, not pixels: bounded memory
        rows = slice(top, top + _STRIP_ROWS)
        total += _luma_change_squared(before[rows], after[rows])
    mse = total / (unit * unit) / (before.shape[0] * before.shape[1])
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))
