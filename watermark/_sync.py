"""Synchronisation: whiten, fold the tiles of a leak, and find the tile grid by the pilot."""

from __future__ import annotations

import cv2
import numpy as np

from ._carrier import TILE_CHIPS

__all__ = [
    "WORK_PX",
    "chip_estimates",
    "estimate_chip_sizes",
    "fold_tiles",
    "pilot_scores",
    "whiten",
    "working_luma",
]

WORK_PX = 2  # pixels per chip in the working resolution


def working_luma(y: np.ndarray, chip_px: float) -> np.ndarray:
    """Resample luma so that chips of `chip_px` leak pixels become ``WORK_PX`` pixels.

    Parameters
    ----------
    y : (H, W) float32 ndarray
        Luma of the leak, 0..255 scale.
    chip_px : float
        Hypothesised chip size in the leak, in pixels.

    Returns
    -------
    (h, w) float32 ndarray with ``h ~ H * WORK_PX / chip_px``.
    """
    f = WORK_PX / chip_px
    h = max(1, round(y.shape[0] * f))
    w = max(1, round(y.shape[1] * f))
    interp = cv2.INTER_AREA if f < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(y, (w, h), interpolation=interp)


def whiten(y: np.ndarray) -> np.ndarray:
    """Remove the host's low frequencies and equalise local energy.

    ``r = y - G_s(y)``, then ``r / sqrt(G_n(r^2) + eps)`` clipped to +/-3: the host stops
    masking the chips and strong edges stop dominating the correlation.

    Parameters
    ----------
    y : (h, w) float32 ndarray, working resolution.

    Returns
    -------
    (h, w) float32 ndarray, roughly unit variance.
    """
    # sigmas in working pixels (a chip is WORK_PX): a sharp high-pass keeps the chips'
    # upper band, where a 1/f host is weakest; a tight energy window tracks texture.
    r = y - cv2.GaussianBlur(y, (0, 0), 0.5 * WORK_PX)
    energy = cv2.GaussianBlur(r * r, (0, 0), 1.0 * WORK_PX)
    r /= np.sqrt(energy + 0.25)
    return np.clip(r, -3.0, 3.0, out=r)


