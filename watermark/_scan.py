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

from collections.abc import Sequence

import numpy as np
import scipy.fft

from ._carrier import TILE_CHIPS
from ._sync import WORK_PX, area_resize, whiten

__all__ = ["keyed_scan", "near_square_lattices", "scan_chip_size", "scan_grid"]

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
    chip_px, score, _ = keyed_scan(y, pilots, smallest=smallest, largest=largest, crop=crop)
    return chip_px, score


def keyed_scan(
    y: np.ndarray,
    pilots: np.ndarray,
    *,
    smallest: float,
    largest: float,
    crop: int = SCAN_PX,
    lattices: Sequence[tuple[np.ndarray, np.ndarray]] = (),
) -> tuple[float, float, list[np.ndarray]]:
    """:func:`scan_chip_size`, and the pilot score of given tile lattices on the same
    resampled, whitened crops.

    A lattice with basis ``B`` (columns the tile's period vectors) puts the chip tile's
    frequency ``k`` at ``B^-T k`` in the leak's spectrum: any lattice is scored like a
    square size, from the spectrum of the band its chip size falls in.

    Parameters
    ----------
    y, pilots, smallest, largest, crop
        As :func:`scan_chip_size`.
    lattices : sequence of (bases, pilots)
        Groups of tile lattices, each ``(N, 2, 2)`` in leak pixels (columns (dx, dy)),
        with the ``(G', T, T)`` pilots that group is scored with: the 8 quarter turns
        and mirrors for a lattice the autocorrelation proposes (it fixes the tile's axes
        only up to them, see :func:`watermark._sync.estimate_lattices`), fewer for one
        built from known axes (:func:`near_square_lattices`).

    Returns
    -------
    chip_px, score : float
        As :func:`scan_chip_size`.
    lattice_scores : list of (N,) float64 ndarray
        Per group, each lattice's best pilot score over half-chip shifts and its
        pilots; -inf for one whose chips are outside the scanned sizes or whose tile
        does not fit twice in the crop.
    """
    p = _check_pilots(pilots)
    if not 0.0 < smallest <= largest:
        raise ValueError(f"need 0 < smallest <= largest, got {smallest}, {largest}")
    groups = []
    for bases, group_pilots in lattices:
        b = np.asarray(bases, np.float64).reshape(-1, 2, 2)
        chips = np.sqrt(np.abs(np.linalg.det(b))) / TILE_CHIPS
        groups.append((b, _check_pilots(group_pilots), chips, np.full(len(b), -np.inf)))
    best_px, best_score = 0.0, -np.inf
    low = float(smallest)
    while low < largest:
        high = min(_BAND * low, float(largest))
        f = min(1.0, WORK_PX / low)  # leak -> analysed px
        # the centre crop of the resampled leak: `crop` px a side at most, cut from the
        # leak before resampling
        ch = min(crop, max(1, round(y.shape[0] * f)))
        cw = min(crop, max(1, round(y.shape[1] * f)))
        top_size = min(high * f, min(ch, cw) / (2.0 * TILE_CHIPS))  # two tiles across the crop
        # a lattice whose tile does not fit twice across the crop is not scored
        fits = []
        for b, _, chips, _ in groups:
            here = np.flatnonzero((chips >= low) & (chips < high))
            fits.append(here[np.abs(b[here] * f).max(axis=(1, 2)) <= min(ch, cw) / 2.0])
        if top_size >= low * f or any(fit.size for fit in fits):
            lh, lw = (
                _even(min(n, round(c / f)), n) for n, c in zip(y.shape, (ch, cw), strict=True)
            )
            top, left = (y.shape[0] - lh) // 2, (y.shape[1] - lw) // 2
            part = np.ascontiguousarray(y[top : top + lh, left : left + lw])
            if f < 1.0:
                part = area_resize(part, (cw, ch))
            r = whiten(part)
            r -= r.mean()
            # zero-padded 2x: bilinear samples between bins stay accurate
            spec = scipy.fft.rfft2(r.astype(np.float32), s=(2 * ch, 2 * cw))  # complex64
            if top_size >= low * f:
                sizes = scan_grid(low * f, top_size, max(r.shape))
                periods = TILE_CHIPS * sizes[:, None, None] * np.eye(2)
                scores = _lattice_scores(spec, (ch, cw), p, periods)
                k = int(np.argmax(scores))
                if scores[k] > best_score:
                    best_px, best_score = float(sizes[k] / f), float(scores[k])
            for (b, group_pilots, _, scores), fit in zip(groups, fits, strict=True):
                if fit.size:
                    scores[fit] = _lattice_scores(spec, (ch, cw), group_pilots, b[fit] * f)
        low = high
    return best_px, best_score, [scores for *_, scores in groups]


