"""Blind detection of the keyed mark (contract stub, replaced by the codec)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Detection", "detect_frame"]


@dataclass(frozen=True, slots=True)
class Detection:
    """Verdict of :func:`detect_frame`.

    Attributes
    ----------
    found : bool
        True only when p_value <= the threshold AND the payload is identified.
    payload : int or None
        Delivery id (0 <= payload < 2**32) when found, else None.
    score : float
        The test statistic (a z-score; larger means more evidence of a mark).
    p_value : float
        False-alarm probability: the chance an unmarked image scores this high,
        corrected for the search over geometry hypotheses and candidates.
    scale : float
        Scale of the leak relative to the marked original (1.0 = unchanged).
    offset : tuple of int
        (row, col) offset of the tile grid, in pixels of the leak.
    """

    found: bool
    payload: int | None
    score: float
    p_value: float
    scale: float
    offset: tuple[int, int]


def detect_frame(
    image: np.ndarray,
    key: bytes,
    *,
    candidates: np.ndarray | None = None,
    p_threshold: float = 1e-6,
) -> Detection:
    """Look for the mark of ``key``. STUB: never finds anything.

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray
        RGB(A) order, uint8, uint16 or float32 in [0, 1].
    key : bytes
        Studio secret.
    candidates : (N,) uint64 ndarray, optional
        Delivery ids known to the registry. When given, the verdict is the best
        candidate (p_value corrected for N); when None, blind ECC decoding.
    p_threshold : float
        Accusation threshold on p_value.
    """
    return Detection(found=False, payload=None, score=0.0, p_value=1.0, scale=1.0, offset=(0, 0))
