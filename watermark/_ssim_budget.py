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
    loss_lum = s / (2 mu**2 + s + C1),   s = f (1 - k) A**2 + d**2
    SSIM    ~= 1 - mean(loss_cs + loss_lum)

``q`` is the variance of the dithered rounding to integer storage (1/6 level**2 for 8-bit
frames, less for marks under a grey level, which round to 0 mostly), ``f`` the share of
the mark's variance that survives the clip at black (``Var(max(0, mu + v)) / A**2`` for a
Gaussian mark ``v``: 0.34 on black, 0.75 at ``mu = A``) and ``d`` the lift of the
window's mean by what clips there (``E[max(0, mu + v)] - mu``). On flat near-black
pixels ``A`` is the faded amplitude (:func:`watermark._mask.black_fade`), with the
window's mean standing for the pixel's luma; wholly transparent pixels, when they keep
their mark, have windows of their own (:attr:`WindowStatistics.clear`). On the corpus
and the generated frames of ``benchmarks/content.py`` the prediction is within -0.006
(clipped white paper, where it errs low) and +0.001 of the SSIM measured after marking.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.special import ndtr

from ._carrier import chip_bump
from ._mask import ACTIVITY_STEPS
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
# The spread histogram's mean bins, for the fade toward black: 1 level wide from black,
# the last holding _DARK_BINS - 1 and up (the fade is modelled up to that level).
_DARK_BINS = 9
_FLOOR_BETA = -0.5 + 1.0 / 1024.0  # see window_statistics
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
# room for, the gain may still cost this much over the floor's prediction: capping such
# a frame's picture down to the floor would cost its mark much and win its SSIM little.
# Since the mark fades toward black (watermark._mask.black_fade) the floor costs at most
# about 0.015 (flat fills of grey 8), so 0.981 binds for every frame; before, black
# letterbox bars cost up to 0.03 at the floor, and capping a 1080p frame letterboxed by
# a quarter down to it won 0.967 -> 0.970 for a margin of 2.80 -> 2.26.
_GAIN_ALLOWANCE = 0.003


