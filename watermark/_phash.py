"""Perceptual hash of a frame (pure: no I/O), used to index delivered assets.

A 64-bit DCT pHash: grey, shrink to 32x32 with area averaging, 2-D DCT-II, keep the 8x8
lowest frequencies without the DC row and column, and set one bit per coefficient above
their median. Near-duplicate frames (re-encoded, rescaled, lightly graded) land within a
few bits of each other; unrelated frames differ in about 32 bits.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.fft import dctn

__all__ = ["hamming", "perceptual_hash"]

_SIDE = 32
_BITS_SIDE = 8
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601
_BIT_WEIGHTS = np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)


def _to_unit_grey(image: np.ndarray) -> np.ndarray:
    """(H, W[, C]) uint8 / uint16 / float in [0, 1] -> (H, W) float32 grey in [0, 1]."""
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"image must be (H, W), (H, W, 3) or (H, W, 4); got shape {image.shape}")
    if image.dtype == np.uint8:
        scale = 1.0 / 255.0
    elif image.dtype == np.uint16:
        scale = 1.0 / 65535.0
    elif image.dtype in (np.float32, np.float64):
        scale = 1.0
    else:
        raise TypeError(f"image must be uint8, uint16 or float32 in [0, 1]; got {image.dtype}")
    grey = image.astype(np.float32) * np.float32(scale)
    if grey.ndim == 3:
        grey = grey[:, :, :3] @ _LUMA  # alpha ignored
    return grey


def perceptual_hash(image: np.ndarray) -> int:
    """64-bit DCT perceptual hash of an image.

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray
        uint8, uint16 or float32 in [0, 1]; RGB(A) order (alpha is ignored). Not
        modified.

    Returns
    -------
    int
        Hash in ``[0, 2**64)``; bit 63 is the coefficient at DCT position (1, 1), bits
        then run row-major over rows and columns 1 to 8. Display it as
        ``f"{h:016x}"``.

    Raises
    ------
    ValueError
        Bad shape or an empty image.
    TypeError
        Unsupported dtype.

    Notes
    -----
    With ``C = DCT-II(resize_32x32(Y))`` (orthonormal) and ``c = C[1:9, 1:9]``, bit
    ``k`` of the hash is ``c.flat[k] > median(c)``. Dropping the DC row and column makes
    the hash insensitive to brightness offsets.

    References
    ----------
    C. Zauner, "Implementation and benchmarking of perceptual image hash functions",
    Master's thesis, Upper Austria University of Applied Sciences, 2010 (pHash.org).

    Examples
    --------
    >>> rows, cols = np.mgrid[0:64, 0:64]
    >>> image = ((np.sin(cols / 7) * np.cos(rows / 5) + 1) * 100).astype(np.uint8)
    >>> hamming(perceptual_hash(image), perceptual_hash(image // 2 + 10)) <= 8
    True
    """
    image = np.asarray(image)
    if image.size == 0:
        raise ValueError(f"image must not be empty; got shape {image.shape}")
    grey = _to_unit_grey(image)
    small = cv2.resize(grey, (_SIDE, _SIDE), interpolation=cv2.INTER_AREA)  # cv2: (w, h)
    coeffs = dctn(small.astype(np.float64), type=2, norm="ortho")
    low = coeffs[1 : _BITS_SIDE + 1, 1 : _BITS_SIDE + 1].ravel()
    bits = (low > np.median(low)).astype(np.uint64)
    return int(np.sum(bits * _BIT_WEIGHTS, dtype=np.uint64))


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes.

    Parameters
    ----------
    a, b : int
        Hashes in ``[0, 2**64)``.

    Returns
    -------
    int
        Hamming distance, 0 to 64.

    Raises
    ------
    ValueError
        A hash outside ``[0, 2**64)``.

    Examples
    --------
    >>> hamming(0b1011, 0b0001)
    2
    """
    for name, value in (("a", a), ("b", b)):
        if not 0 <= int(value) < 2**64:
            raise ValueError(f"{name} must be in [0, 2**64); got {value}")
    return (int(a) ^ int(b)).bit_count()
