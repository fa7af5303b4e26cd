"""The picture's quadrilateral in a leak that shows a frame inside a dark surround.

A phone or camcorder pointed at a screen, or a frame put through a perspective warp, shows
the picture as a quadrilateral inside a dark, flat surround. Its four border lines give
the projective part of the leak's geometry directly, which the autocorrelation of the
tiling cannot: under a perspective the tile lattice changes across the frame, and line art
or hatching hides it altogether. No key is used.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["picture_quad", "rectifying_map"]

_ANALYSIS_SIDE = 1024  # px, long side of the image the border is looked for on
_BAND = 0.25  # the border lies within this share of the side from the leak's edge
_DARK = 40.0  # luma (0..255) at or under which a pixel may be surround
_FLAT = 10.0  # ... and local standard deviation at or under which
_MIN_ROWS = 0.3  # share of a side's rows (or columns) that must show surround to fit a line
_NO_SURROUND = 0.02  # ... and under which the side is the leak's own edge
_LINE_TOL = 1.5  # analysis px: points this close to a line are its inliers
_MIN_INLIERS = 0.4  # share of the surround rows a line must explain
_PAIRS = 256  # candidate lines per side
_EDGE_LINE = (0.0, -0.5)  # a side's line on the leak's own edge (the outer edge of column 0)
_EDGE_SAMPLES = 512  # places along a side where the edge's step is located
_EDGE_STEP = 0.25  # px, sampling step across the edge
_EDGE_TOL = 0.75  # px: places further off the refitted line are left out
_MIN_TILT = 0.004  # of the long side: a quad whose corners are all this close to the
# leak's corners needs no bringing back (the tile grid drifts by under a chip across the
# frame), nor does an axis-aligned one with a side on the leak's edge (a matte, a crop)


def _surround(y: np.ndarray) -> np.ndarray:
    """Dark, flat pixels connected to the image's edge (bool, same shape)."""
    mean = cv2.blur(y, (3, 3))
    var = cv2.blur(y * y, (3, 3)) - mean * mean
    # a window that straddles the picture's edge is not flat: the pixel beside the edge
    # comes back by one dilation
    flat = ((mean <= _DARK) & (var <= _FLAT * _FLAT)).astype(np.uint8)
    dark = cv2.dilate(flat, np.ones((3, 3), np.uint8)).astype(bool) & (y <= _DARK)
    n, labels = cv2.connectedComponents(dark.astype(np.uint8), connectivity=4)
    if n <= 1:
        return np.zeros_like(dark)
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    touching = np.unique(edge[edge > 0])
    return np.isin(labels, touching)


def _depths(mask: np.ndarray, band: int) -> np.ndarray:
    """Run of surround from column 0 inwards, per row, capped at `band` + 1."""
    inside = ~mask[:, : band + 1]
    first = np.where(inside.any(axis=1), np.argmax(inside, axis=1), band + 1)
    return first.astype(np.float64)


def _fit_side(depth: np.ndarray, band: int) -> tuple[float, float] | None:
    """Line ``x = a * t + b`` (t the row) through the picture's edge on one side: the
    leak's own edge when the side shows too little surround, None when the surround's
    runs end on no one line.

    Dark, flat content beside the edge carries the surround's run on into the picture,
    so a row's run is at or past the edge, never short of it: the line is the one most
    rows' runs end on (a consensus over lines through pairs of runs), refitted by least
    squares on them.
    """
    t = np.arange(depth.size, dtype=np.float64)
    use = (depth > 0) & (depth <= band)
    if use.sum() < _NO_SURROUND * depth.size:
        return _EDGE_LINE  # the picture reaches the leak's edge
    if use.sum() < max(8, _MIN_ROWS * depth.size):
        return None  # surround along part of the side only: a turned frame's corner
    x, t = depth[use] - 0.5, t[use]
    # candidate lines through pairs of runs far apart along the side (a fixed draw: the
    # same leak always gives the same lines)
    rng = np.random.default_rng(0)
    i = rng.integers(0, x.size, _PAIRS)
    j = rng.integers(0, x.size, _PAIRS)
    apart = np.abs(t[i] - t[j]) >= 0.25 * depth.size
    i, j = i[apart], j[apart]
    if i.size == 0:
        return None
    a = (x[j] - x[i]) / (t[j] - t[i])
    b = x[i] - a * t[i]
    hits = np.abs(x[None, :] - (a[:, None] * t[None, :] + b[:, None])) <= _LINE_TOL
    best = int(np.argmax(hits.sum(axis=1)))
    near = hits[best]
    if near.sum() < _MIN_INLIERS * x.size or np.ptp(t[near]) < 0.3 * depth.size:
        return None
    a_fit, b_fit = np.polyfit(t[near], x[near], 1)
    return float(a_fit), float(b_fit)


