"""Perceptual masking: how much mark each pixel can hide, from local activity.

Cel frames are the hard case: large flat fills bordered by thin lines. Lines mask a mark
only on and right beside themselves, so activity is measured per pixel over a 5x5
neighbourhood, never spread to the flat fill around them.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["ACTIVITY_STEPS", "activity_map", "masking_map"]

ACTIVITY_STEPS = 4  # fixed point: activity is stored in quarter grey levels per pixel
_WINDOW = 5  # px


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
    gx = cv2.absdiff(g[:, 1:], g[:, :-1])
    gy = cv2.absdiff(g[1:, :], g[:-1, :])
    gx = cv2.copyMakeBorder(gx, 0, 0, 0, 1, cv2.BORDER_REPLICATE)
    gy = cv2.copyMakeBorder(gy, 0, 1, 0, 0, cv2.BORDER_REPLICATE)
    s = cv2.addWeighted(gx, float(ACTIVITY_STEPS), gy, float(ACTIVITY_STEPS), 0.0)
    return cv2.blur(s, (_WINDOW, _WINDOW))


def masking_map(
    grey: np.ndarray, *, floor: float, knee: float, ceiling: float, unit: float = 1.0
) -> np.ndarray:
    """Relative mark amplitude per pixel.

    ``m = clip(floor + activity / knee, floor, ceiling)``: flat regions get `floor`, edges and
    texture up to `ceiling` (a local-activity JND model).

    Parameters
    ----------
    grey : (H, W) ndarray
        Luma in storage units, see :func:`activity_map`.
    floor, knee, ceiling : float
        Amplitude in flat regions (relative), activity (grey levels per pixel) adding 1 to
        the amplitude, and the largest amplitude allowed.
    unit : float
        Storage units per grey level.

    Returns
    -------
    (H, W) float32 ndarray in [floor, ceiling].
    """
    levels = np.arange(256, dtype=np.float32) / ACTIVITY_STEPS
    table = np.clip(floor + levels / knee, floor, ceiling).astype(np.float32)
    return cv2.LUT(activity_map(grey, unit=unit), table)
