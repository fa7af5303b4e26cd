"""Registration of a leak to its original: homography from matched features, refined by ECC.

Homographies here map original pixel coordinates to leak pixel coordinates, as 3x3
float64 arrays acting on ``(x, y, 1)`` column vectors (x to the right, y down).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ._carrier import TILE_CHIPS
from ._features import Features, local_features, match_features, mirror_matrix

__all__ = [
    "MIN_INLIERS",
    "Geometry",
    "choose_model",
    "describe_homography",
    "describe_tile_axes",
    "estimate_homography",
    "estimate_similarity",
    "local_scale",
    "match_original",
    "plausible_homography",
    "refine_homography",
]

MIN_INLIERS = 10  # matches a homography needs before it is believed
_RANSAC_PX = 0.006  # inlier tolerance, as a fraction of the leak's long side
# OpenCV's random draws are seeded before each robust fit, so a leak registers the same way
# on every run (evidence that can be reproduced), whatever else used OpenCV's generator;
# this sets that generator's state in the calling thread
_RANSAC_SEED = 20261205
# Most draws ever made for one homography. MAGSAC++ stops as soon as it is confident, so
# this ceiling only binds when few matches are right: a textured frame turned 90 degrees,
# whose grain matches almost anywhere, had 61 of 348 matches right under one studio key,
# and 4,000 draws missed the model (3 of 2,700 such leaks under random keys). With 20,000,
# the tests fit 400 matches of which 50 are right; where nothing fits they cost < 10 ms.
_RANSAC_MAX_DRAWS = 20000
# Matches spanning less than this fraction of the leak's area pin down a similarity, not
# the eight degrees of freedom of a homography (which then extrapolates wildly)
_MIN_HOMOGRAPHY_SPREAD = 0.25
_ECC_SIDE = 768  # long side of the images the ECC refinement works on, px
_ECC_ITERATIONS = 40
_MAX_REFINE_SHIFT = 0.02  # ECC may move the leak's corners by this fraction of its side


@dataclass(frozen=True, slots=True)
class Geometry:
    """How a leak sits on its original, from the registration homography.

    Attributes
    ----------
    rotation : float
        Counter-clockwise rotation of the original's content in the leak, degrees in
        (-180, 180], measured at the leak's centre.
    scale_x, scale_y : float
        Leak pixels per original pixel along the original's x and y axes.
    flipped : bool
        The leak is a mirror image of the original.
    offset : tuple of float
        (x, y) of the original's pixel that lands on the leak's centre, in original pixels.
    """

    rotation: float
    scale_x: float
    scale_y: float
    flipped: bool
    offset: tuple[float, float]

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "rotation_deg": round(self.rotation, 3),
            "scale_x": round(self.scale_x, 5),
            "scale_y": round(self.scale_y, 5),
            "flipped": self.flipped,
            "offset_px": [round(self.offset[0], 2), round(self.offset[1], 2)],
        }


def _apply(h: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through homography `h`."""
    return cv2.perspectiveTransform(xy.reshape(-1, 1, 2).astype(np.float64), h).reshape(-1, 2)


def _jacobian(h: np.ndarray, xy: tuple[float, float]) -> np.ndarray:
    """2x2 derivative of the homography at original point `xy`."""
    x, y = xy
    u, v, w = h @ np.array([x, y, 1.0])
    return np.array(
        [
            [(h[0, 0] * w - u * h[2, 0]) / w**2, (h[0, 1] * w - u * h[2, 1]) / w**2],
            [(h[1, 0] * w - v * h[2, 0]) / w**2, (h[1, 1] * w - v * h[2, 1]) / w**2],
        ]
    )


def local_scale(h: np.ndarray, xy: tuple[float, float]) -> float:
    """Leak pixels per original pixel (geometric mean of the axes) at original point `xy`."""
    return math.sqrt(abs(float(np.linalg.det(_jacobian(h, xy)))))


def describe_homography(h: np.ndarray, leak_shape: tuple[int, ...]) -> Geometry:
    """Rotation, per-axis scale, flip and offset of a registration.

    Parameters
    ----------
    h : (3, 3) float ndarray
        Original -> leak homography.
    leak_shape : tuple
        (H, W, ...) of the leak.
    """
    centre = np.array([[(leak_shape[1] - 1) / 2.0, (leak_shape[0] - 1) / 2.0]])
    at = _apply(np.linalg.inv(h), centre)[0]
    j = _jacobian(h, (float(at[0]), float(at[1])))
    flipped = bool(np.linalg.det(j) < 0)
    if flipped:
        j = j @ np.diag([-1.0, 1.0])
    # image y points down, so a counter-clockwise turn on screen has a negative angle here
    rotation = -math.degrees(math.atan2(j[1, 0], j[0, 0]))
    return Geometry(
        rotation=float(rotation),
        scale_x=float(np.linalg.norm(j[:, 0])),
        scale_y=float(np.linalg.norm(j[:, 1])),
        flipped=flipped,
        offset=(float(at[0]), float(at[1])),
    )