def _to_leak(
    side: str, x: np.ndarray, t: np.ndarray, h: int, w: int
) -> tuple[np.ndarray, np.ndarray]:
    """Leak (x, y) of a side's view coordinates: `x` inwards from that side, `t` along it."""
    if side == "left":
        return x, t
    if side == "right":
        return w - 1.0 - x, t
    if side == "top":
        return t, x
    return t, h - 1.0 - x


def _refine_side(y: np.ndarray, side: str, a: float, b: float, reach: float) -> tuple[float, float]:
    """The line ``x = a t + b`` (a side's view coordinates, full resolution) moved onto the
    picture's edge: the steepest step across it, to a quarter pixel, in many places along
    the side, refitted with the places off the line left out.

    The surround's run ends where the blurred step first leaves the dark, which is on
    the surround's side of the edge by a pixel or more; the step's steepest point is the
    edge itself. Returns the line unchanged when too few places agree.
    """
    h, w = y.shape
    length = h if side in ("left", "right") else w
    t = np.linspace(0.0, length - 1.0, min(length, _EDGE_SAMPLES))
    d = np.arange(-reach, reach + 1e-9, _EDGE_STEP)
    xv = (a * t + b)[:, None] + d[None, :]
    lx, ly = _to_leak(side, xv, np.broadcast_to(t[:, None], xv.shape), h, w)
    profile = cv2.remap(
        y,
        np.ascontiguousarray(lx, np.float32),
        np.ascontiguousarray(ly, np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    step = np.abs(np.diff(profile, axis=1))  # between samples k and k + 1
    k = np.argmax(step, axis=1)
    inner = (k > 0) & (k < step.shape[1] - 1)
    kc = np.clip(k, 1, step.shape[1] - 2)
    rows = np.arange(step.shape[0])
    lo, top, hi = step[rows, kc - 1], step[rows, kc], step[rows, kc + 1]
    curv = lo - 2.0 * top + hi
    sub = np.where(curv < 0, 0.5 * (lo - hi) / np.where(curv < 0, curv, -1.0), 0.0)
    at = a * t + b + d[0] + (k + 0.5 + np.clip(sub, -0.5, 0.5)) * _EDGE_STEP
    keep = inner.copy()
    if keep.sum() < _MIN_INLIERS * t.size:
        return a, b
    for _ in range(3):
        fa, fb = np.polyfit(t[keep], at[keep], 1)
        keep = inner & (np.abs(at - (fa * t + fb)) <= _EDGE_TOL)
        if keep.sum() < _MIN_INLIERS * t.size:
            return a, b
    fa, fb = np.polyfit(t[keep], at[keep], 1)
    return float(fa), float(fb)


def picture_quad(y: np.ndarray) -> np.ndarray | None:
    """Corners of the picture in a leak that shows it inside a dark surround.

    Each side's border is a straight line fitted to where the dark, flat surround
    connected to the leak's edge ends, row by row (column by column), then moved onto
    the steepest step across it at full resolution; the corners are the lines'
    intersections. A side without surround is the leak's own edge.

    Parameters
    ----------
    y : (H, W) float32 ndarray
        Luma of the leak, 0..255 scale.

    Returns
    -------
    (4, 2) float64 ndarray or None
        Corners (x, y) in leak pixels (pixel-centre coordinates: the corners of the
        picture's outer edge), clockwise from the top left. None when the leak shows no
        such quadrilateral: no surround, a surround whose edge is not straight, corners
        further than a quarter of the side from the leak's, or a quad that is the leak's
        own rectangle or a matte's (axis-aligned, a side on the leak's edge).
    """
    y = np.ascontiguousarray(y, np.float32)
    h, w = y.shape
    f = min(1.0, _ANALYSIS_SIDE / max(h, w))
    small = y if f == 1.0 else cv2.resize(y, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    mask = _surround(small)
    if not mask.any():
        return None
    views = {  # each side seen as "column 0 of an image whose rows run along it"
        "left": mask,
        "right": mask[:, ::-1],
        "top": mask.T,
        "bottom": mask.T[:, ::-1],
    }
    lines: dict[str, tuple[float, float]] = {}
    on_edge = False
    for side, view in views.items():
        band = max(2, int(_BAND * view.shape[1]))
        fit = _fit_side(_depths(view, band), band)
        if fit is None:
            return None
        a, b = fit
        if fit == _EDGE_LINE:
            lines[side], on_edge = _EDGE_LINE, True
            continue
        # to full resolution: view coordinates scale like pixel centres
        b = 0.5 * a + (b + 0.5 - 0.5 * a) / f - 0.5
        lines[side] = _refine_side(y, side, a, b, reach=2.0 / f + 2.0)

    def vertical(side: str) -> tuple[float, float]:  # x = a y + b
        a, b = lines[side]
        return (a, b) if side == "left" else (-a, w - 1.0 - b)

    def horizontal(side: str) -> tuple[float, float]:  # y = a x + b
        a, b = lines[side]
        return (a, b) if side == "top" else (-a, h - 1.0 - b)

    corners = []
    for hs, vs in (("top", "left"), ("top", "right"), ("bottom", "right"), ("bottom", "left")):
        ah, bh = horizontal(hs)
        av, bv = vertical(vs)
        det = 1.0 - av * ah
        if abs(det) < 1e-9:
            return None
        yy = (ah * bv + bh) / det
        corners.append((av * yy + bv, yy))
    quad = np.array(corners, np.float64)
    edges = _edges(h, w)
    moved = np.abs(quad - edges)
    if np.any(moved > _BAND * np.array([w, h]) + 1.0):
        return None
    if not cv2.isContourConvex(quad.astype(np.float32)):
        return None
    least = _MIN_TILT * max(h, w)
    if moved.max() < least:
        return None  # the leak's own rectangle: nothing to bring back
    lo, hi = quad.min(axis=0), quad.max(axis=0)
    box = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    if on_edge and np.abs(quad - box).max() < least:
        return None  # a matte (or a crop): bars over a picture that was not moved
    return quad


def rectifying_map(quad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(3, 3) leak -> picture homography taking `quad` onto the leak's own rectangle.

    Parameters
    ----------
    quad : (4, 2) float ndarray
        Corners from :func:`picture_quad`.
    shape : tuple
        (H, W, ...) of the leak.
    """
    target = _edges(*shape[:2]).astype(np.float32)
    return cv2.getPerspectiveTransform(np.asarray(quad, np.float32), target).astype(np.float64)


def _edges(h: int, w: int) -> np.ndarray:
    """(4, 2) corners (x, y) of an h x w image's outer edges, in pixel-centre coordinates,
    clockwise from the top left."""
    lo_x, hi_x, lo_y, hi_y = -0.5, w - 0.5, -0.5, h - 0.5
    return np.array([[lo_x, lo_y], [hi_x, lo_y], [hi_x, hi_y], [lo_x, hi_y]])
