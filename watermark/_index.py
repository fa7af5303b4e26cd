"""The asset index in memory: which registered original does a leak show, and where.

Every indexed asset contributes its local features (:mod:`watermark._features`). A leak's
features are matched against all of them at once (approximate nearest neighbours in FLANN
k-d trees), each match votes for the asset that owns it, and the assets with the most votes
are verified by fitting a homography to their matches. The index holds descriptors and
positions only, never the studio key.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from ._features import DESCRIPTOR_BYTES, Features, mirror_matrix
from ._register import MIN_INLIERS, estimate_homography, plausible_homography

__all__ = ["AssetIndex", "SourceMatch"]

_VERIFY = 8  # assets with the most votes that get a homography fit
_TREES = 4  # FLANN k-d trees
_TREE_SEED = 20261205  # OpenCV generator state the trees are built from
_CHECKS = 64  # leaves FLANN visits per query (accuracy / speed)
_NEIGHBOURS = 8  # nearest features fetched per query, to find one of another asset
# A feature of another asset this close to where the nearest one sits (as shares of each
# original's width and height) is the same feature of a near-duplicate original: a retake,
# a retouched version, the next frame of a hold or a slow pan, the same frame at another
# size. It is no ambiguity about what the leak shows, so it is no rival in the ratio test;
# it is a match of its own.
_TWIN_SHARE = 0.05
# Indexed features under which a leak's nearest are found exactly: FLANN's randomised
# trees cannot always return 8 neighbours among a handful of points (OpenCV asserts), and
# an exact search of a few thousand is as fast as the trees.
_EXACT_BELOW = 4096


@dataclass(frozen=True, slots=True)
class SourceMatch:
    """An indexed asset that a leak shows.

    Attributes
    ----------
    asset_id : int
        Registry id of the asset.
    homography : (3, 3) float64 ndarray
        Original -> leak pixel coordinates (coarse, from the indexed features).
    inliers : int
        Feature matches consistent with the homography.
    mirrored : bool
        The match came from the leak's mirror image (the leak is flipped).
    """

    asset_id: int
    homography: np.ndarray
    inliers: int
    mirrored: bool


@dataclass(frozen=True)
class AssetIndex:
    """Local features of many assets, stacked for matching.

    Matching uses randomised k-d trees (FLANN, built on first use and kept with the
    index): a leak is matched in tens of milliseconds whatever the number of assets,
    where an exhaustive search grows with it (0.4 s for 200 assets on one core).

    Attributes
    ----------
    owners : (N,) int64 ndarray
        Asset id of each feature.
    points : (N, 2) float32 ndarray
        Feature positions, in the asset's original pixels.
    descriptors : (N, 128) float32 ndarray
        Unit-norm descriptors.
    shapes : dict
        ``asset_id -> (height, width)`` of each original.
    """

    owners: np.ndarray
    points: np.ndarray
    descriptors: np.ndarray
    shapes: dict[int, tuple[int, int]]

    @classmethod
    def build(cls, entries: Iterable[tuple[int, tuple[int, int], Features]]) -> AssetIndex:
        """Stack ``(asset_id, (height, width), features)`` entries."""
        owners, points, descs, shapes = [], [], [], {}
        for asset_id, shape, feats in entries:
            shapes[int(asset_id)] = (int(shape[0]), int(shape[1]))
            owners.append(np.full(len(feats), int(asset_id), np.int64))
            points.append(feats.points)
            descs.append(feats.descriptors)
        if not owners:
            return cls(
                np.zeros(0, np.int64),
                np.zeros((0, 2), np.float32),
                np.zeros((0, DESCRIPTOR_BYTES), np.float32),
                {},
            )
        d = np.concatenate(descs).astype(np.float32)
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
        return cls(np.concatenate(owners), np.concatenate(points), d, shapes)

    @functools.cached_property
    def _unit_points(self) -> np.ndarray:
        """(N, 2) float32: feature positions as shares of their original's width, height."""
        ids = np.fromiter(self.shapes, np.int64, len(self.shapes))
        sizes = np.array([(w, h) for h, w in self.shapes.values()], np.float32).reshape(-1, 2)
        order = np.argsort(ids)
        return self.points / sizes[order][np.searchsorted(ids[order], self.owners)]

    @functools.cached_property
    def _tree(self) -> cv2.flann.Index:
        """FLANN randomised k-d trees over the descriptors (built once)."""
        # the randomised trees draw from OpenCV's generator: seeded, so the same leak
        # meets the same neighbours on every run (this sets the calling thread's state)
        cv2.setRNGSeed(_TREE_SEED)
        return cv2.flann.Index(self.descriptors, {"algorithm": 1, "trees": _TREES})

    def match(self, query: np.ndarray, *, ratio: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
        """Approximate nearest indexed features of each query descriptor, Lowe's ratio test.

        A query whose nearest feature stands out from the nearest one of another asset
        (by `ratio` in distance) matches it. The same feature of a near-duplicate original
        (another asset's, at the same place in its frame) is no rival: it matches too,
        when it also stands out, so that each of the near-duplicates can be verified.

        Parameters
        ----------
        query : (n, 128) uint8 ndarray
            Descriptors from :func:`watermark._features.local_features`.

        Returns
        -------
        query_index, index_row : (k,) int64 ndarrays
            Matched pairs, at most one per query and asset, nearest first per query.
        """
        if query.shape[0] == 0 or self.owners.size < 2:
            empty = np.zeros(0, np.int64)
            return empty, empty
        q = query.astype(np.float32)
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-6)
        k = min(_NEIGHBOURS, self.owners.size)
        rows, dist2 = self._nearest(q, k)
        owner = self.owners[rows]
        # Lowe's ratio test against the nearest feature of ANOTHER asset: a repeated
        # structure inside the right asset (the same outline drawn twice) is no ambiguity,
        # and neither is that structure in a near-duplicate (a twin of any of them)
        other = owner != owner[:, :1]
        at = self._unit_points[rows]
        near = np.abs(at[:, :, None] - at[:, None, :]).max(axis=3) <= _TWIN_SHARE  # (n, k, k)
        group = ~other  # the nearest asset's own features, then their twins, in any order
        for _ in range(2):
            group |= (near & group[:, None, :]).any(axis=2)
        twin = other & group
        rival_at = other & ~twin
        first = np.argmax(rival_at, axis=1)
        rival = np.where(rival_at.any(axis=1), dist2[np.arange(len(q)), first], np.inf)
        limit = (ratio * ratio) * rival[:, None]  # squared L2 distances
        # the nearest feature, and each twin that stands out as well (its asset's first)
        seen = np.zeros_like(twin)
        for j in range(1, k):  # k <= _NEIGHBOURS columns, not a loop over features
            seen[:, j] = (owner[:, :j] == owner[:, j : j + 1]).any(axis=1)
        take = (dist2 < limit) & ~seen & (twin | (np.arange(k) == 0))
        take &= take[:, :1]  # a query whose nearest fails the test matches nothing
        qi, col = np.nonzero(take)
        return qi.astype(np.int64), rows[qi, col]

    def _nearest(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows (int64) and squared L2 distances (float32) of the `k` nearest indexed
        descriptors of each unit row of `q`, nearest first."""
        if self.owners.size >= _EXACT_BELOW:
            rows, dist2 = self._tree.knnSearch(q, k, params={"checks": _CHECKS})
            return rows.astype(np.int64), dist2
        similarity = q @ self.descriptors.T  # unit vectors: |a - b|^2 = 2 - 2 a.b
        rows = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        best = np.take_along_axis(similarity, rows, axis=1)
        order = np.argsort(-best, axis=1, kind="stable")
        rows = np.take_along_axis(rows, order, axis=1).astype(np.int64)
        dist2 = np.maximum(2.0 - 2.0 * np.take_along_axis(best, order, axis=1), 0.0)
        return rows, dist2.astype(np.float32)

    def __len__(self) -> int:
        return len(self.shapes)

    def lookup(
        self,
        views: Iterable[tuple[Features, bool]],
        leak_shape: tuple[int, ...],
        *,
        max_matches: int = 4,
    ) -> list[SourceMatch]:
        """Assets the leak shows, best first.

        Parameters
        ----------
        views : iterable of (Features, bool)
            The leak's features, and whether they describe its mirror image (then in the
            mirror image's coordinates, see :func:`watermark._features.local_features`).
        leak_shape : tuple
            (H, W, ...) of the leak.
        max_matches : int
            At most this many assets are returned.

        Returns
        -------
        list of SourceMatch
            Verified by a plausible homography with at least :data:`MIN_INLIERS` inliers,
            sorted by inliers; empty when no indexed asset is recognised.
        """
        found: list[SourceMatch] = []
        if self.owners.size < 2:
            return found
        for feats, mirrored in views:
            qi, ti = self.match(feats.descriptors)
            if qi.size < MIN_INLIERS:
                continue
            owner = self.owners[ti]
            ids, votes = np.unique(owner, return_counts=True)
            for k in np.argsort(votes)[::-1][:_VERIFY]:
                if votes[k] < MIN_INLIERS:
                    break
                sel = owner == ids[k]
                h, inliers = estimate_homography(
                    self.points[ti[sel]], feats.points[qi[sel]], leak_shape
                )
                shape = self.shapes[int(ids[k])]
                if h is not None and mirrored:
                    h = mirror_matrix(int(leak_shape[1])) @ h
                if h is not None and plausible_homography(h, shape, leak_shape):
                    found.append(SourceMatch(int(ids[k]), h, inliers, mirrored))
        found.sort(key=lambda m: m.inliers, reverse=True)
        seen: set[int] = set()
        unique = []
        for m in found:
            if m.asset_id not in seen:
                seen.add(m.asset_id)
                unique.append(m)
        return unique[:max_matches]
