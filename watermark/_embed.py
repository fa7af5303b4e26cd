"""Embedding of the keyed tiled spread-spectrum mark (contract stub, replaced by the codec)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EmbedResult", "embed_frame"]


@dataclass(frozen=True, slots=True)
class EmbedResult:
    """Result of :func:`embed_frame`.

    Attributes
    ----------
    image : ndarray
        Marked image, same shape and dtype as the input.
    psnr_y : float
        PSNR of the luma channel against the input, in dB (inf when unchanged).
    """

    image: np.ndarray
    psnr_y: float


def embed_frame(image: np.ndarray, key: bytes, payload: int, *, strength: float = 1.0) -> EmbedResult:
    """Mark one frame. STUB: returns a copy. The real codec replaces this body.

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray
        RGB(A) order, uint8, uint16 or float32 in [0, 1]. Alpha passes through bit-exact.
    key : bytes
        Studio secret (32 bytes).
    payload : int
        Delivery id, 0 <= payload < 2**32.
    """
    return EmbedResult(image=np.array(image, copy=True), psnr_y=float("inf"))
