"""SSIM budget: predict what a mark costs a frame's SSIM before marking, and cap it.

The activity mask (:mod:`watermark._mask`) spends the PSNR budget where the luma gradient
is high. SSIM counts a mark against the host's local *variance*, not its gradient: on
low-contrast texture (dark frames, fine grain, soft renders) the mask puts several grey
levels where the host varies by a few, and the frame's SSIM falls to 0.97. This module
predicts the frame's mean SSIM from window statistics of the unmarked luma and finds the
largest amplitude cap that keeps the prediction at a floor; frames predicted above it
are not touched.

The model, per SSIM window (11 x 11 Gaussian, sigma 1.5 px, as
:func:`watermark._metrics.ssim_y`), for a mark of local amplitude ``A`` (grey levels RMS)
on a host of local mean ``mu`` and variance ``var``: the carrier's power splits into a
part that varies inside the window, share ``k`` (:func:`local_share`, set by the chip
size), and a part that shifts the window's mean. The first lowers the contrast-structure
term, the second the luminance term::

    loss_cs  = (k A**2 + q) / (2 var + k A**2 + q + C2)
    loss_lum = f (1 - k) A**2 / (2 mu**2 + (1 - k) A**2 + C1)
    SSIM    ~= 1 - mean(loss_cs + loss_lum)

``q`` is the variance of the dithered rounding to integer storage (1/6 level**2 for 8-bit
frames) and ``f = 1 - exp(-mu / A) / 2`` the share of the mark that near-black pixels keep
(the half below black clips away). On the corpus and the generated frames of
``benchmarks/content.py`` the prediction is within -0.006 (clipped white paper, where it
errs low) and +0.001 of the SSIM measured after marking.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from ._carrier import chip_bump
from ._metrics import _PEAK, _SSIM_K1, _SSIM_K2, _SSIM_SIGMA, _SSIM_WIN

__all__ = [
    "WindowStatistics",
    "local_share",
    "predicted_ssim",
    "ssim_capped_table",
    "window_statistics",
]

# SSIM's window and constants, as watermark._metrics.ssim_y measures it
_WIN, _SIGMA = _SSIM_WIN, _SSIM_SIGMA
_HALO = _WIN // 2
_C1 = (_SSIM_K1 * _PEAK) ** 2
_C2 = (_SSIM_K2 * _PEAK) ** 2
_BINS = 64  # standard deviation and mean bins, 1 grey level wide; the last holds the rest
# Frames above _WHOLE_PIXELS are sampled: the windows centred on _ROWS rows spread evenly
# down the frame, every other window along each row (neighbours overlap almost wholly).
# Against the whole frame the prediction moved by at most 0.0009 on the corpus stills
# and the generated frames of benchmarks/content.py (the most on the 565x513 sprites,
# whose figure fills a small part of the frame); it costs about a tenth of the whole
# frame's statistics at 1080p.
_WHOLE_PIXELS = 1 << 18
_ROWS = 32
_STEPS = 40  # bisection steps of the cap: far below a grey level's 1/10000
# The cap only lowers the mask's gain above the flat-fill floor; what the floor itself
# costs is out of its reach. Where the floor alone costs more SSIM than the budget leaves
# room for (black letterbox bars or fades, whose near-black windows SSIM's luminance term
# counts a grey level against heavily), the gain may still cost this much over the
# floor's prediction: capping such a frame's picture down to the floor would cost its
# mark much and win its SSIM little (a 1080p frame letterboxed by a quarter: 0.967 ->
# 0.970, margin 2.80 -> 2.26). The generated frames that need the cap cost at most 0.0124
# at the floor, so 1 - 0.981 binds for them.
_GAIN_ALLOWANCE = 0.006


@dataclass(frozen=True, slots=True)
class WindowStatistics:
    """Joint histograms of a frame's SSIM windows, as shares of the windows counted.

    Attributes
    ----------
    spread : (256, 64) float64 ndarray
        Share of windows by the activity level at their centre
        (:func:`watermark._mask.activity_map`) and the host's local standard deviation,
        in 1-level bins from 0 (the last bin holds 63 levels and up).
    mean : (256, 64) float64 ndarray
        The same by activity level and the host's local mean (0..255 scale), 1-level bins
        from black (the last holds 63 and up).
    """

    spread: np.ndarray
    mean: np.ndarray


@functools.cache
def local_share(level: int) -> float:
    """Share of the carrier's power that varies inside one SSIM window.

    For chips of ``2**level`` px, the power of a carrier with independent chips minus
    what is left after the window's Gaussian average: large for small chips, which vary
    within a window, small for large ones, which mostly shift its mean.

    Parameters
    ----------
    level : int
        Chip DWT level, 1 to 5.

    Returns
    -------
    float in (0, 1)

    Examples
    --------
    >>> round(local_share(2), 3), round(local_share(3), 3)
    (0.532, 0.205)
    """
    bump = chip_bump(level)  # independent chips add their powers
    periodic = np.pad(bump, _HALO, mode="wrap")
    smooth = cv2.GaussianBlur(periodic, (_WIN, _WIN), _SIGMA)[_HALO:-_HALO, _HALO:-_HALO]
    return 1.0 - float(np.sum(smooth * smooth) / np.sum(bump * bump))


def _sampled_rows(h: int) -> np.ndarray:
    """(rows, 11) indices: each sampled window's rows, centred on rows spread evenly from
    the first to the last whole window."""
    centres = np.linspace(_HALO, h - 1 - _HALO, _ROWS).astype(np.int64)
    return centres[:, None] + np.arange(-_HALO, _HALO + 1)


def window_statistics(
    grey: np.ndarray, activity: np.ndarray, *, unit: float = 1.0
) -> WindowStatistics:
    """SSIM window statistics of a frame's luma, for :func:`predicted_ssim`.

    Parameters
    ----------
    grey : (H, W) uint8, uint16 or float32 ndarray
        Luma in storage units.
    activity : (H, W) uint8 ndarray
        Its :func:`watermark._mask.activity_map`.
    unit : float
        Storage units per grey level of the 0..255 scale.

    Returns
    -------
    WindowStatistics
        Over the windows that lie wholly inside the frame (as ssim_y averages them); on
        frames above 2**18 pixels, over every other window of 32 evenly spread rows.
    """
    h, w = grey.shape
    if h < _WIN or w < _WIN:  # no whole window: nothing for ssim_y to average
        empty = np.zeros((256, _BINS))
        return WindowStatistics(empty, empty.copy())
    if h * w <= _WHOLE_PIXELS or h < 2 * _ROWS:
        g = grey.astype(np.float32)
        if unit != 1.0:
            g *= np.float32(1.0 / unit)
        inside = (slice(_HALO, h - _HALO), slice(_HALO, w - _HALO))
        mu = cv2.GaussianBlur(g, (_WIN, _WIN), _SIGMA, borderType=cv2.BORDER_REFLECT)[inside]
        second = cv2.GaussianBlur(g * g, (_WIN, _WIN), _SIGMA, borderType=cv2.BORDER_REFLECT)
        second = second[inside]
        act = activity[inside]
    else:
        rows = _sampled_rows(h)
        g = grey[rows.ravel()].astype(np.float32).reshape(_ROWS, _WIN, w)
        if unit != 1.0:
            g *= np.float32(1.0 / unit)
        # the window's vertical pass for the centre rows alone, then its horizontal pass
        kernel = cv2.getGaussianKernel(_WIN, _SIGMA, cv2.CV_32F)
        one = np.ones((1, 1), np.float32)
        cols = slice(_HALO, w - _HALO, 2)

        def window_mean(x: np.ndarray) -> np.ndarray:
            vertical = np.ascontiguousarray((kernel.T @ x)[:, 0])  # (_ROWS, W)
            smooth = cv2.sepFilter2D(vertical, -1, kernel, one, borderType=cv2.BORDER_REFLECT)
            return np.ascontiguousarray(smooth[:, cols])

        mu, second = window_mean(g), window_mean(g * g)
        act = activity[rows[:, _HALO], cols]
    act = np.ascontiguousarray(act)
    mu = np.ascontiguousarray(mu)
    variance = cv2.max(cv2.subtract(second, cv2.multiply(mu, mu)), 0.0)
    # 1-level bins, each window counted at its bin's lower edge (the model's worse side):
    # |x - 0.5| rounded to even is floor(x) for x >= 0, saturated at 255, then capped
    sd_bin = cv2.min(cv2.convertScaleAbs(cv2.sqrt(variance), beta=-0.5), _BINS - 1)
    mu_bin = cv2.min(cv2.convertScaleAbs(cv2.max(mu, 0.0), beta=-0.5), _BINS - 1)
    ranges = [0, 256, 0, _BINS]
    by_spread = cv2.calcHist([act, sd_bin], [0, 1], None, [256, _BINS], ranges)
    by_mean = cv2.calcHist([act, mu_bin], [0, 1], None, [256, _BINS], ranges)
    n = max(1, act.size)
    return WindowStatistics(by_spread.astype(np.float64) / n, by_mean.astype(np.float64) / n)


def _losses(amp2: np.ndarray, share: float, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """(contrast-structure, luminance) loss of amplitudes**2 `amp2` (N, 1) in each bin,
    (N, 64) each."""
    level = np.arange(_BINS, dtype=np.float64)[None, :]  # bins' lower edges
    varying = share * amp2 + noise
    structure = varying / (2.0 * level * level + varying + _C2)
    shift = (1.0 - share) * amp2
    kept = 1.0 - 0.5 * np.exp(-level / np.sqrt(np.maximum(amp2, 1e-12)))
    luminance = kept * shift / (2.0 * level * level + shift + _C1)
    return structure, luminance


def predicted_ssim(
    table: np.ndarray, stats: WindowStatistics, *, share: float, noise: float
) -> float:
    """Mean SSIM of the luma after marking with an amplitude table, predicted.

    Parameters
    ----------
    table : (256,) float ndarray
        Mark amplitude per activity level, grey levels RMS
        (:func:`watermark._mask.masking_table`, times the strength).
    stats : WindowStatistics
        The frame's :func:`window_statistics`.
    share : float
        :func:`local_share` of the chip level.
    noise : float
        Variance of the rounding to storage, grey levels squared (1/6 for 8-bit frames).

    Returns
    -------
    float
        Predicted mean SSIM (module notes), at most 1.
    """
    amp2 = np.asarray(table, dtype=np.float64)[:, None] ** 2
    structure, luminance = _losses(amp2, share, noise)
    return 1.0 - float(np.sum(stats.spread * structure) + np.sum(stats.mean * luminance))


def ssim_capped_table(
    table: np.ndarray,
    stats: WindowStatistics,
    *,
    share: float,
    noise: float,
    min_ssim: float,
    floor: float,
) -> np.ndarray:
    """`table` capped so that the predicted SSIM stays at `min_ssim` or above.

    Parameters
    ----------
    table : (256,) float32 ndarray
        Amplitude per activity level, non-decreasing, grey levels RMS.
    stats, share, noise
        As in :func:`predicted_ssim`.
    min_ssim : float
        The SSIM to keep, in [0, 1]; where the table capped at `floor` is predicted
        under ``min_ssim + 0.006``, the SSIM to keep is that prediction less 0.006 (what
        the floor costs is out of the cap's reach).
    floor : float
        The smallest cap, grey levels RMS (the flat-fill amplitude).

    Returns
    -------
    (256,) float32 ndarray
        `table` itself when its prediction already keeps the SSIM, else
        ``minimum(table, cap)`` with the largest cap that keeps it (to 1e-9 of the
        table's range).
    """
    t = np.asarray(table, dtype=np.float64)
    amp2 = t[:, None] ** 2
    structure, luminance = _losses(amp2, share, noise)
    per_level = np.sum(stats.spread * structure, axis=1) + np.sum(stats.mean * luminance, axis=1)
    if 1.0 - float(per_level.sum()) >= min_ssim:
        return table
    # A cap c changes the levels whose amplitude exceeds it, a suffix of the table (it
    # grows with activity): the loss is the prefix's, unchanged, plus the suffix's
    # windows at amplitude c, from suffix sums of the histograms.
    below = np.concatenate([[0.0], np.cumsum(per_level)])
    spread_above = np.cumsum(stats.spread[::-1], axis=0)[::-1]
    mean_above = np.cumsum(stats.mean[::-1], axis=0)[::-1]

    def ssim_at(cap: float) -> float:
        first = int(np.searchsorted(t, cap, side="right"))
        if first >= t.size:
            return 1.0 - float(below[-1])
        s, m = _losses(np.array([[cap * cap]]), share, noise)
        capped = float(spread_above[first] @ s[0] + mean_above[first] @ m[0])
        return 1.0 - float(below[first]) - capped

    lo, hi = float(floor), float(t.max())
    if hi <= lo:
        return table
    keep = min(min_ssim, ssim_at(lo) - _GAIN_ALLOWANCE)
    if 1.0 - float(per_level.sum()) >= keep:
        return table
    for _ in range(_STEPS):  # the prediction falls as the cap rises
        mid = 0.5 * (lo + hi)
        if ssim_at(mid) >= keep:
            lo = mid
        else:
            hi = mid
    return np.minimum(table, np.float32(lo)).astype(np.float32)
