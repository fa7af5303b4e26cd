"""Synchronisation: whiten, fold the tiles of a leak, and find the tile grid by the pilot."""

from __future__ import annotations

import math

import cv2
import numpy as np
import scipy.fft

from ._carrier import TILE_CHIPS

__all__ = [
    "PICTURE_GUARD",
    "WORK_PX",
    "area_resize",
    "chip_estimates",
    "estimate_chip_sizes",
    "estimate_lattices",
    "fold_tiles",
    "lattice_candidates",
    "lattice_map",
    "leak_autocorrelation",
    "pilot_scores",
    "warp_luma",
    "whiten",
    "whitened_crop",
    "working_luma",
]

WORK_PX = 2  # pixels per chip in the working resolution
# working pixels left out inside a picture's border: the whitening's host and energy
# windows (sigma 1) and its 3x3 median reach about this far across a step
PICTURE_GUARD = 3


def area_resize(y: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Shrink by area averaging to `size` (w, h, cv2's order), halving first.

    A non-integer ``INTER_AREA`` shrink of a large frame is several times slower than
    exact halvings (2 x 2 means, while both sides are even and the target is at most
    half) followed by the remaining shrink on the small image; the result differs only
    in the shape of the averaging footprint.

    Parameters
    ----------
    y : (H, W) float32 ndarray
    size : (int, int)
        Output (width, height), each at most the input's.
    """
    w, h = size
    src = y
    while (
        src.shape[1] >= 2 * w
        and src.shape[0] >= 2 * h
        and src.shape[1] % 2 == 0
        and src.shape[0] % 2 == 0
    ):
        src = cv2.resize(src, (src.shape[1] // 2, src.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if src.shape[:2] == (h, w):
        return src
    return cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA)


def lattice_map(basis: np.ndarray) -> np.ndarray:
    """(3, 3) leak -> working map that turns a tile lattice `basis` into the square working
    grid (a tile period ``WORK_PX * TILE_CHIPS`` working pixels, tile x along working x).

    Parameters
    ----------
    basis : (2, 2) float ndarray
        Tile period vectors (columns, (dx, dy) in leak pixels), see
        :func:`estimate_lattices`.
    """
    m = np.eye(3)
    m[:2, :2] = (WORK_PX * TILE_CHIPS) * np.linalg.inv(np.asarray(basis, np.float64))
    return m


def warp_luma(
    y: np.ndarray, to_working: np.ndarray, picture: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Resample luma through a (3, 3) leak -> working map (affine or projective).

    Parameters
    ----------
    y : (H, W) float32 ndarray
        Luma of the leak, 0..255 scale.
    to_working : (3, 3) float ndarray
        Leak pixel (x, y, 1) -> working pixel, up to a shift: the working image is the
        bounding box of the mapped leak.
    picture : (4, 2) float ndarray, optional
        Corners (x, y) of the picture inside the leak, in leak pixels (pixel-centre
        coordinates), when it shows in a dark surround: only working pixels inside it,
        and at least ``PICTURE_GUARD`` working pixels from its border, are valid.

    Returns
    -------
    working : (h, w) float32 ndarray
    valid : (h, w) float32 ndarray
        1 where the working image shows the leak (the picture, when given), 0 elsewhere.
    placed : (3, 3) float64 ndarray
        `to_working` followed by the bounding-box shift: the map the picture mask is
        drawn with and the lattice refinement composes with.
    sampled : (3, 3) float64 ndarray
        The leak -> working map the working image actually shows, pixel centres to pixel
        centres: `placed` less the offset of the area pre-shrink, which scales pixel
        edges rather than centres (``0.5 - 0.5 / shrink`` leak px, under half a working
        pixel; `placed` itself when nothing is pre-shrunk). Where the tile grid lies in
        the leak is read through it; the mask and the refinement keep `placed`, whose
        working images the detector's calibration was measured on.
    """
    m = np.asarray(to_working, np.float64)
    h, w = y.shape
    src = y
    shrink = math.sqrt(abs(np.linalg.det(m[:2, :2] / m[2, 2])))
    pre = np.eye(3)
    if shrink < 0.9:  # area-average first: a bilinear warp alone would alias
        size = (max(1, round(w * shrink)), max(1, round(h * shrink)))
        src = area_resize(y, size)
        pre = np.diag([w / size[0], h / size[1], 1.0])
    sh, sw = src.shape
    m_src = m @ pre
    corners = np.array([[0.0, sw, 0.0, sw], [0.0, 0.0, sh, sh], [1.0, 1.0, 1.0, 1.0]])
    mapped = m_src @ corners
    mapped = mapped[:2] / mapped[2]
    lo = np.floor(mapped.min(axis=1))
    out = (
        max(1, min(8192, int(np.ceil(mapped[0].max() - lo[0])))),
        max(1, min(8192, int(np.ceil(mapped[1].max() - lo[1])))),
    )
    shift = np.array([[1.0, 0.0, -lo[0]], [0.0, 1.0, -lo[1]], [0.0, 0.0, 1.0]])
    full = shift @ m_src
    if np.allclose(full[2], [0.0, 0.0, 1.0]):
        working = cv2.warpAffine(src, full[:2], out, flags=cv2.INTER_LINEAR, borderValue=0.0)
        inside = cv2.warpAffine(
            np.ones_like(src), full[:2], out, flags=cv2.INTER_NEAREST, borderValue=0.0
        )
    else:
        working = cv2.warpPerspective(src, full, out, flags=cv2.INTER_LINEAR, borderValue=0.0)
        inside = cv2.warpPerspective(
            np.ones_like(src), full, out, flags=cv2.INTER_NEAREST, borderValue=0.0
        )
    valid = cv2.erode(inside, np.ones((3, 3), np.uint8))  # no resampling edge in the fold
    placed = shift @ m
    # leak pixel centre x lies at (x + 0.5) sw / w - 0.5 in the pre-shrunk copy
    centres = np.array(
        [[sw / w, 0.0, 0.5 * sw / w - 0.5], [0.0, sh / h, 0.5 * sh / h - 0.5], [0.0, 0.0, 1.0]]
    )
    sampled = full @ centres
    if picture is not None:
        valid *= _picture_mask(picture, placed, valid.shape)  # uint8, cast chunk by chunk
    return working, valid, placed, sampled


def _picture_mask(picture: np.ndarray, placed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(h, w) uint8 mask, 1 inside the picture's quadrilateral mapped to working pixels
    and ``PICTURE_GUARD`` from its border.

    The step from picture to surround is no mark, yet the whitened working image rings
    there at full scale (clipped to +/-3) for a couple of working pixels; and the
    surround carries only noise. On a frame with little detail (line art on white, whose
    paper a brightness lift has clipped flat) they outweigh what the picture carries.
    """
    corners = cv2.perspectiveTransform(np.asarray(picture, np.float64)[None], placed)[0]
    corners = np.clip(corners, -(1 << 20), 1 << 20)  # int32 room for the fixed point below
    mask = np.zeros(shape, np.uint8)
    # 4 fractional bits: corners to 1/16 of a working pixel
    cv2.fillConvexPoly(mask, np.round(corners * 16.0).astype(np.int32), 1, shift=4)
    side = 2 * PICTURE_GUARD + 1
    return cv2.erode(mask, np.ones((side, side), np.uint8), dst=mask)


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
    if f < 1.0:
        return area_resize(y, (w, h))
    return cv2.resize(y, (w, h), interpolation=cv2.INTER_LINEAR)


def whiten(y: np.ndarray) -> np.ndarray:
    """Remove an estimate of the host and equalise local energy.

    ``r = y - (G_s(y) + M_3(y)) / 2`` (a Gaussian blur and a 3x3 median), then
    ``r / sqrt(G_s(r^2) + eps)`` clipped to +/-3: the host stops masking the chips and
    strong edges stop dominating the correlation.

    Parameters
    ----------
    y : (h, w) float32 ndarray, working resolution.

    Returns
    -------
    (h, w) float32 ndarray, roughly unit variance.
    """
    # sigmas in working pixels (a chip is WORK_PX): a sharp high-pass keeps the chips'
    # upper band, where a 1/f host is weakest; a tight energy window tracks texture. The
    # host estimate blends a blur (which keeps all of the mark, and the host's edges and
    # thin lines) with a 3x3 median (which follows edges and lines, and part of the mark).
    host = cv2.GaussianBlur(y, (0, 0), 0.5 * WORK_PX)
    host += cv2.medianBlur(np.ascontiguousarray(y, np.float32), 3)
    r = y - 0.5 * host
    return equalise_energy(r, cv2.GaussianBlur(r * r, (0, 0), 0.5 * WORK_PX))


def equalise_energy(r: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """``r / sqrt(energy + 0.25)`` clipped to +/-3, in place.

    Parameters
    ----------
    r : (h, w) float32 ndarray
        High-passed luma, 0..255 scale; overwritten.
    energy : (h, w) float32 ndarray
        Local mean of ``r**2``. The 0.25 (squared grey levels) is the energy of a region
        without detail: there `r` is not blown up.

    Returns
    -------
    (h, w) float32 ndarray, `r` itself.
    """
    r /= np.sqrt(energy + 0.25)
    return np.clip(r, -3.0, 3.0, out=r)


def fold_tiles(r: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sum all tile periods of the working image into one period.

    Parameters
    ----------
    r : (h, w) float32 ndarray, whitened working image.
    valid : (h, w) float32 ndarray, optional
        1 where the working image shows the leak, 0 outside it (a resampled leak's
        corners); `r` must be 0 there. Default: everywhere valid.

    Returns
    -------
    sums : (P, P) float64 ndarray, ``P = WORK_PX * TILE_CHIPS``
    counts : (P, P) float64 ndarray, how many valid pixels were summed into each cell.
    """
    p = WORK_PX * TILE_CHIPS
    h, w = r.shape
    ph, pw = -(-h // p) * p, -(-w // p) * p
    padded = np.zeros((ph, pw), np.float32)
    padded[:h, :w] = r
    sums = padded.reshape(ph // p, p, pw // p, p).sum(axis=(0, 2), dtype=np.float64)
    if valid is not None:
        padded[:h, :w] = valid
        return sums, padded.reshape(ph // p, p, pw // p, p).sum(axis=(0, 2), dtype=np.float64)
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
    # real-input transforms (scipy's: several times faster than numpy's on these small
    # batched tiles); conj(V) P is the transform of the cyclic cross-correlation
    shape = v.shape[-2:]
    fp = scipy.fft.rfft2(pilot)
    fa = scipy.fft.rfft2(np.abs(pilot))
    num = scipy.fft.irfft2(np.conj(scipy.fft.rfft2(v)) * fp, s=shape)
    den = scipy.fft.irfft2(np.conj(scipy.fft.rfft2(v * v)) * fa, s=shape)
    return num / np.sqrt(np.maximum(den, 1e-12))


_ANALYSIS_PX = 512  # side of the centre crop analysed for the tile period
_MIN_PERIOD = 40.0  # px, in the analysed image
# Lattice points (in tile periods) where a tiled mark's autocorrelation peaks: both axes,
# both diagonals and the second harmonics. Content that repeats along one direction
# (hatching, bricks, tiles) rarely peaks on all of them at one period.
_LATTICE = ((1, 0), (0, 1), (1, 1), (1, -1), (2, 0), (0, 2), (2, 1), (1, 2), (2, -1), (-1, 2))
_PERIOD_STEP = 0.002  # relative spacing of the period grid


def whitened_crop(y: np.ndarray, crop: int) -> np.ndarray:
    """High-passed, locally normalised centre crop of a leak's luma, zero mean.

    Parameters
    ----------
    y : (H, W) float32 ndarray
        Luma, 0..255 scale.
    crop : int
        Largest side of the crop, pixels.

    Returns
    -------
    (min(H, crop), min(W, crop)) float32 ndarray
        Values in [-3, 3] before the mean is removed (about unit variance).
    """
    h, w = y.shape
    ch, cw = min(h, crop), min(w, crop)
    top, left = (h - ch) // 2, (w - cw) // 2
    c = np.ascontiguousarray(y[top : top + ch, left : left + cw])
    r = c - cv2.GaussianBlur(c, (0, 0), 1.0)
    r /= np.sqrt(cv2.GaussianBlur(r * r, (0, 0), 2.0) + 0.25)
    np.clip(r, -3.0, 3.0, out=r)
    r -= r.mean()
    return r


def _autocorrelation(y: np.ndarray, crop: int = _ANALYSIS_PX) -> tuple[np.ndarray, int, int]:
    """Baseline-free, overlap-normalised autocorrelation of a whitened centre crop.

    Returns the (2h', 2w') array (lags wrap around) and the crop's (h, w).
    """
    r = whitened_crop(y, crop)
    ch, cw = r.shape
    # zero-padded, so lags do not wrap onto the other side of the crop
    fh, fw = cv2.getOptimalDFTSize(2 * ch), cv2.getOptimalDFTSize(2 * cw)
    spec = scipy.fft.rfft2(r, s=(fh, fw))
    power = spec.real**2 + spec.imag**2
    # partial spectral whitening (power / smoothed power ** 0.5): a few strong content
    # periodicities (bricks, hatching) stop dominating the mark's broadband lattice
    envelope = cv2.GaussianBlur(power.astype(np.float32), (0, 0), 2.0)
    power /= np.sqrt(np.maximum(envelope, 1e-9))
    ac = scipy.fft.irfft2(power, s=(fh, fw)).astype(np.float32)
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


def leak_autocorrelation(y: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The full-resolution autocorrelation both estimators below start from.

    Computed once by a caller that runs both (see their `autocorrelation` argument).

    Parameters
    ----------
    y : (H, W) float32 ndarray
        Luma of the leak, 0..255 scale.

    Returns
    -------
    ac : (h2, w2) float32 ndarray
        Baseline-free autocorrelation of the whitened centre crop (lags wrap around).
    ch, cw : int
        Side lengths of that crop, pixels.
    """
    return _autocorrelation(y, _ANALYSIS_PX)


def estimate_chip_sizes(
    y: np.ndarray,
    *,
    n_candidates: int = 4,
    autocorrelation: tuple[np.ndarray, int, int] | None = None,
) -> list[float]:
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
    autocorrelation : tuple, optional
        ``leak_autocorrelation(y)``, when the caller already has it.

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
        if factor == 1:
            full = autocorrelation if autocorrelation is not None else leak_autocorrelation(y)
            periods, score = _lattice_score(*full)
        else:
            periods, score = _lattice_score(*_autocorrelation(small))
        if score.size < 3:
            continue
        inner = score[1:-1]
        peaks = np.flatnonzero((inner > score[:-2]) & (inner >= score[2:])) + 1
        peaks = peaks[np.argsort(score[peaks])[::-1][:n_candidates]]
        out.extend(float(periods[k]) * factor / TILE_CHIPS for k in peaks)
    return out


# --------------------------------------------------------------------- 2-D tile lattices

_PEAKS = 24  # autocorrelation maxima considered as lattice vectors, per resolution
_MAX_COS = 0.6  # lattice vectors at 53..127 degrees to each other (shear, perspective)
_MAX_RATIO = 1.7  # and lengths within this ratio (aspect changes)
_FINER_SCORE = 0.3  # a finer lattice scoring this share of a coarser one replaces it
_PER_FACTOR = 8  # distinct lattices considered per analysis resolution
_PEAK_RANGE = 0.7  # lattice vectors up to this share of the analysed crop (overlap >= 30 %)
# Analysis resolutions (downscale factors) and the tile periods looked for at each: chips of
# 1.25 to 3 analysis pixels give sharp autocorrelation peaks (wider ones blur into the
# smoothing that removes the content's correlation)
_LATTICE_FACTORS = (1, 2, 4, 8)
_MAX_PERIOD = 100.0
_LATTICE_CROP = 768  # px, side of the centre crop analysed for lattices
_MIN_POINTS = 6  # of the _LATTICE points inside the analysed lags, for a basis to count
_FIT_RANGE = 0.75
_POLISH_REACH = 1.5  # analysis px each lattice vector may move when polished
_POLISH_STEP = 0.125  # lattice points used to refine a basis: lags within this share of the crop


def _lattice_points(n: int = 3) -> np.ndarray:
    """(k, 2) integer lattice coordinates (i, j) in the upper half plane, |i|, |j| <= n."""
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(0, n + 1), indexing="ij")
    pts = np.stack([i.ravel(), j.ravel()], axis=1)
    upper = (pts[:, 1] > 0) | ((pts[:, 1] == 0) & (pts[:, 0] > 0))
    return pts[upper]


def _sample(ac: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """Bicubic autocorrelation at (..., 2) lag vectors (dx, dy); lags wrap around.

    Bicubic, not bilinear: a bilinear surface peaks only on whole pixels, and the
    sub-pixel polish of a lattice needs the true peak between them."""
    fh, fw = ac.shape
    flat = lags.reshape(-1, 2).astype(np.float32)
    n = flat.shape[0]
    width = 1024  # cv2.remap wants maps under 32767 px a side
    rows = max(1, -(-n // width))
    mx = np.zeros(rows * width, np.float32)
    my = np.zeros(rows * width, np.float32)
    mx[:n] = np.mod(flat[:, 0], fw)
    my[:n] = np.mod(flat[:, 1], fh)
    vals = cv2.remap(
        ac,
        mx.reshape(rows, width),
        my.reshape(rows, width),
        cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_WRAP,
    )
    return vals.ravel()[:n].reshape(lags.shape[:-1])


# Offsets (dx, dy) at which a point's opposite neighbours are compared: 8 directions, 4 px
_RIDGE_STEPS = ((4, 0), (4, 2), (3, 3), (2, 4), (0, 4), (-2, 4), (-3, 3), (-4, 2))


def _isolated(ac: np.ndarray, ch: int, cw: int) -> np.ndarray:
    """Autocorrelation minus, at each lag, the larger mean of its two opposite neighbours
    4 px away in any of 8 directions (zero beyond the lags used for lattices).

    Straight lines and hatching in the content make ridges in the autocorrelation, whose
    local maxima would pass for lattice peaks; along a ridge, both neighbours in the
    ridge's direction are as high as the point itself, while around the mark's isolated
    peaks every neighbour is low.
    """
    fh, fw = ac.shape
    ry = min(fh // 2 - 8, int(_FIT_RANGE * ch) + 8)
    rx = min(fw // 2 - 8, int(_FIT_RANGE * cw) + 8)
    centred = np.fft.fftshift(ac)[fh // 2 - ry : fh // 2 + ry + 1, fw // 2 - rx : fw // 2 + rx + 1]
    ridge = np.zeros_like(centred)
    pair = np.empty_like(centred)
    # the neighbours at -/+ (dx, dy), wrapping like np.roll: views into one padded copy
    e = max(max(abs(dx), abs(dy)) for dx, dy in _RIDGE_STEPS)
    padded = np.pad(centred, e, mode="wrap")
    h, w = centred.shape
    for dx, dy in _RIDGE_STEPS:
        before = padded[e - dy : e - dy + h, e - dx : e - dx + w]
        after = padded[e + dy : e + dy + h, e + dx : e + dx + w]
        np.add(before, after, out=pair)
        pair *= 0.5
        np.maximum(ridge, pair, out=ridge)
    out = np.zeros_like(ac)
    out[fh // 2 - ry : fh // 2 + ry + 1, fw // 2 - rx : fw // 2 + rx + 1] = centred - ridge
    return np.fft.ifftshift(out)


def _peaks(ac: np.ndarray, ch: int, cw: int) -> np.ndarray:
    """(k, 2) lags (dx, dy) of the strongest autocorrelation maxima in the upper half plane,
    between _MIN_PERIOD and _MAX_PERIOD, within _PEAK_RANGE of the crop."""
    fh, fw = ac.shape
    ry, rx = int(_PEAK_RANGE * ch), int(_PEAK_RANGE * cw)
    centred = np.fft.fftshift(ac)
    cy, cx = fh // 2, fw // 2
    win = np.ascontiguousarray(centred[cy - ry : cy + ry + 1, cx - rx : cx + rx + 1])
    is_max = (win >= cv2.dilate(win, np.ones((5, 5), np.uint8))) & (win > 0)
    ys, xs = np.nonzero(is_max)
    dx, dy = xs - rx, ys - ry
    length = np.hypot(dx, dy)
    keep = ((dy > 0) | ((dy == 0) & (dx > 0))) & (length >= _MIN_PERIOD) & (length <= _MAX_PERIOD)
    dx, dy, vals = dx[keep], dy[keep], win[ys[keep], xs[keep]]
    order = np.argsort(vals)[::-1][:_PEAKS]
    return np.stack([dx[order], dy[order]], axis=1).astype(np.float64)


def _lattice_scores(ac: np.ndarray, bases: np.ndarray, ch: int, cw: int) -> np.ndarray:
    """Mean autocorrelation over the _LATTICE points of each (n, 2, 2) basis (columns are
    the lattice vectors), counting only points inside the analysed lags."""
    coeff = np.array(_LATTICE, np.float64)  # (L, 2)
    pts = np.einsum("nij,lj->nli", bases, coeff)  # (n, L, 2)
    inside = (np.abs(pts[..., 0]) < 0.75 * cw) & (np.abs(pts[..., 1]) < 0.75 * ch)
    vals = np.where(inside, _sample(ac, pts), np.nan)
    count = inside.sum(axis=1)
    # the median over the lattice points: the mark peaks on all of them, content that
    # repeats along one direction (a row of windows, hatching) on a few only. A basis with
    # few points inside the analysed lags is barely tested and does not count.
    with np.errstate(all="ignore"):
        score = np.nanmedian(np.where(count[:, None] > 0, vals, 0.0), axis=1)
    return np.where(count >= _MIN_POINTS, score, 0.0)


def _same_or_coarser(fine: np.ndarray, coarse: np.ndarray) -> bool:
    """True when every point of the lattice `coarse` is a point of the lattice `fine`."""
    (a, b), (c, d) = fine
    det = a * d - b * c
    if abs(det) < 1e-9:
        return False
    # fine^-1 @ coarse, written out: this runs for every pair of candidate lattices
    t = np.array([[d, -b], [-c, a]]) @ coarse / det
    return bool(np.all(np.abs(t - np.rint(t)) < 0.06))


def _polish_basis(ac: np.ndarray, basis: np.ndarray, ch: int, cw: int) -> np.ndarray:
    """Basis maximising the summed autocorrelation over all its lattice points in range,
    one vector at a time on ever finer sub-pixel grids (the far points pin the vectors
    down: a tenth of a pixel on a vector moves its sixth multiple by 0.6 px)."""
    coeff = _lattice_points(8).astype(np.float64)
    b = np.asarray(basis, np.float64).copy()
    for reach in (_POLISH_REACH, _POLISH_REACH / 4, _POLISH_REACH / 16):
        steps = np.linspace(-reach, reach, 13)
        grid = np.stack(np.meshgrid(steps, steps, indexing="xy"), axis=-1).reshape(-1, 2)
        for col in (0, 1):
            pts = coeff @ b.T
            inside = (np.abs(pts[:, 0]) < _FIT_RANGE * cw) & (np.abs(pts[:, 1]) < _FIT_RANGE * ch)
            use = coeff[inside & (coeff[:, col] != 0)]
            if len(use) < 2:
                return b
            trial = b[None].repeat(len(grid), axis=0)
            trial[:, :, col] += grid
            lags = use @ trial.transpose(0, 2, 1)  # (G, K, 2)
            score = _sample(ac, lags).sum(axis=1)
            b = trial[int(np.argmax(score))]
    return b


def _fit_bases(
    ac: np.ndarray, bases: np.ndarray, ch: int, cw: int, *, square: bool = False
) -> np.ndarray:
    """Bases refitted to the sub-pixel autocorrelation peaks near their lattice points.

    Each lattice point within the fitted lags looks for the highest autocorrelation
    within 2 px (sub-pixel by a parabola through its neighbours); the basis is then the
    least-squares fit of all points to their peaks, weighted by the peaks' heights, three
    times (the later ones within 1 px). Cheaper than :func:`_polish_basis` for many bases,
    and it can move a vector further. With `square`, the fit is a square lattice (second
    vector the first turned a quarter): all points pin down one vector.

    Parameters
    ----------
    ac : (fh, fw) float ndarray
        Autocorrelation, lag (0, 0) at [0, 0], wrapping.
    bases : (n, 2, 2) float ndarray
        Columns the lattice vectors (dx, dy), px of `ac`.
    """
    fh, fw = ac.shape
    flat_ac = ac.ravel()

    def at(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return flat_ac[(rows % fh) * fw + cols % fw]

    coeff = _lattice_points(8).astype(np.float64)  # (K, 2)
    b = np.asarray(bases, np.float64).copy()
    m, n = coeff[:, 0], coeff[:, 1]
    # square lattice u = (a, c), v = (-c, a): point (x, y) = (m a - n c, m c + n a)
    rows = np.stack([np.stack([m, -n], axis=1), np.stack([n, m], axis=1)], axis=1)  # (K, 2, 2)
    for reach in (2, 1, 1):  # px searched around each point: the first fit moves furthest
        d = np.arange(-reach, reach + 1)
        oy, ox = (g.ravel() for g in np.meshgrid(d, d, indexing="ij"))
        pts = np.matmul(b, coeff.T).swapaxes(1, 2)  # (n, K, 2): (x, y)
        inside = (np.abs(pts[..., 0]) < _FIT_RANGE * cw) & (np.abs(pts[..., 1]) < _FIT_RANGE * ch)
        cx = np.rint(pts[..., 0]).astype(np.int64)[..., None] + ox  # (n, K, window)
        cy = np.rint(pts[..., 1]).astype(np.int64)[..., None] + oy
        k = np.argmax(at(cy, cx), axis=2)
        px = np.take_along_axis(cx, k[..., None], 2)[..., 0]
        py = np.take_along_axis(cy, k[..., None], 2)[..., 0]
        top = at(py, px)
        sub = []
        for lo, hi in ((at(py, px - 1), at(py, px + 1)), (at(py - 1, px), at(py + 1, px))):
            curv = lo - 2.0 * top + hi
            step = np.where(curv < 0, 0.5 * (lo - hi) / np.where(curv < 0, curv, -1.0), 0.0)
            sub.append(np.clip(step, -0.5, 0.5))
        peak = np.stack([px + sub[0], py + sub[1]], axis=-1)  # (n, K, 2)
        w = np.where(inside, np.maximum(top, 0.0), 0.0)  # (n, K)
        if square:
            ata = (w @ np.matmul(rows.transpose(0, 2, 1), rows).reshape(-1, 4)).reshape(-1, 2, 2)
            atp = np.sum(w[..., None] * np.sum(rows[None] * peak[..., None], axis=2), axis=1)
            ok = np.abs(np.linalg.det(ata)) > 1e-9
            a, c = np.linalg.solve(np.where(ok[:, None, None], ata, np.eye(2)), atp[..., None])[
                ..., 0
            ].T
            fitted = np.stack([np.stack([a, -c], axis=1), np.stack([c, a], axis=1)], axis=1)
        else:
            # weighted least squares per basis: B^T = (C^T W C)^-1 C^T W P
            ctwc = (w @ (coeff[:, :, None] * coeff[:, None, :]).reshape(-1, 4)).reshape(-1, 2, 2)
            ctwp = np.matmul(coeff.T[None], w[..., None] * peak)
            ok = np.abs(np.linalg.det(ctwc)) > 1e-9
            fitted = np.linalg.solve(np.where(ok[:, None, None], ctwc, np.eye(2)), ctwp)
            fitted = fitted.transpose(0, 2, 1)
        b = np.where(ok[:, None, None], fitted, b)
    return b


def estimate_lattices(
    y: np.ndarray,
    *,
    n_candidates: int = 2,
    autocorrelation: tuple[np.ndarray, int, int] | None = None,
) -> list[np.ndarray]:
    """Candidate tile lattices of a rotated, sheared or rescaled mark, from the 2-D
    autocorrelation of the leak.

    The mark repeats every tile, so the whitened leak's autocorrelation peaks on the image
    of the tile's square lattice under whatever (locally affine) geometry the leak went
    through. Pairs of autocorrelation maxima are scored as lattice bases by the mean
    autocorrelation over their lattice points; the finest well-scoring lattices are
    refined by least squares on many sub-pixel peak positions. No key is used.

    Parameters
    ----------
    y : (H, W) float32 ndarray
        Luma of the leak, 0..255 scale.
    n_candidates : int
        Lattices kept (the best two of each analysis resolution compete).
    autocorrelation : tuple, optional
        ``leak_autocorrelation(y)``, when the caller already has it.

    Returns
    -------
    list of (2, 2) float64 ndarrays
        Bases in leak pixels, columns the two tile period vectors (dx, dy), the first
        nearer the +x axis, right-handed; best first. The lattice
        fixes the tile's axes only up to a quarter turn and a mirror.
    """
    return lattice_candidates(y, n_candidates=n_candidates, autocorrelation=autocorrelation)[0]


def lattice_candidates(
    y: np.ndarray,
    *,
    n_candidates: int = 2,
    n_spares: int = 0,
    autocorrelation: tuple[np.ndarray, int, int] | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """:func:`estimate_lattices`'s lattices, and the runners-up behind them.

    Content with a period of its own (hatching, brickwork) can rank its own lattices
    above the mark's; the mark's is then often a few places below, where only the key
    can tell it from the others (see :func:`watermark._scan.keyed_scan`).

    Parameters
    ----------
    y, n_candidates, autocorrelation
        As :func:`estimate_lattices`.
    n_spares : int
        Runners-up taken, at most: rank 3 of every analysis resolution, then rank 4, and
        so on (0: none, and nothing else either).

    Returns
    -------
    best : list of (2, 2) float64 ndarrays
        As :func:`estimate_lattices`.
    spares : (S, 2, 2) float64 ndarray
        The runners-up not already among `best`, each refitted to its sub-pixel peaks
        (:func:`_fit_bases`); then, for the leading lattices and the runners-up of each
        resolution, the square lattice on either of their vectors, fitted as a square.
        Same form as `best`; unordered.
    """
    out: list[tuple[np.ndarray, float]] = []
    queues: list[tuple[list[np.ndarray], np.ndarray, int, int, int]] = []
    for factor in _LATTICE_FACTORS:
        small = y
        if factor > 1:
            size = (max(1, y.shape[1] // factor), max(1, y.shape[0] // factor))
            small = cv2.resize(y, size, interpolation=cv2.INTER_AREA)
        if factor > 1:
            ac, ch, cw = _autocorrelation(small, _LATTICE_CROP)
        elif autocorrelation is not None:
            ac, ch, cw = autocorrelation
        else:
            ac, ch, cw = leak_autocorrelation(y)
        if _PEAK_RANGE * min(ch, cw) <= _MIN_PERIOD:
            continue
        isolated = _isolated(ac, ch, cw)
        peaks = _peaks(isolated, ch, cw)
        if len(peaks) < 2:
            continue
        i, j = np.triu_indices(len(peaks), 1)
        u, v = peaks[i], peaks[j]
        nu, nv = np.linalg.norm(u, axis=1), np.linalg.norm(v, axis=1)
        cos = np.abs(np.sum(u * v, axis=1)) / (nu * nv)
        ratio = np.maximum(nu, nv) / np.minimum(nu, nv)
        ok = (cos < _MAX_COS) & (ratio < _MAX_RATIO)
        if not np.any(ok):
            continue
        bases = np.stack([u[ok], v[ok]], axis=2)  # (n, 2, 2): columns u, v
        # scored on the 3x3 local maximum: integer peak positions, multiplied out to the
        # far lattice points, miss the sharp peaks by up to a pixel or two
        scores = _lattice_scores(cv2.dilate(isolated, np.ones((3, 3), np.uint8)), bases, ch, cw)
        order = np.argsort(scores)[::-1]
        chosen = _merge_lattices(
            [(bases[k], float(scores[k])) for k in order[: 2 * _PER_FACTOR] if scores[k] > 0],
            _PER_FACTOR,
        )
        for b, score in chosen[:2]:
            refined = _polish_basis(ac, _canonical(b), ch, cw)
            out.append((_canonical(refined) * factor, score))
        queues.append(([b for b, _ in chosen], ac, ch, cw, factor))
    # a lattice seen at two resolutions, or a coarser copy of one: once, the finest
    out.sort(key=lambda c: c[1], reverse=True)
    best = [b for b, _ in _merge_lattices(out, n_candidates)]
    # runners-up, rank by rank across the resolutions, fitted a resolution at a time
    take = [0] * len(queues)
    for rank in range(_PER_FACTOR):
        for n, (queue, *_) in enumerate(queues):
            if sum(take) < n_spares and rank < len(queue) - 2:
                take[n] += 1
    spares: list[np.ndarray] = []
    squares: list[np.ndarray] = []
    quarter = np.array([[0.0, -1.0], [1.0, 0.0]])
    for n, (queue, ac, ch, cw, factor) in enumerate(queues):
        raw = [_canonical(b) for b in queue]
        if take[n]:
            spares.extend(
                b * factor for b in _fit_bases(ac, np.stack(raw[2 : 2 + take[n]]), ch, cw)
            )
        # content can pull one vector's peaks off while the other's are clean: the square
        # lattice on either vector alone (rotation and scale keep the tile square), for
        # the leading lattices too
        on = raw[: take[n] + 2]
        if on and n_spares:
            seeds = [np.column_stack([b[:, 0], quarter @ b[:, 0]]) for b in on]
            seeds += [np.column_stack([quarter.T @ b[:, 1], b[:, 1]]) for b in on]
            squares.extend(b * factor for b in _fit_bases(ac, np.stack(seeds), ch, cw, square=True))
    kept = [b for b in spares if not any(_same_or_coarser(k, b) for k in best)]
    return best, np.array(kept + squares, np.float64).reshape(-1, 2, 2)


def _merge_lattices(
    scored: list[tuple[np.ndarray, float]], limit: int
) -> list[tuple[np.ndarray, float]]:
    """Distinct lattices from (basis, score) pairs sorted by score, best first.

    A lattice whose points are all points of one already kept (the same lattice, or a
    coarser one such as twice the period) adds nothing; a finer one that scores at least
    _FINER_SCORE as well replaces the coarser one kept.
    """
    chosen: list[tuple[np.ndarray, float]] = []
    for b, s in scored:
        merged = False
        for n, (kept, ks) in enumerate(chosen):
            if _same_or_coarser(kept, b):
                merged = True
                break
            if _same_or_coarser(b, kept) and s >= _FINER_SCORE * ks:
                chosen[n] = (b, max(s, ks))
                merged = True
                break
        if not merged:
            chosen.append((b, s))
    chosen.sort(key=lambda c: c[1], reverse=True)
    return chosen[:limit]


def _canonical(basis: np.ndarray) -> np.ndarray:
    """The reduced basis of the same lattice whose first vector is nearest +x and which is
    right-handed (det > 0): one representative for the quarter-turn / mirror ambiguity."""
    u, v = basis[:, 0].copy(), basis[:, 1].copy()
    for _ in range(8):  # Lagrange-Gauss reduction: shortest, most orthogonal pair
        if np.dot(u, u) > np.dot(v, v):
            u, v = v, u
        m = round(float(np.dot(u, v) / np.dot(u, u)))
        if m == 0:
            break
        v = v - m * u
    vectors = [u, -u, v, -v]
    first = max(vectors, key=lambda w: w[0] / np.linalg.norm(w))
    others = [
        w
        for w in vectors
        if abs(abs(np.dot(w, first)) - np.linalg.norm(w) * np.linalg.norm(first)) > 1e-9
    ]
    second = max(others, key=lambda w: first[0] * w[1] - first[1] * w[0])
    return np.stack([first, second], axis=1)
