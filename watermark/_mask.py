"""Perceptual masking: how much mark each pixel can hide, from local activity.

Cel frames are the hard case: large flat fills bordered by thin lines. Lines mask a mark
only on and right beside themselves, so activity is measured per pixel over a 5x5
neighbourhood, never spread to the flat fill around them.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

__all__ = [
    "ACTIVITY_STEPS",
    "activity_map",
    "black_fade",
    "masking_map",
    "masking_table",
    "transparent_pixels",
]

ACTIVITY_STEPS = 4  # fixed point: activity is stored in quarter grey levels per pixel
_WINDOW = 5  # px
_STRIP_PIXELS = 1 << 18  # pixels per strip of the activity map


def activity_map(grey: np.ndarray, *, unit: float = 1.0) -> np.ndarray:
    """Local mean absolute luma gradient, in quarter grey levels per pixel.

    Parameters
    ----------
    grey : (H, W) uint8, uint16 or float32 ndarray
        Luma in storage units.
    unit : float
        Storage units per grey level of the 0..255 scale (1 for uint8, 257 for uint16,
        1/255 for float in [0, 1]).

    Returns
    -------
    (H, W) uint8 ndarray
        ``4 x`` the mean of ``|dY/dx| + |dY/dy|`` (grey levels per pixel) over a 5x5
        window, saturated at 255 (about 64 levels per pixel, far above any mask ceiling).
    """
    g = grey
    if g.dtype != np.uint8:
        g = cv2.convertScaleAbs(grey.astype(np.float32), alpha=1.0 / unit)
    h, w = g.shape
    out = np.empty((h, w), np.uint8)
    # strips with a halo of half a window: every output pixel sees the rows the whole
    # frame would give it (and the frame's own border at its top and bottom), while the
    # temporaries stay small enough for the CPU cache
    rows = max(8, _STRIP_PIXELS // w)
    halo = _WINDOW // 2
    for top in range(0, h, rows):
        lo, hi = max(0, top - halo), min(h, top + rows + halo)
        part = g[lo:hi]
        gx = cv2.copyMakeBorder(
            cv2.absdiff(part[:, 1:], part[:, :-1]), 0, 0, 0, 1, cv2.BORDER_REPLICATE
        )
        below = min(h, hi + 1)  # |dY/dy| of row r needs row r + 1; the last row repeats
        gy = cv2.absdiff(g[lo + 1 : below], g[lo : below - 1])
        if below - 1 < hi:
            gy = cv2.copyMakeBorder(gy, 0, 1, 0, 0, cv2.BORDER_REPLICATE)
        s = cv2.addWeighted(gx, float(ACTIVITY_STEPS), gy, float(ACTIVITY_STEPS), 0.0)
        n = min(rows, h - top)
        out[top : top + n] = cv2.blur(s, (_WINDOW, _WINDOW))[top - lo : top - lo + n]
    return out


@functools.cache
def _fade_table(fade: float) -> np.ndarray:
    """(256,) float32, read-only: ``min(1, (i + 0.5) / fade)`` for i = 0..255."""
    table = np.minimum(1.0, (np.arange(256) + 0.5) / fade).astype(np.float32)
    table.flags.writeable = False
    return table


def black_fade(
    grey: np.ndarray,
    activity: np.ndarray,
    *,
    fade: float,
    unit: float = 1.0,
    clear: np.ndarray | None = None,
) -> np.ndarray | None:
    """Share of its mask amplitude each pixel keeps near black.

    SSIM's luminance term counts a shift of the local mean against the mean's square, so
    a grey level of mark on a near-black fill (letterbox bars, fades, night skies) costs
    a frame far more SSIM than the same mark anywhere else, and half of it clips at black
    anyway. Flat pixels darker than `fade` keep a linearly smaller share; activity counts
    as brightness, so that ink lines and dark texture keep all of it.

    Parameters
    ----------
    grey : (H, W) uint8, uint16 or float32 ndarray
        Luma in storage units.
    activity : (H, W) uint8 ndarray
        Its :func:`activity_map`.
    fade : float
        Grey level (0..255 scale) from which pixels keep all of their amplitude; 0 or
        less turns the fade off.
    unit : float
        Storage units per grey level of the 0..255 scale.
    clear : (H, W) uint8 ndarray, optional
        255 on pixels that keep all of their amplitude whatever their luma, 0 elsewhere
        (:func:`transparent_pixels`: nobody sees them, and they carry the mark of
        sprites whose surround is transparent black); None: none.

    Returns
    -------
    (H, W) float32 ndarray in (0, 1], or None
        ``min(1, (Y + a + 0.5) / fade)`` for luma ``Y`` rounded to grey levels and
        activity ``a`` in grey levels per pixel (rounded together), 1 on `clear` pixels;
        None when every pixel keeps all of it (`fade` off, or no pixel darker than
        ``fade - 0.5``).
    """
    if fade <= 0.0 or cv2.minMaxLoc(grey)[0] >= (fade - 0.5) * unit:
        return None
    g = grey if grey.dtype == np.uint8 else cv2.convertScaleAbs(grey, alpha=1.0 / unit)
    darkness = cv2.addWeighted(g, 1.0, activity, 1.0 / ACTIVITY_STEPS, 0.0, dtype=cv2.CV_8U)
    if clear is not None:
        cv2.bitwise_or(darkness, clear, dst=darkness)
    return cv2.LUT(darkness, _fade_table(float(fade)))


def transparent_pixels(image: np.ndarray) -> np.ndarray | None:
    """Where an RGBA frame is wholly transparent.

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray
        uint8, uint16 or float32; alpha is the fourth channel.

    Returns
    -------
    (H, W) uint8 ndarray or None
        255 where alpha is 0, else 0; None when the frame has no alpha channel or no
        pixel with alpha 0.
    """
    if image.ndim != 3 or image.shape[2] != 4:
        return None
    alpha = np.ascontiguousarray(image[..., 3])
    if alpha.dtype == np.float64:
        alpha = alpha.astype(np.float32)
    clear = cv2.compare(alpha, 0, cv2.CMP_EQ)
    return clear if cv2.countNonZero(clear) else None


def masking_map(
    grey: np.ndarray,
    *,
    flat: float,
    knee: float,
    ceiling: float,
    target_rms: float,
    unit: float = 1.0,
) -> np.ndarray:
    """Mark amplitude per pixel, in grey levels (0..255 scale), for a unit-RMS carrier.

    ``A = clip(flat + g * activity / knee, flat, ceiling)``. The flat-region amplitude is
    fixed by visibility, not by the image; the gain ``g`` spends what is left of the
    PSNR budget (``RMS(A) = target_rms``) on edges and texture, which mask it. A frame too
    flat to reach the budget stays at `flat` (its PSNR is then above the target).

    Parameters
    ----------
    grey : (H, W) ndarray
        Luma in storage units, see :func:`activity_map`.
    flat : float
        Amplitude in flat regions, grey levels RMS.
    knee : float
        Activity (grey levels per pixel) that adds ``g`` grey levels of amplitude.
    ceiling : float
        Largest amplitude, grey levels RMS.
    target_rms : float
        Mark RMS over the frame that the gain aims at, grey levels.
    unit : float
        Storage units per grey level.

    Returns
    -------
    (H, W) float32 ndarray in [flat, ceiling].
    """
    act = activity_map(grey, unit=unit)
    table = masking_table(act, flat=flat, knee=knee, ceiling=ceiling, target_rms=target_rms)
    return cv2.LUT(act, table)


def masking_table(
    activity: np.ndarray, *, flat: float, knee: float, ceiling: float, target_rms: float
) -> np.ndarray:
    """Amplitude for each activity level of one frame: ``masking_map == LUT(activity, table)``.

    Parameters
    ----------
    activity : (H, W) uint8 ndarray
        The frame's :func:`activity_map`.
    flat, knee, ceiling, target_rms : float
        As in :func:`masking_map`.

    Returns
    -------
    (256,) float32 ndarray in [flat, ceiling], grey levels per activity step.
    """
    hist = cv2.calcHist([activity], [0], None, [256], [0, 256]).ravel().astype(np.float64)
    hist /= activity.size
    levels = np.arange(256, dtype=np.float64) / ACTIVITY_STEPS

    def table(gain: float) -> np.ndarray:
        return np.clip(flat + gain * levels / knee, flat, ceiling)

    lo, hi = 0.0, 64.0
    if float(np.sqrt(hist @ table(hi) ** 2)) <= target_rms:
        lo = hi
    for _ in range(40):  # bisection: RMS grows monotonically with the gain
        mid = 0.5 * (lo + hi)
        if float(np.sqrt(hist @ table(mid) ** 2)) < target_rms:
            lo = mid
        else:
            hi = mid
    return table(lo).astype(np.float32)