def describe_tile_axes(
    axes: tuple[float, float, float, float],
    offset_chips: tuple[float, float],
    chip_px: float,
    leak_shape: tuple[int, ...],
) -> Geometry:
    """Geometry of a leak from where the blind decoder found the mark's tile grid.

    Parameters
    ----------
    axes : (a, b, c, d)
        Leak pixels per tile chip, see :attr:`watermark._detect.Detection.axes`.
    offset_chips : (row, col)
        Tile chip under the leak's top-left pixel.
    chip_px : float
        The original's chip size (pixels per chip, see
        :func:`watermark._carrier.chip_level`).
    leak_shape : tuple
        (H, W, ...) of the leak.

    Returns
    -------
    Geometry
        ``offset`` is known only modulo the tile (the mark repeats every
        ``32 * chip_px`` original pixels): it is reduced into the first tile.
    """
    linear = np.array([[axes[0], axes[1]], [axes[2], axes[3]]], np.float64) / float(chip_px)
    top_left = np.array([offset_chips[1], offset_chips[0]], np.float64) * float(chip_px)
    h = np.eye(3)
    h[:2, :2] = linear
    h[:2, 2] = -linear @ top_left  # the original point `top_left` lands on leak (0, 0)
    g = describe_homography(h, leak_shape)
    period = TILE_CHIPS * float(chip_px)
    return Geometry(
        g.rotation, g.scale_x, g.scale_y, g.flipped, (g.offset[0] % period, g.offset[1] % period)
    )


def plausible_homography(
    h: np.ndarray, original_shape: tuple[int, ...], leak_shape: tuple[int, ...]
) -> bool:
    """True when `h` is a sane picture of a camera or editor: finite, the original's
    corners stay in front of the camera, its outline stays convex, the scale is in
    [1/40, 40] and the leak overlaps the original."""
    if h is None or not np.all(np.isfinite(h)):
        return False
    oh, ow = original_shape[:2]
    corners = np.array([[0, 0], [ow - 1, 0], [ow - 1, oh - 1], [0, oh - 1]], np.float64)
    w = corners @ h[2, :2] + h[2, 2]
    if not (np.all(w > 0) or np.all(w < 0)):
        return False
    quad = _apply(h, corners)
    edges = np.roll(quad, -1, axis=0) - quad
    turns = (
        edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1]
        - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
    )
    if not (np.all(turns > 0) or np.all(turns < 0)):
        return False
    area = 0.5 * abs(
        float(np.sum(quad[:, 0] * np.roll(quad[:, 1], -1) - quad[:, 1] * np.roll(quad[:, 0], -1)))
    )
    scale = math.sqrt(area / float(oh * ow))
    if not 1 / 40 <= scale <= 40:
        return False
    lh, lw = leak_shape[:2]
    inside = (quad[:, 0].max() > 0) & (quad[:, 0].min() < lw) & (quad[:, 1].max() > 0)
    return bool(inside & (quad[:, 1].min() < lh))


def estimate_homography(
    original_xy: np.ndarray, leak_xy: np.ndarray, leak_shape: tuple[int, ...]
) -> tuple[np.ndarray | None, int]:
    """Robust homography from matched points (USAC MAGSAC++).

    Parameters
    ----------
    original_xy, leak_xy : (N, 2) float ndarrays
        Matched positions, in original and leak pixels.
    leak_shape : tuple
        (H, W, ...) of the leak; sets the inlier tolerance.

    Returns
    -------
    homography : (3, 3) float64 ndarray or None
        Original -> leak, None when fewer than :data:`MIN_INLIERS` matches agree.
    inliers : int
    """
    if len(original_xy) < MIN_INLIERS:
        return None, 0
    tol = max(2.0, _RANSAC_PX * max(leak_shape[:2]))
    cv2.setRNGSeed(_RANSAC_SEED)
    h, mask = cv2.findHomography(
        original_xy.astype(np.float32),
        leak_xy.astype(np.float32),
        cv2.USAC_MAGSAC,
        tol,
        maxIters=_RANSAC_MAX_DRAWS,
        confidence=0.999,
    )
    if h is None or mask is None:
        return None, 0
    inliers = int(mask.sum())
    if inliers < MIN_INLIERS:
        return None, inliers
    return h.astype(np.float64), inliers