def near_square_lattices(
    chip_sizes: Sequence[float],
    *,
    max_turn: float = 16.0,
    turn_step: float = 0.5,
    turn_scales: tuple[float, float] = (0.95, 1.05),
    stretches: tuple[float, float] = (0.88, 1.14),
    scale_step: float = 0.01,
) -> np.ndarray:
    """Tile lattices of square chips turned a little, and of chips stretched per axis.

    The autocorrelation proposes the lattice of a turned or stretched leak only where the
    content lets the tiling show (thin line art on white paper often does not); these
    lattices let the key find it instead, around the chip sizes a delivery of the leak's
    size carries.

    Parameters
    ----------
    chip_sizes : sequence of float
        Chip sizes the grid is centred on, px.
    max_turn, turn_step : float
        Turns from ``-max_turn`` to ``max_turn`` degrees, ``turn_step`` apart (0 left
        out: the square scan covers it).
    turn_scales : (float, float)
        Range of chip size, relative, of the turned lattices.
    stretches : (float, float)
        Range of each axis's chip size, relative, of the unturned, stretched lattices
        (the axes at least 3 % apart: closer, the square scan covers them).
    scale_step : float
        Relative step of the sizes (log-spaced).

    Returns
    -------
    (N, 2, 2) float64 ndarray
        Tile period vectors (columns (dx, dy)) in px, as :func:`keyed_scan` scores them.

    Examples
    --------
    >>> near_square_lattices([4.0]).shape
    (1233, 2, 2)
    """
    turns = np.radians(np.arange(-max_turn, max_turn + 1e-9, turn_step))
    turns = turns[np.abs(turns) > 1e-9]
    cos, sin = np.cos(turns), np.sin(turns)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # (A, 2, 2)
    turn_rel = np.exp(np.arange(np.log(turn_scales[0]), np.log(turn_scales[1]), scale_step))
    rel = np.exp(np.arange(np.log(stretches[0]), np.log(stretches[1]), scale_step))
    sx, sy = (g.ravel() for g in np.meshgrid(rel, rel))
    apart = np.abs(sx / sy - 1.0) > 0.03
    stretched = np.zeros((int(apart.sum()), 2, 2))
    stretched[:, 0, 0], stretched[:, 1, 1] = sx[apart], sy[apart]
    out = []
    for c in chip_sizes:
        period = float(c) * TILE_CHIPS
        out.append(period * (turn_rel[:, None, None, None] * rotation[None]).reshape(-1, 2, 2))
        out.append(period * stretched)
    return np.concatenate(out) if out else np.zeros((0, 2, 2))


def _even(n: int, limit: int) -> int:
    """`n` made even (at most `limit`) when it is more than 1, so that halvings are exact:
    a pixel more or less moves the scale by under 0.1 % on the crops this cuts."""
    if n <= 1 or n % 2 == 0:
        return n
    return n + 1 if n < limit else n - 1


def _check_pilots(pilots: np.ndarray) -> np.ndarray:
    p = np.asarray(pilots, np.float64)
    t = TILE_CHIPS
    if p.ndim != 3 or p.shape[1:] != (t, t):
        raise ValueError(f"pilots must be (G, {t}, {t}), got {p.shape}")
    return p