@dataclass(frozen=True, slots=True)
class WindowStatistics:
    """Joint histograms of a frame's SSIM windows, as shares of the windows counted.

    Attributes
    ----------
    spread : (256, 9, 64) float64 ndarray
        Share of windows by the activity level at their centre
        (:func:`watermark._mask.activity_map`), the host's local mean (1-level bins from
        black, the last holding 8 and up) and its local standard deviation (1-level bins
        from 0, the last holding 63 and up).
    mean : (256, 64) float64 ndarray
        The same by activity level and the host's local mean (0..255 scale), 1-level bins
        from black (the last holds 63 and up), for the windows centred on pixels that may
        fade toward black.
    clear : (256, 64) float64 ndarray or None
        As `mean`, for the windows centred on pixels that never fade (transparent ones,
        :func:`watermark._mask.transparent_pixels`; `spread` counts them in its last mean
        bin); None: there are none.
    """

    spread: np.ndarray
    mean: np.ndarray
    clear: np.ndarray | None = None


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
    grey: np.ndarray,
    activity: np.ndarray,
    *,
    unit: float = 1.0,
    clear: np.ndarray | None = None,
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
    clear : (H, W) uint8 ndarray, optional
        255 on pixels whose mark never fades toward black (the `clear` of
        :func:`watermark._mask.black_fade`), 0 elsewhere.

    Returns
    -------
    WindowStatistics
        Over the windows that lie wholly inside the frame (as ssim_y averages them); on
        frames above 2**18 pixels, over every other window of 32 evenly spread rows.
    """
    h, w = grey.shape
    if h < _WIN or w < _WIN:  # no whole window: nothing for ssim_y to average
        return WindowStatistics(np.zeros((256, _DARK_BINS, _BINS)), np.zeros((256, _BINS)))
    if h * w <= _WHOLE_PIXELS or h < 2 * _ROWS:
        g = grey.astype(np.float32)
        if unit != 1.0:
            g *= np.float32(1.0 / unit)
        inside = (slice(_HALO, h - _HALO), slice(_HALO, w - _HALO))
        mu = cv2.GaussianBlur(g, (_WIN, _WIN), _SIGMA, borderType=cv2.BORDER_REFLECT)[inside]
        second = cv2.GaussianBlur(g * g, (_WIN, _WIN), _SIGMA, borderType=cv2.BORDER_REFLECT)
        second = second[inside]
        act = activity[inside]
        centre = None if clear is None else clear[inside]
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
        centre = None if clear is None else clear[rows[:, _HALO], cols]
    act = np.ascontiguousarray(act)
    mu = np.ascontiguousarray(mu)
    variance = cv2.max(cv2.subtract(second, cv2.multiply(mu, mu)), 0.0)
    # 1-level bins, each window counted at its bin's lower edge (the model's worse side):
    # |x - 0.5 + 1/1024| rounded is floor(x) for x >= 0 (but within 1/1024 under the
    # next level), saturated at 255, then capped; the 1/1024 keeps flat fills, whose
    # mean is an exact level, off the half-way ties that round to even
    sd_bin = cv2.min(cv2.convertScaleAbs(cv2.sqrt(variance), beta=_FLOOR_BETA), _BINS - 1)
    mu_bin = cv2.min(cv2.convertScaleAbs(cv2.max(mu, 0.0), beta=_FLOOR_BETA), _BINS - 1)
    ranges = [0, 256, 0, _BINS]
    dark_bin = cv2.min(mu_bin, _DARK_BINS - 1)
    faded = None
    if centre is not None:
        centre = np.ascontiguousarray(centre)
        # windows centred on clear pixels go to the spread histogram's last mean bin,
        # which never fades, and to a mean histogram of their own
        cv2.max(dark_bin, cv2.min(centre, _DARK_BINS - 1), dst=dark_bin)
        faded = cv2.bitwise_not(centre)
    bins, dark_ranges = [256, _DARK_BINS, _BINS], [0, 256, 0, _DARK_BINS, 0, _BINS]
    by_spread = cv2.calcHist([act, dark_bin, sd_bin], [0, 1, 2], None, bins, dark_ranges)
    by_mean = cv2.calcHist([act, mu_bin], [0, 1], faded, [256, _BINS], ranges)
    by_clear = None
    if centre is not None:
        by_clear = cv2.calcHist([act, mu_bin], [0, 1], centre, [256, _BINS], ranges)
        by_clear = by_clear.astype(np.float64) / max(1, act.size)
    n = max(1, act.size)
    return WindowStatistics(
        by_spread.astype(np.float64) / n, by_mean.astype(np.float64) / n, by_clear
    )


@functools.cache
def _fade_squares(fade: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Squared share of its amplitude a window keeps near black
    (:func:`watermark._mask.black_fade`, the window's mean standing for the pixel's luma).

    Returns
    -------
    by_spread : (256, 9) float64 ndarray
        Per activity level and mean bin of :attr:`WindowStatistics.spread`.
    by_mean : (256, 64) float64 ndarray
        Per activity level and mean bin of :attr:`WindowStatistics.mean`.
    faded : int
        Activity levels under this one fade in some bin; the others never do.
    """
    activity = np.arange(256, dtype=np.float64)[:, None] / ACTIVITY_STEPS  # grey levels
    if fade <= 0.0:
        return np.ones((256, _DARK_BINS)), np.ones((256, _BINS)), 0

    def squares(bins: int) -> np.ndarray:
        # at the bins' middles: a window's pixels sit on both sides of its mean, and the
        # brighter ones keep more of the mark (at the lower edge the loss came out 10 %
        # low on dim renders whose fills sit on every level from 4 to 8)
        mean = np.arange(bins, dtype=np.float64)[None, :] + 0.5
        share = np.minimum(1.0, (mean + activity + 0.5) / fade) ** 2
        share.flags.writeable = False
        return share

    faded = int(np.count_nonzero(squares(1)[:, 0] < 1.0))
    return squares(_DARK_BINS), squares(_BINS), faded


def _structure(amp2: np.ndarray, spread: np.ndarray, share: float, noise: float) -> np.ndarray:
    """Contrast-structure loss of a mark of amplitude**2 `amp2` on windows of local
    standard deviation `spread` (grey levels); broadcast."""
    # dithered rounding of a mark under a grey level mostly gives 0, and +-1 only as
    # often as the mark's magnitude (about 0.8 of its RMS)
    varying = share * amp2 + np.minimum(noise, 0.8 * np.sqrt(amp2))
    return varying / (2.0 * spread * spread + varying + _C2)


def _luminance(amp2: np.ndarray, mean: np.ndarray, share: float) -> np.ndarray:
    """Luminance loss of a mark of amplitude**2 `amp2` on windows of local mean `mean`
    (grey levels); broadcast."""
    amp = np.sqrt(np.maximum(amp2, 1e-12))
    # a Gaussian mark v of RMS amp on luma `mean`, clipped at black: max(0, mean + v)
    z = mean / amp
    pdf, sf = np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi), ndtr(-z)
    # the share of the mark's variance that survives the clip, Var(max(-z, v / amp)),
    # written so that nothing cancels as z grows (it tends to 1)
    kept = 1.0 - sf + z * z * sf * (1.0 - sf) - z * pdf * (1.0 - 2.0 * sf) - pdf * pdf
    # and the lift of the window's mean by what clips: amp * (pdf(z) - z * sf(z))
    lift = amp * (pdf - z * sf)
    shift = kept * (1.0 - share) * amp2 + lift * lift
    return shift / (2.0 * mean * mean + shift + _C1)