def fold_tiles(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum all tile periods of the working image into one period.

    Parameters
    ----------
    r : (h, w) float32 ndarray, whitened working image.

    Returns
    -------
    sums : (P, P) float64 ndarray, ``P = WORK_PX * TILE_CHIPS``
    counts : (P, P) float64 ndarray, how many pixels were summed into each cell.
    """
    p = WORK_PX * TILE_CHIPS
    h, w = r.shape
    ph, pw = -(-h // p) * p, -(-w // p) * p
    padded = np.zeros((ph, pw), np.float32)
    padded[:h, :w] = r
    sums = padded.reshape(ph // p, p, pw // p, p).sum(axis=(0, 2), dtype=np.float64)
    rows = np.bincount(np.arange(h) % p, minlength=p).astype(np.float64)
    cols = np.bincount(np.arange(w) % p, minlength=p).astype(np.float64)
    return sums, np.outer(rows, cols)


def chip_estimates(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Chip estimates at every sub-chip phase.

    Returns
    -------
    (WORK_PX, WORK_PX, T, T) float64 ndarray
        ``v[a, b]`` sums each chip's ``WORK_PX x WORK_PX`` cell starting at phase (a, b),
        divided by the square root of its pixel count (unit noise variance per chip).
    """
    q, t = WORK_PX, TILE_CHIPS
    out = np.empty((q, q, t, t))
    for a in range(q):  # q*q = 4 phases
        for b in range(q):
            s = np.roll(sums, (-a, -b), axis=(0, 1)).reshape(t, q, t, q).sum(axis=(1, 3))
            c = np.roll(counts, (-a, -b), axis=(0, 1)).reshape(t, q, t, q).sum(axis=(1, 3))
            out[a, b] = np.where(c > 0, s / np.sqrt(np.maximum(c, 1.0)), 0.0)
    return out


def pilot_scores(v: np.ndarray, pilot: np.ndarray) -> np.ndarray:
    """Normalised pilot correlation at every cyclic chip shift.

    Parameters
    ----------
    v : (..., T, T) float ndarray
        Chip estimates in leak order.
    pilot : (T, T) float ndarray
        Pilot signs on pilot chips, 0 elsewhere.

    Returns
    -------
    (..., T, T) float64 ndarray
        ``z[..., i, j] = sum_k v[k] p[k + (i, j)] / sqrt(sum_k v[k]^2 |p[k + (i, j)]|)``,
        i.e. the score of the hypothesis that leak chip k is tile chip k + (i, j).
    """
    fp = np.conj(np.fft.fft2(pilot))
    fa = np.conj(np.fft.fft2(np.abs(pilot)))
    num = np.fft.ifft2(np.conj(np.fft.fft2(v) * fp)).real
    den = np.fft.ifft2(np.conj(np.fft.fft2(v * v) * fa)).real
    return num / np.sqrt(np.maximum(den, 1e-12))


_ANALYSIS_PX = 512  # side of the centre crop analysed for the tile period
_MIN_PERIOD = 40.0  # px, in the analysed image
# Lattice points (in tile periods) where a tiled mark's autocorrelation peaks: both axes,
# both diagonals and the second harmonics. Content that repeats along one direction
# (hatching, bricks, tiles) rarely peaks on all of them at one period.
_LATTICE = ((1, 0), (0, 1), (1, 1), (1, -1), (2, 0), (0, 2), (2, 1), (1, 2), (2, -1), (-1, 2))
_PERIOD_STEP = 0.002  # relative spacing of the period grid


def _autocorrelation(y: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Baseline-free, overlap-normalised autocorrelation of a whitened centre crop.

    Returns the (2h', 2w') array (lags wrap around) and the crop's (h, w).
    """
    h, w = y.shape
    ch, cw = min(h, _ANALYSIS_PX), min(w, _ANALYSIS_PX)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = np.ascontiguousarray(y[top : top + ch, left : left + cw])
    r = crop - cv2.GaussianBlur(crop, (0, 0), 1.0)
    r /= np.sqrt(cv2.GaussianBlur(r * r, (0, 0), 2.0) + 0.25)
    np.clip(r, -3.0, 3.0, out=r)
    r -= r.mean()
    # zero-padded, so lags do not wrap onto the other side of the crop
    fh, fw = cv2.getOptimalDFTSize(2 * ch), cv2.getOptimalDFTSize(2 * cw)
    spec = np.fft.rfft2(r, s=(fh, fw))
    power = spec.real**2 + spec.imag**2
    # partial spectral whitening (power / smoothed power ** 0.5): a few strong content
    # periodicities (bricks, hatching) stop dominating the mark's broadband lattice
    envelope = cv2.GaussianBlur(power.astype(np.float32), (0, 0), 2.0)
    power /= np.sqrt(np.maximum(envelope, 1e-9))
    ac = np.fft.irfft2(power, s=(fh, fw)).astype(np.float32)
    ac /= max(float(ac[0, 0]), 1e-12)
    lag_y = np.minimum(np.arange(fh), fh - np.arange(fh))
    lag_x = np.minimum(np.arange(fw), fw - np.arange(fw))
    overlap = np.outer(
        np.clip(1.0 - lag_y / ch, 0.0, None), np.clip(1.0 - lag_x / cw, 0.0, None)
    ).astype(np.float32)
    ac = np.where(overlap > 0.25, ac / np.maximum(overlap, 0.25), 0.0).astype(np.float32)
    # subtract the smooth part: content correlation, not the mark's sharp lattice peaks
    ac -= cv2.blur(ac, (9, 9), borderType=cv2.BORDER_REFLECT)
    return ac, ch, cw


def _lattice_score(ac: np.ndarray, ch: int, cw: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean autocorrelation over the lattice points of every candidate period."""
    top = min(ch, cw) / 2.0
    if top <= _MIN_PERIOD:
        return np.empty(0, np.float32), np.empty(0, np.float32)
    periods = np.exp(np.arange(np.log(_MIN_PERIOD), np.log(top), _PERIOD_STEP)).astype(np.float32)
    total = np.zeros(periods.size, np.float32)
    count = np.zeros(periods.size, np.float32)
    fh, fw = ac.shape
    for i, j in _LATTICE:
        rows, cols = i * periods, j * periods
        inside = (np.abs(rows) < 0.75 * ch) & (np.abs(cols) < 0.75 * cw)
        vals = cv2.remap(
            ac,
            np.mod(cols, fw).reshape(1, -1).astype(np.float32),
            np.mod(rows, fh).reshape(1, -1).astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_WRAP,
        ).ravel()
        total += np.where(inside, vals, 0.0)
        count += inside
    return periods, total / np.maximum(count, 1.0)


def estimate_chip_sizes(y: np.ndarray, *, n_candidates: int = 4) -> list[float]:
    """Candidate chip sizes of a tiled mark, from the lattice of its autocorrelation.

    The mark repeats every 32 chips, so the autocorrelation of the whitened luma peaks on
    a square lattice whose spacing is the tile period. Every period on a fine grid is
    scored by the mean autocorrelation over its lattice points, at full and at 1/4
    resolution (small and large chips). No key is used: the candidates are geometry
    hypotheses that the pilot then scores.

    Parameters
    ----------
    y : (H, W) float32 ndarray
        Luma of the leak, 0..255 scale.
    n_candidates : int
        Peaks kept per analysis resolution.

    Returns
    -------
    list of float
        Chip sizes in leak pixels, strongest first within each resolution (may be empty).
    """
    out: list[float] = []
    for factor in (1, 4):
        small = y
        if factor > 1:
            size = (max(1, y.shape[1] // factor), max(1, y.shape[0] // factor))
            small = cv2.resize(y, size, interpolation=cv2.INTER_AREA)
        periods, score = _lattice_score(*_autocorrelation(small))
        if score.size < 3:
            continue
        inner = score[1:-1]
        peaks = np.flatnonzero((inner > score[:-2]) & (inner >= score[2:])) + 1
        peaks = peaks[np.argsort(score[peaks])[::-1][:n_candidates]]
        out.extend(float(periods[k]) * factor / TILE_CHIPS for k in peaks)
    return out