def estimate_similarity(
    original_xy: np.ndarray, leak_xy: np.ndarray, leak_shape: tuple[int, ...]
) -> tuple[np.ndarray | None, int, float]:
    """Robust similarity (rotation, uniform scale, shift) from matched points.

    Parameters
    ----------
    original_xy, leak_xy : (N, 2) float ndarrays
        Matched positions, in original and leak pixels.
    leak_shape : tuple
        (H, W, ...) of the leak; sets the inlier tolerance.

    Returns
    -------
    homography : (3, 3) float64 ndarray or None
        Original -> leak, None when fewer than :data:`MIN_INLIERS` matches agree.
    inliers : int
    spread : float
        Area of the inliers' bounding box in the leak, as a fraction of the leak's area
        (0..1): how far the matches constrain anything more than a similarity.
    """
    if len(original_xy) < MIN_INLIERS:
        return None, 0, 0.0
    tol = max(2.0, _RANSAC_PX * max(leak_shape[:2]))
    cv2.setRNGSeed(_RANSAC_SEED)
    m, mask = cv2.estimateAffinePartial2D(
        original_xy.astype(np.float32),
        leak_xy.astype(np.float32),
        method=cv2.RANSAC,
        ransacReprojThreshold=tol,
        maxIters=4000,
        confidence=0.999,
    )
    if m is None or mask is None:
        return None, 0, 0.0
    keep = mask.ravel().astype(bool)
    inliers = int(keep.sum())
    if inliers < MIN_INLIERS:
        return None, inliers, 0.0
    pts = leak_xy[keep]
    extent = np.ptp(pts, axis=0)
    spread = float(extent[0] * extent[1]) / float(leak_shape[0] * leak_shape[1])
    return np.vstack([m, [0.0, 0.0, 1.0]]).astype(np.float64), inliers, min(1.0, spread)


def choose_model(
    original_xy: np.ndarray, leak_xy: np.ndarray, leak_shape: tuple[int, ...]
) -> tuple[np.ndarray | None, int]:
    """Homography from matches, or a similarity when the matches are bunched together.

    Matches along one stretch of outline (a corner of a flat frame) fit a homography as
    well as the truth, and its perspective terms then throw the rest of the leak off: a
    similarity is used when its inliers span less than a quarter of the leak.

    Returns
    -------
    homography : (3, 3) float64 ndarray or None
    inliers : int
    """
    h, inliers = estimate_homography(original_xy, leak_xy, leak_shape)
    if h is None:
        return h, inliers
    sim, sim_inliers, spread = estimate_similarity(original_xy, leak_xy, leak_shape)
    if sim is not None and spread < _MIN_HOMOGRAPHY_SPREAD:
        return sim, sim_inliers
    return h, inliers


def match_original(
    leak: Features,
    mirrored: bool,
    leak_shape: tuple[int, ...],
    original_y: np.ndarray,
    coarse: np.ndarray,
    *,
    leak_factor: float,
) -> tuple[np.ndarray | None, int]:
    """Homography from fresh features of the part of the original the leak shows.

    The index keeps a few hundred features per asset; a leak that shows a small corner
    of the original meets only a handful of them. With the original at hand, its
    footprint under the `coarse` homography is described again, at the leak's own
    resolution, which gives many more (and better placed) matches.

    Parameters
    ----------
    leak : Features
        The leak's features (of its mirror image when `mirrored`).
    mirrored : bool
        Whether `leak` describes the leak's mirror image.
    leak_shape : tuple
        (H, W, ...) of the leak.
    original_y : (H, W) float32 ndarray
        The original's luma, 0..255.
    coarse : (3, 3) float64 ndarray
        Original -> leak homography found so far.
    leak_factor : float
        The resize factor the leak's features were computed at (<= 1).

    Returns
    -------
    homography : (3, 3) float64 ndarray or None
        Original -> leak; None when no plausible homography is found.
    inliers : int
    """
    lh, lw = leak_shape[:2]
    oh, ow = original_y.shape
    corners = np.array([[0, 0], [lw - 1, 0], [lw - 1, lh - 1], [0, lh - 1]], np.float64)
    foot = _apply(np.linalg.inv(coarse), corners)
    pad = 0.05 * max(oh, ow)
    x0, y0 = (max(0, int(np.floor(foot[:, i].min() - pad))) for i in (0, 1))
    x1 = min(ow, int(np.ceil(foot[:, 0].max() + pad)))
    y1 = min(oh, int(np.ceil(foot[:, 1].max() + pad)))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return None, 0
    scale = local_scale(coarse, ((x0 + x1) / 2, (y0 + y1) / 2))
    b = min(1.0, scale * leak_factor)
    side = max(16, int(np.ceil(max(x1 - x0, y1 - y0) * b)))
    region = local_features(original_y[y0:y1, x0:x1], max_side=side, n_features=1024)
    qi, ti = match_features(leak.descriptors, region.descriptors)
    src = region.points[ti] + np.array([x0, y0], np.float32)
    h, inliers = estimate_homography(src, leak.points[qi], leak_shape)
    if h is None:
        return None, inliers
    if mirrored:
        h = mirror_matrix(lw) @ h
    if not plausible_homography(h, original_y.shape, leak_shape):
        return None, 0
    return h, inliers