_LEVELS = np.arange(_BINS, dtype=np.float64)  # bins' lower edges, grey levels


def _level_losses(
    amp2: np.ndarray,
    levels: np.ndarray | slice,
    stats: WindowStatistics,
    share: float,
    noise: float,
    fade: float,
) -> np.ndarray:
    """Loss, as a share of all windows, of the windows at each activity level of `levels`
    (a slice) marked with amplitudes**2 `amp2` (one per level)."""
    by_spread, by_mean, faded = _fade_squares(fade)
    a2 = np.asarray(amp2, dtype=np.float64)
    span = range(256)[levels]
    # levels from `faded` up keep the whole mark in every mean bin: their structure loss
    # is per spread bin only (a tenth of the work, on every frame's prediction)
    split = min(max(faded - span.start, 0), len(span))
    near, far = a2[:split], a2[split:]
    dark = slice(span.start, span.start + split)
    structure_near = _structure(
        (near[:, None] * by_spread[dark])[:, :, None], _LEVELS, share, noise
    )
    structure_far = _structure(far[:, None], _LEVELS, share, noise)
    structure = np.concatenate(
        [
            np.sum(stats.spread[dark] * structure_near, axis=(1, 2)),
            np.sum(
                stats.spread[span.start + split : span.stop].sum(axis=1) * structure_far, axis=1
            ),
        ]
    )
    luminance = _luminance(a2[:, None] * by_mean[levels], _LEVELS, share)
    losses = structure + np.sum(stats.mean[levels] * luminance, axis=1)
    if stats.clear is not None:
        losses += np.sum(stats.clear[levels] * _luminance(a2[:, None], _LEVELS, share), axis=1)
    return losses


def predicted_ssim(
    table: np.ndarray,
    stats: WindowStatistics,
    *,
    share: float,
    noise: float,
    fade: float,
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
    fade : float
        Grey level below which the mark fades toward black on flat pixels
        (:func:`watermark._mask.black_fade`), up to 8; 0: no fade.

    Returns
    -------
    float
        Predicted mean SSIM (module notes), at most 1.
    """
    amp2 = np.asarray(table, dtype=np.float64) ** 2
    return 1.0 - float(np.sum(_level_losses(amp2, slice(None), stats, share, noise, fade)))


def ssim_capped_table(
    table: np.ndarray,
    stats: WindowStatistics,
    *,
    share: float,
    noise: float,
    min_ssim: float,
    floor: float,
    fade: float,
) -> np.ndarray:
    """`table` capped so that the predicted SSIM stays at `min_ssim` or above.

    Parameters
    ----------
    table : (256,) float32 ndarray
        Amplitude per activity level, non-decreasing, grey levels RMS.
    stats, share, noise, fade
        As in :func:`predicted_ssim`.
    min_ssim : float
        The SSIM to keep, in [0, 1]; where the table capped at `floor` is predicted
        under ``min_ssim + 0.003``, the SSIM to keep is that prediction less 0.003 (what
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
    per_level = _level_losses(t * t, slice(None), stats, share, noise, fade)
    if 1.0 - float(per_level.sum()) >= min_ssim:
        return table
    # A cap c changes the levels whose amplitude exceeds it, a suffix of the table (it
    # grows with activity): the loss is the prefix's, unchanged, plus the suffix's
    # windows at amplitude c. Levels from `faded` up never fade, so their part comes
    # from suffix sums of the histograms; the few under it are summed level by level.
    faded = _fade_squares(fade)[2]
    below = np.concatenate([[0.0], np.cumsum(per_level)])
    spread_above = np.cumsum(stats.spread[::-1], axis=0)[::-1]
    mean = stats.mean if stats.clear is None else stats.mean + stats.clear
    mean_above = np.cumsum(mean[::-1], axis=0)[::-1]

    def ssim_at(cap: float) -> float:
        first = int(np.searchsorted(t, cap, side="right"))
        if first >= t.size:
            return 1.0 - float(below[-1])
        c2 = cap * cap
        lost = float(below[first])
        if first < faded:
            lost += float(
                np.sum(
                    _level_losses(
                        np.full(faded - first, c2), slice(first, faded), stats, share, noise, fade
                    )
                )
            )
        rest = max(first, faded)
        if rest < t.size:
            s = _structure(np.array(c2), _LEVELS, share, noise)
            m = _luminance(np.array(c2), _LEVELS, share)
            lost += float(np.sum(spread_above[rest] * s) + mean_above[rest] @ m)
        return 1.0 - lost

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
    cap = np.float32(lo)
    if float(cap) > lo:  # rounded up to float32: one step down keeps the prediction
        cap = np.nextafter(cap, np.float32(0.0))
    return np.minimum(table, cap).astype(np.float32)
