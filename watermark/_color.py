"""dtype handling and luma, in one place.

Working values are float32 on the 0..255 scale whatever the storage dtype; reductions
use float64; :func:`to_storage` rounds (never truncates) and clips back.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LUMA_WEIGHTS", "check_image", "luma", "storage_scale", "to_storage"]

# ITU-R BT.601 luma weights for R, G, B.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_MIN_SIDE = 16
_FLOAT_SLACK = 1.0 / 255.0  # one 8-bit level


def check_image(image: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Validate an image array and return it as an ndarray (no copy).

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray
        uint8, uint16, or float32/float64 in [0, 1]; RGB(A) channel order.

    Raises
    ------
    TypeError
        Unsupported dtype.
    ValueError
        Wrong number of dimensions or channels, a side under 16 px, non-finite floats, or
        floats outside [0, 1] by more than one 8-bit level (a resampling overshoot
        within that is clipped where the image is used).
    """
    arr = np.asarray(image)
    if arr.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise TypeError(f"{name} dtype must be uint8, uint16 or float32, got {arr.dtype}")
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ValueError(f"{name} must be (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    if min(arr.shape[:2]) < _MIN_SIDE:
        raise ValueError(f"{name} is {arr.shape[1]}x{arr.shape[0]} px; at least 16x16 is needed")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} has NaN or infinite values")
        # a float frame on the 0..255 scale would be clipped to white without a word
        low, high = float(arr.min()), float(arr.max())
        if low < -_FLOAT_SLACK or high > 1.0 + _FLOAT_SLACK:
            raise ValueError(
                f"{name} is {arr.dtype} with values in [{low:.4g}, {high:.4g}]; float images "
                "must be in [0, 1] (divide 0..255 data by 255)"
            )
    return arr


def storage_scale(dtype: np.dtype) -> float:
    """Factor from the working 0..255 scale to the storage dtype's scale."""
    if dtype == np.uint8:
        return 1.0
    if dtype == np.uint16:
        return 257.0
    return 1.0 / 255.0


def luma(image: np.ndarray) -> np.ndarray:
    """BT.601 luma on the 0..255 scale.

    Parameters
    ----------
    image : (H, W[, C]) ndarray, RGB(A) order, any dtype accepted by :func:`check_image`.

    Returns
    -------
    (H, W) float32 ndarray.
    """
    arr = check_image(image)
    scale = np.float32(1.0 / storage_scale(arr.dtype))
    if arr.ndim == 2 or arr.shape[2] == 1:
        y = arr.reshape(arr.shape[0], arr.shape[1]).astype(np.float32)
    else:
        y = arr[..., :3].astype(np.float32) @ LUMA_WEIGHTS
    if scale != 1.0:
        y *= scale
    return y


def to_storage(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip working values (already on the storage scale) into `dtype`."""
    if np.dtype(dtype).kind == "f":
        return np.clip(values, 0.0, 1.0).astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)
