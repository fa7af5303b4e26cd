"""Keyed chip-size scan: find an axis-aligned tile whose lattice the content hides.

Content that repeats on its own (hatching, brick, fine textures) can bury the tile
lattice in the autocorrelation, which knows nothing of the key. The pilot does not care:
for square, axis-aligned chips of ``c`` pixels the tile repeats every ``P = 32 c`` pixels,
so the chip tile's discrete spectrum is the leak's spectrum sampled at ``k / P``, and one
product with the pilot's spectrum scores every cyclic shift of the tile at once. Scanning
``c`` on a grid fine enough that those samples stay coherent over the analysed crop gives
the chip size the pilot likes best, at a fraction of a millisecond per size.
"""

from __future__ import annotations

import cv2
import numpy as np
import scipy.fft

from ._carrier import TILE_CHIPS
from ._sync import WORK_PX, whiten

__all__ = ["scan_chip_size", "scan_grid"]

SCAN_PX = 768  # side of the analysed centre crop, px
_CHUNK = 48  # chip sizes scored per vectorised batch (bounds memory)
_BAND = 2.0**0.5  # ratio of the largest to the smallest chip size scanned at one resolution


def scan_grid(smallest: float, largest: float, side: int) -> np.ndarray:
    """Chip sizes from `smallest` to `largest` px, spaced so a crop of `side` px sees each
    size's spectral samples drift by at most a quarter cycle between grid points.

    The highest sampled frequency is ``16 / P`` cycles per px; a relative size error
    ``e`` moves it by ``16 e / P``, which over ``side`` px is ``e side / (2 c)`` cycles, so
    the relative step is ``c / side``.

    Examples
    --------
    >>> g = scan_grid(2.0, 4.0, 512)
    >>> float(g[0]), bool(g[-1] >= 4.0), bool(np.all(np.diff(g) > 0))
    (2.0, True, True)
    """
    if not 0.0 < smallest <= largest or side < 1:
        raise ValueError(
            f"need 0 < smallest <= largest and side >= 1, got {smallest}, {largest}, {side}"
        )
    # c_{n+1} = c_n (1 + c_n / side)  <=>  1 / c_{n+1} ~ 1 / c_n - 1 / side: about
    # side (1 / smallest - 1 / largest) sizes
    sizes = [float(smallest)]
    while sizes[-1] < largest:
        sizes.append(sizes[-1] * (1.0 + sizes[-1] / side))
    return np.asarray(sizes)


def scan_chip_size(
    y: np.ndarray, pilots: np.ndarray, *, smallest: float, largest: float, crop: int = SCAN_PX
) -> tuple[float, float]:
    """The square chip size at which one of `pilots` correlates best with the leak.

    The scan runs half an octave of chip sizes at a time on the leak resampled so the
    band's smallest chips are ``WORK_PX`` pixels (never upsampled), whitened like the fold
    (:func:`watermark._sync.whiten`): fine content (hatching) above the chips' band is
    averaged away before it can drown them.

    Parameters
    ----------
    y : (H, W) float32 ndarray
        Luma of the leak, 0..255 scale.
    pilots : (G, T, T) float ndarray
        Pilot signs (0 off the pilot), one per tile orientation tried; each must have the
        same number of nonzero chips.
    smallest, largest : float
        Range of chip sizes scanned, leak px (sizes whose tile does not fit twice in the
        analysed crop are left out).
    crop : int
        Side of the analysed centre crop, px of the resampled leak.

    Returns
    -------
    chip_px : float
        Best chip size, leak px (0.0 when nothing could be scanned).
    score : float
        Its pilot score: the normalised correlation at the best of the ``4 T^2``
        half-chip shifts and the `G` orientations (N(0, 1) for one fixed hypothesis on a
        frame without this mark; the best over a scan is typically 4.5 to 5.5 there).
    """
    p = np.asarray(pilots, np.float64)
    t = TILE_CHIPS
    if p.ndim != 3 or p.shape[1:] != (t, t):
        raise ValueError(f"pilots must be (G, {t}, {t}), got {p.shape}")
    if not 0.0 < smallest <= largest:
        raise ValueError(f"need 0 < smallest <= largest, got {smallest}, {largest}")
    best_px, best_score = 0.0, -np.inf
    low = float(smallest)
    while low < largest:
        high = min(_BAND * low, float(largest))
        f = min(1.0, WORK_PX / low)  # leak -> analysed px
        # the centre crop of the resampled leak: `crop` px a side at most, cut from the
        # leak before resampling
        ch = min(crop, max(1, round(y.shape[0] * f)))
        cw = min(crop, max(1, round(y.shape[1] * f)))
        top_size = min(high * f, min(ch, cw) / (2.0 * t))  # two tiles across the crop
        if top_size >= low * f:
            lh, lw = min(y.shape[0], round(ch / f)), min(y.shape[1], round(cw / f))
            top, left = (y.shape[0] - lh) // 2, (y.shape[1] - lw) // 2
            part = np.ascontiguousarray(y[top : top + lh, left : left + lw])
            if f < 1.0:
                part = cv2.resize(part, (cw, ch), interpolation=cv2.INTER_AREA)
            r = whiten(part)
            r -= r.mean()
            sizes = scan_grid(low * f, top_size, max(r.shape))
            scores = _band_scores(r, p, sizes)
            k = int(np.argmax(scores))
            if scores[k] > best_score:
                best_px, best_score = float(sizes[k] / f), float(scores[k])
        low = high
    return best_px, best_score


