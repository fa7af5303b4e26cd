"""Local features for finding a leak's source asset: SIFT keypoints with RootSIFT descriptors.

Features are computed on the luma, downscaled so that the long side is at most
``max_side`` pixels, and spread over a grid so that any crop of a frame keeps some of
them. Points are returned in the pixel coordinates of the image passed in, whatever
scale they were detected at, so features of an original and of a leak can be matched
directly and fed to a homography estimator.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["DESCRIPTOR_BYTES", "Features", "local_features", "match_features", "mirror_matrix"]

DESCRIPTOR_BYTES = 128
# SIFT's default contrast threshold (0.04) finds almost nothing in the flat fills of cel
# frames; a lower one keeps the corners of outlines and shading boundaries.
_CONTRAST_THRESHOLD = 0.015
_EDGE_THRESHOLD = 10.0  # SIFT's default: keypoints along straight edges are dropped
_GRID = 6  # features are spread over a _GRID x _GRID grid of the image


@dataclass(frozen=True, slots=True)
class Features:
    """Keypoints of one image.

    Attributes
    ----------
    points : (N, 2) float32 ndarray
        (x, y) positions in pixels of the image analysed (x to the right, y down).
    descriptors : (N, 128) uint8 ndarray
        RootSIFT descriptors scaled to 0..255 (unit L2 norm before scaling).
    """

    points: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def to_bytes(self) -> bytes:
        """Serialise: N x (2 float32 + 128 uint8), points first."""
        return self.points.astype("<f4").tobytes() + self.descriptors.astype(np.uint8).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Features:
        """Inverse of :meth:`to_bytes`.

        Raises
        ------
        ValueError
            The length is not a whole number of features.
        """
        per = 8 + DESCRIPTOR_BYTES
        if len(data) % per:
            raise ValueError(f"feature blob of {len(data)} bytes is not a multiple of {per}")
        n = len(data) // per
        points = np.frombuffer(data, "<f4", count=2 * n).reshape(n, 2).astype(np.float32)
        desc = np.frombuffer(data, np.uint8, offset=8 * n).reshape(n, DESCRIPTOR_BYTES)
        return cls(points, desc.copy())


def _spread(points: np.ndarray, response: np.ndarray, shape: tuple[int, int], n: int) -> np.ndarray:
    """Indices of at most `n` keypoints, taken round-robin over grid cells by response."""
    h, w = shape
    cell = (np.minimum(points[:, 1] * _GRID // h, _GRID - 1) * _GRID) + np.minimum(
        points[:, 0] * _GRID // w, _GRID - 1
    )
    cell = cell.astype(np.int64)
    order = np.lexsort((-response, cell))  # by cell, strongest first within a cell
    sorted_cells = cell[order]
    starts = np.searchsorted(sorted_cells, sorted_cells, side="left")
    rank = np.arange(order.size) - starts  # rank of each keypoint inside its cell
    pick = np.lexsort((-response[order], rank))[:n]
    return order[pick]


def local_features(
    y: np.ndarray,
    *,
    max_side: int = 1024,
    n_features: int = 512,
    mirrored: bool = False,
    contrast_threshold: float = _CONTRAST_THRESHOLD,
    edge_threshold: float = _EDGE_THRESHOLD,
) -> Features:
    """SIFT keypoints and RootSIFT descriptors of a luma image.

    Parameters
    ----------
    y : (H, W) uint8 or float32 ndarray
        Luma, 0..255 scale.
    max_side : int
        The image is downscaled so that its long side is at most this many pixels.
    n_features : int
        At most this many features, spread over the image.
    mirrored : bool
        Describe the left-right mirror image of `y` (points are in the mirror image's
        coordinates: compose a homography found from them with :func:`mirror_matrix`).
    contrast_threshold, edge_threshold : float
        SIFT's thresholds: lower contrast and higher edge thresholds keep more keypoints
        (slower, and more of them are noise).

    Returns
    -------
    Features
    """
    if y.ndim != 2 or min(y.shape) < 1:
        raise ValueError(f"luma must be a non-empty 2-D array, got shape {y.shape}")
    h, w = y.shape
    f = min(1.0, max_side / max(h, w))
    if f == 1.0:
        img = y
    elif min(h, w) * f >= 1.0:
        img = cv2.resize(y, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    else:  # a strip (16 x 16384): OpenCV would round its short side to 0 px
        size = (max(1, round(w * f)), max(1, round(h * f)))
        img = cv2.resize(y, size, interpolation=cv2.INTER_AREA)
    img = np.clip(img, 0, 255).astype(np.uint8) if img.dtype != np.uint8 else img
    if mirrored:
        img = np.ascontiguousarray(img[:, ::-1])
    # keep the strongest 3x what is wanted before spreading: bounds the descriptor work
    sift = cv2.SIFT_create(
        nfeatures=3 * n_features,
        contrastThreshold=contrast_threshold,
        edgeThreshold=edge_threshold,
    )
    keypoints, desc = sift.detectAndCompute(img, None)
    if desc is None or not keypoints:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_BYTES), np.uint8))
    pts = np.array([k.pt for k in keypoints], np.float32)
    response = np.array([k.response for k in keypoints], np.float32)
    keep = _spread(pts, response, img.shape, n_features)
    pts, desc = pts[keep], desc[keep].astype(np.float32)
    # RootSIFT (Arandjelovic & Zisserman 2012): Hellinger kernel, better matching than L2
    desc /= np.maximum(desc.sum(axis=1, keepdims=True), 1e-6)
    desc = np.sqrt(desc)
    desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-6)
    pts = (pts + 0.5) / f - 0.5  # back to the pixel grid of `y`
    return Features(pts.astype(np.float32), np.rint(desc * 255.0).astype(np.uint8))


def mirror_matrix(width: int) -> np.ndarray:
    """(3, 3) homography of a left-right flip of an image `width` pixels wide."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def match_features(
    query: np.ndarray, train: np.ndarray, *, ratio: float = 0.8
) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest-neighbour matches passing Lowe's ratio test (for a few thousand
    features; the asset index uses :meth:`watermark._index.AssetIndex.match`).

    Parameters
    ----------
    query : (n, 128) uint8 ndarray
    train : (m, 128) uint8 ndarray
        Descriptors as from :func:`local_features`.
    ratio : float
        A match is kept when its distance is below `ratio` times the second nearest.

    Returns
    -------
    query_index, train_index : (k,) int64 ndarrays
    """
    n = query.shape[0]
    if n == 0 or train.shape[0] < 2:
        empty = np.zeros(0, np.int64)
        return empty, empty
    q = query.astype(np.float32) * np.float32(1.0 / 255.0)
    t = train.astype(np.float32) * np.float32(1.0 / 255.0)
    sim = q @ t.T  # unit vectors: distance^2 = 2 - 2 sim
    rows = np.arange(n)
    best = sim.argmax(axis=1)
    s1 = sim[rows, best].copy()
    sim[rows, best] = -np.inf
    s2 = sim.max(axis=1)
    d1 = np.sqrt(np.maximum(2.0 - 2.0 * s1, 0.0))
    d2 = np.sqrt(np.maximum(2.0 - 2.0 * s2, 0.0))
    ok = d1 < ratio * d2
    return rows[ok].astype(np.int64), best[ok].astype(np.int64)