def _scaling(f: float) -> np.ndarray:
    """Pixel-grid map of a resize by `f` (pixel centres stay pixel centres)."""
    o = 0.5 * f - 0.5
    return np.array([[f, 0.0, o], [0.0, f, o], [0.0, 0.0, 1.0]])


def refine_homography(
    leak_y: np.ndarray, original_y: np.ndarray, h: np.ndarray
) -> tuple[np.ndarray, float]:
    """Refine a registration by maximising the enhanced correlation coefficient (ECC).

    ECC is invariant to brightness and contrast, and aligns on every edge of the frame
    rather than on a few hundred keypoints, which brings the registration to a fraction
    of a pixel; the mark's chips are a few pixels wide.

    Parameters
    ----------
    leak_y, original_y : (H, W) float32 ndarrays
        Luma, 0..255.
    h : (3, 3) float64 ndarray
        Original -> leak homography to start from.

    Returns
    -------
    homography : (3, 3) float64 ndarray
        The refined homography, or `h` when ECC fails or wanders off.
    rho : float
        Correlation coefficient reached (0 when not refined).
    """
    lh, lw = leak_y.shape
    a = min(1.0, _ECC_SIDE / max(lh, lw))
    scale = local_scale(h, ((original_y.shape[1] - 1) / 2, (original_y.shape[0] - 1) / 2))
    b = min(1.0, a * scale)
    sa, sb = _scaling(a), _scaling(b)
    leak_s = cv2.resize(leak_y, None, fx=a, fy=a, interpolation=cv2.INTER_AREA) if a < 1 else leak_y
    orig_s = (
        cv2.resize(original_y, None, fx=b, fy=b, interpolation=cv2.INTER_AREA)
        if b < 1
        else original_y
    )
    # template = small leak, input = small original; warp maps template -> input pixels
    warp = sb @ np.linalg.inv(h) @ np.linalg.inv(sa)
    warp /= warp[2, 2]
    ones = np.full(orig_s.shape, 255, np.uint8)
    inside = cv2.warpPerspective(
        ones,
        warp,
        (leak_s.shape[1], leak_s.shape[0]),
        flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
    )
    inside = cv2.erode(inside, np.ones((5, 5), np.uint8))
    if cv2.countNonZero(inside) < 400:
        return h, 0.0
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, _ECC_ITERATIONS, 1e-6)
    try:
        rho, refined = cv2.findTransformECCWithMask(
            leak_s.astype(np.float32),
            orig_s.astype(np.float32),
            inside,
            ones,
            warp.astype(np.float32),
            cv2.MOTION_HOMOGRAPHY,
            criteria,
            5,
        )
    except cv2.error:
        return h, 0.0
    new_h = np.linalg.inv(np.linalg.inv(sb) @ refined.astype(np.float64) @ sa)
    new_h /= new_h[2, 2]
    corners = np.array([[0, 0], [lw - 1, 0], [lw - 1, lh - 1], [0, lh - 1]], np.float64)
    old_pts = _apply(np.linalg.inv(h), corners)
    new_pts = _apply(np.linalg.inv(new_h), corners)
    moved = float(np.max(np.linalg.norm(old_pts - new_pts, axis=1)))
    limit = _MAX_REFINE_SHIFT * max(original_y.shape)
    if not np.all(np.isfinite(new_h)) or moved > limit:
        return h, 0.0
    return new_h, float(rho)