def _lattice_scores(
    spec: np.ndarray, shape: tuple[int, int], pilots: np.ndarray, bases: np.ndarray
) -> np.ndarray:
    """Best pilot score at each tile lattice of a whitened crop.

    Parameters
    ----------
    spec : complex ndarray
        ``rfft2`` of the whitened crop zero-padded to twice its `shape` (h, w).
    pilots : (G, T, T) float ndarray
    bases : (N, 2, 2) float ndarray
        Tile period vectors (columns (dx, dy)) in crop px.
    """
    t = TILE_CHIPS
    half = t // 2
    ch, cw = shape
    fh, fw = 2 * ch, 2 * cw
    # half band: tile frequencies ky in [-T/2, T/2), kx in [0, T/2] (the other half is the
    # complex conjugate, which the real inverse transform supplies)
    ky, kx = np.meshgrid(np.arange(-half, half), np.arange(half + 1), indexing="ij")
    conj_pilot = np.conj(np.fft.fft2(pilots)[:, ky % t, kx]).astype(np.complex64)
    n_pilot = float(np.count_nonzero(pilots[0]))
    # weights turning the half band's power into the full band's (Parseval)
    twice = np.where((kx == 0) | (kx == half), 1.0, 2.0)
    kx_f, ky_f = kx.astype(np.float64), ky.astype(np.float64)
    n_cols = spec.shape[1]
    flat = spec.ravel()  # gathers from a flat index are cheaper than from (row, col) pairs
    scores = np.empty(len(bases))
    # the 2x band-limited grid of the product: only its T x (T/2 + 1) band is ever
    # written, the same cells each chunk, so the zeros around it are made once
    grid = np.zeros((min(_CHUNK, len(bases)), pilots.shape[0], 2 * t, t + 1), np.complex64)
    for start in range(0, len(bases), _CHUNK):
        # tile frequency (kx, ky) cycles per tile -> B^-T (kx, ky) cycles per crop px
        dual = np.linalg.inv(bases[start : start + _CHUNK]).transpose(0, 2, 1)
        cx = dual[:, 0, 0, None, None] * kx_f + dual[:, 0, 1, None, None] * ky_f
        cy = dual[:, 1, 0, None, None] * kx_f + dual[:, 1, 1, None, None] * ky_f
        # a real image's spectrum at -f is the conjugate of its value at f: the rfft half
        # plane holds columns >= 0 only
        mirror = cx < 0
        fx = np.abs(cx, out=cx)
        fx *= fw
        np.negative(cy, out=cy, where=mirror)
        cy *= fh
        fy = np.mod(cy, fh, out=cy)
        y0 = np.floor(fy).astype(np.int64)
        x0 = np.floor(fx).astype(np.int64)
        ay, ax = (fy - y0).astype(np.float32), (fx - x0).astype(np.float32)
        y1 = y0 + 1
        y1[y1 == fh] = 0
        x1 = np.minimum(x0 + 1, n_cols - 1)
        np.minimum(x0, n_cols - 1, out=x0)
        bx = 1.0 - ax
        y0 *= n_cols
        y1 *= n_cols
        v = (1.0 - ay) * (bx * flat[y0 + x0] + ax * flat[y0 + x1]) + ay * (
            bx * flat[y1 + x0] + ax * flat[y1 + x1]
        )  # (n, T, T/2 + 1): the chip tile's spectrum
        np.conjugate(v, out=v, where=mirror)
        # chip variance from Parseval: sum over chips of v^2 = sum over k of |V|^2 / T^2
        power = twice * (v.real.astype(np.float64) ** 2 + v.imag.astype(np.float64) ** 2)
        sigma = np.sqrt(np.sum(power, axis=(1, 2))) / (t * t)
        # correlation with every pilot at every half-chip shift: the product placed in a
        # 2x band-limited grid (ky >= 0 in its first rows, ky < 0 in its last), one real
        # inverse transform
        n = v.shape[0]
        product = v[:, None] * conj_pilot[None]
        grid[:n, :, :half, : half + 1] = product[:, :, half:]
        grid[:n, :, -half:, : half + 1] = product[:, :, :half]
        corr = scipy.fft.irfft2(grid[:n], s=(2 * t, 2 * t))
        # (the factor 4 of the 2x grid is a power of two: scaling the maxima is exact)
        best = corr.reshape(n, -1).max(axis=1) * 4.0
        scores[start : start + _CHUNK] = best / np.maximum(sigma * np.sqrt(n_pilot), 1e-30)
    return scores
