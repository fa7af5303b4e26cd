"""Image-quality metrics on luma: PSNR-Y and SSIM-Y.

Pure computation: no files, only numpy and ``cv2`` array operations.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["luma", "psnr_y", "ssim_y"]

# ITU-R BT.601 luma weights for R, G, B (Y' = 0.299 R' + 0.587 G' + 0.114 B').
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])

# Scale from each accepted dtype to the 8-bit code range 0..255.
_TO_255 = {
    np.dtype(np.uint8): 1.0,
    np.dtype(np.uint16): 1.0 / 257.0,
    np.dtype(np.float32): 255.0,
    np.dtype(np.float64): 255.0,
}

_PEAK = 255.0  # peak signal on the 0..255 scale
_SSIM_WIN = 11  # Gaussian window size (pixels), as Wang et al. 2004
_SSIM_SIGMA = 1.5  # Gaussian window standard deviation (pixels)
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    """Return ``image`` as an ndarray after checking its shape and dtype."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:  # grey with a channel axis, as embed takes it
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(
            f"{name} must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    if arr.dtype not in _TO_255:
        raise TypeError(
            f"{name} must be uint8, uint16 or float32/float64 in [0, 1]; got dtype {arr.dtype}"
        )
    return arr


def luma(image: np.ndarray) -> np.ndarray:
    """BT.601 luma Y' of an image, on the 0..255 scale whatever the dtype.

    Parameters
    ----------
    image : (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) ndarray
        Grey, RGB or RGBA (RGB order), uint8, uint16, or float in [0, 1]. Alpha is ignored;
        a grey image is its own luma.

    Returns
    -------
    y : (H, W) float64 ndarray
        Luma in 8-bit code units: uint8 as is, uint16 divided by 257, float times 255.

    Raises
    ------
    ValueError
        If the shape is not (H, W), (H, W, 3) or (H, W, 4), or the image is empty.
    TypeError
        If the dtype is not uint8, uint16, float32 or float64.

    Notes
    -----
    ``Y' = 0.299 R' + 0.587 G' + 0.114 B'`` on the gamma-encoded values (no linearisation).

    References
    ----------
    ITU-R Recommendation BT.601-7, Studio encoding parameters of digital television for
    standard 4:3 and wide-screen 16:9 aspect ratios, 2011.

    Examples
    --------
    >>> import numpy as np
    >>> round(float(luma(np.full((2, 2, 3), 65535, dtype=np.uint16))[0, 0]), 9)
    255.0
    """
    arr = _check_image(image, "image")
    scale = _TO_255[arr.dtype]
    if arr.ndim == 2:
        return arr.astype(np.float64) * scale
    return (arr[..., :3].astype(np.float64) @ _LUMA_WEIGHTS) * scale


def _luma_pair(reference: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Luma of both images after checking that their (H, W) agree."""
    ref = _check_image(reference, "reference")
    tst = _check_image(test, "test")
    if ref.shape[:2] != tst.shape[:2]:
        raise ValueError(
            f"reference and test must have the same (H, W); got {ref.shape[:2]} and {tst.shape[:2]}"
        )
    return luma(ref), luma(tst)


def psnr_y(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio of the luma, in dB.

    Parameters
    ----------
    reference, test : (H, W), (H, W, 3) or (H, W, 4) ndarray
        Images with the same (H, W); dtypes may differ (both are put on the 0..255 scale by
        :func:`luma`).

    Returns
    -------
    psnr : float
        ``10 log10(255**2 / MSE)`` in dB; ``inf`` when the lumas are identical.

    Raises
    ------
    ValueError
        If a shape is invalid or the (H, W) differ.
    TypeError
        If a dtype is not supported.

    Notes
    -----
    ``MSE = mean((Y_ref - Y_test)**2)`` over all pixels, in float64, with peak 255 on the
    8-bit scale, so uint8 and uint16 versions of the same picture give the same figure.

    References
    ----------
    Q. Huynh-Thu, M. Ghanbari, Scope of validity of PSNR in image/video quality assessment,
    Electronics Letters 44(13), 2008. https://doi.org/10.1049/el:20080522

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((8, 8), dtype=np.uint8)
    >>> round(psnr_y(a, a + 1), 2)
    48.13
    """
    y_ref, y_test = _luma_pair(reference, test)
    mse = float(np.mean((y_ref - y_test) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(_PEAK**2 / mse))


def ssim_y(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean structural similarity (SSIM) of the luma.

    Parameters
    ----------
    reference, test : (H, W), (H, W, 3) or (H, W, 4) ndarray
        Images with the same (H, W), at least 11 x 11 pixels.

    Returns
    -------
    ssim : float
        Mean SSIM in [-1, 1]; 1.0 when the lumas are identical.

    Raises
    ------
    ValueError
        If a shape is invalid, the (H, W) differ, or the image is smaller than 11 x 11.
    TypeError
        If a dtype is not supported.

    Notes
    -----
    With local means ``mu``, variances ``sigma**2`` and covariance ``sigma_xy`` taken under
    an 11 x 11 Gaussian window (sigma 1.5 px, weights summing to 1),

    ``SSIM = ((2 mu_x mu_y + C1)(2 sigma_xy + C2)) /
    ((mu_x**2 + mu_y**2 + C1)(sigma_x**2 + sigma_y**2 + C2))``

    with ``C1 = (0.01 L)**2``, ``C2 = (0.03 L)**2``, ``L = 255``. The map is averaged over
    the positions where the window lies wholly inside the image (5 px border dropped), as
    the reference implementation and scikit-image's ``structural_similarity(...,
    gaussian_weights=True, use_sample_covariance=False, data_range=255)`` do.

    References
    ----------
    Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, Image quality assessment: from
    error visibility to structural similarity, IEEE Trans. Image Processing 13(4), 2004.
    https://doi.org/10.1109/TIP.2003.819861

    Examples
    --------
    >>> import numpy as np
    >>> a = np.arange(256, dtype=np.uint8).reshape(16, 16)
    >>> ssim_y(a, a)
    1.0
    """
    x, y = _luma_pair(reference, test)
    if min(x.shape) < _SSIM_WIN:
        raise ValueError(
            f"ssim_y needs images of at least {_SSIM_WIN} x {_SSIM_WIN} pixels; got {x.shape}"
        )

    def blur(a: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(
            a, (_SSIM_WIN, _SSIM_WIN), _SSIM_SIGMA, borderType=cv2.BORDER_REFLECT
        )

    c1 = (_SSIM_K1 * _PEAK) ** 2
    c2 = (_SSIM_K2 * _PEAK) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov_xy = blur(x * y) - mu_x * mu_y
    ssim_map = ((2.0 * mu_x * mu_y + c1) * (2.0 * cov_xy + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    )
    pad = _SSIM_WIN // 2
    return float(np.mean(ssim_map[pad:-pad, pad:-pad], dtype=np.float64))