def _band_scores(r: np.ndarray, pilots: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Best pilot score of a whitened crop `r` at each chip size in `sizes` (px of `r`)."""
    t = TILE_CHIPS
    ch, cw = r.shape
    # zero-padded 2x: bilinear samples between bins stay accurate
    fh, fw = 2 * ch, 2 * cw
    spec = scipy.fft.rfft2(r.astype(np.float32), s=(fh, fw))  # complex64: half the traffic
    # half band: tile frequencies ky in [-T/2, T/2), kx in [0, T/2] (the other half is the
    # complex conjugate, which the real inverse transform supplies)
    ky, kx = np.meshgrid(np.arange(-t // 2, t // 2), np.arange(t // 2 + 1), indexing="ij")
    conj_pilot = np.conj(np.fft.fft2(pilots)[:, ky % t, kx]).astype(np.complex64)
    n_pilot = float(np.count_nonzero(pilots[0]))
    # weights turning the half band's power into the full band's (Parseval)
    twice = np.where((kx == 0) | (kx == t // 2), 1.0, 2.0)
    scores = np.empty(sizes.size)
    for start in range(0, sizes.size, _CHUNK):
        period = t * sizes[start : start + _CHUNK, None, None]
        fy = np.mod(ky / period * fh, fh)  # spectrum row, fractional
        fx = kx / period * fw
        y0 = np.floor(fy).astype(np.int64)
        x0 = np.floor(fx).astype(np.int64)
        ay, ax = (fy - y0).astype(np.float32), (fx - x0).astype(np.float32)
        y1 = (y0 + 1) % fh
        x1 = np.minimum(x0 + 1, spec.shape[1] - 1)
        v = (1.0 - ay) * ((1.0 - ax) * spec[y0, x0] + ax * spec[y0, x1]) + ay * (
            (1.0 - ax) * spec[y1, x0] + ax * spec[y1, x1]
        )  # (n, T, T/2 + 1): the chip tile's spectrum
        # chip variance from Parseval: sum over chips of v^2 = sum over k of |V|^2 / T^2
        power = twice * (v.real.astype(np.float64) ** 2 + v.imag.astype(np.float64) ** 2)
        sigma = np.sqrt(np.sum(power, axis=(1, 2))) / (t * t)
        # correlation with every pilot at every half-chip shift: the product placed in a
        # 2x band-limited grid, one real inverse transform
        grid = np.zeros((v.shape[0], pilots.shape[0], 2 * t, t + 1), np.complex64)
        grid[..., ky % (2 * t), kx] = v[:, None] * conj_pilot[None]
        corr = scipy.fft.irfft2(grid, s=(2 * t, 2 * t)) * 4.0
        best = corr.reshape(corr.shape[0], -1).max(axis=1)
        scores[start : start + _CHUNK] = best / np.maximum(sigma * np.sqrt(n_pilot), 1e-30)
    return scores
