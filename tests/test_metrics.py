"""Tests for watermark._metrics: luma, PSNR-Y, SSIM-Y."""

from __future__ import annotations

import numpy as np
import pytest

from watermark._metrics import luma, psnr_y, ssim_y


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


def _textured(shape: tuple[int, ...], dtype=np.uint8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    peak = np.iinfo(dtype).max
    return _frozen(rng.integers(0, peak + 1, size=shape, dtype=dtype))


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 straight from the formula: explicit loop over every 11 x 11 window."""
    r = np.arange(11) - 5
    g = np.exp(-(r**2) / (2 * 1.5**2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            a, b = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
            ma, mb = (w * a).sum(), (w * b).sum()
            va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
            cov = (w * (a - ma) * (b - mb)).sum()
            vals.append(
                ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
            )
    return float(np.mean(vals))


# ----------------------------------------------------------------------------- luma


def test_luma_bt601_weights_and_dtype():
    img = _frozen(np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8))
    y = luma(img)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, [[0.299 * 255, 0.587 * 255, 0.114 * 255]])


@pytest.mark.parametrize(
    ("dtype", "value"), [(np.uint8, 200), (np.uint16, 200 * 257), (np.float32, 200 / 255)]
)
def test_luma_same_scale_for_every_dtype(dtype, value):
    img = _frozen(np.full((4, 5, 3), value, dtype=dtype))
    np.testing.assert_allclose(luma(img), 200.0, rtol=1e-6)


def test_luma_grey_passes_through_and_alpha_is_ignored():
    grey = _textured((6, 7))
    np.testing.assert_array_equal(luma(grey), grey.astype(np.float64))
    rgb = _textured((6, 7, 3), seed=1)
    rgba = np.dstack([rgb, np.zeros((6, 7), np.uint8)])
    np.testing.assert_array_equal(luma(rgba), luma(rgb))


@pytest.mark.parametrize("shape", [(4,), (4, 4, 2), (4, 4, 5), (0, 4), (2, 2, 2, 3)])
def test_luma_rejects_bad_shape(shape):
    with pytest.raises(ValueError, match=r"shape|empty"):
        luma(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("dtype", [np.int32, np.int16, bool, np.complex64])
def test_luma_rejects_bad_dtype(dtype):
    with pytest.raises(TypeError, match="dtype"):
        luma(np.zeros((4, 4), dtype=dtype))


# ----------------------------------------------------------------------------- PSNR


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_psnr_inf_on_identical(dtype):
    img = _textured((16, 16, 3), dtype)
    assert psnr_y(img, img.copy()) == float("inf")


def test_psnr_known_value_for_constant_offset():
    ref = _frozen(np.full((32, 32, 3), 100, np.uint8))
    test = _frozen(np.full((32, 32, 3), 104, np.uint8))
    # MSE = 16 on the luma (all channels +4, weights sum to 1) -> 10 log10(255^2 / 16).
    assert psnr_y(ref, test) == pytest.approx(10 * np.log10(255**2 / 16), abs=1e-9)


def test_psnr_uint16_matches_uint8():
    a8 = _textured((16, 16, 3), seed=2)
    b8 = _textured((16, 16, 3), seed=3)
    a16, b16 = a8.astype(np.uint16) * 257, b8.astype(np.uint16) * 257
    assert psnr_y(a16, b16) == pytest.approx(psnr_y(a8, b8), abs=1e-9)


def test_psnr_rejects_size_mismatch():
    with pytest.raises(ValueError, match="same"):
        psnr_y(np.zeros((8, 8), np.uint8), np.zeros((8, 9), np.uint8))


def test_psnr_rejects_bad_test_dtype():
    with pytest.raises(TypeError, match="test"):
        psnr_y(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.int64))


# ----------------------------------------------------------------------------- SSIM


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_ssim_one_on_identical(dtype):
    img = _textured((32, 32, 3), dtype)
    assert ssim_y(img, img.copy()) == 1.0


def test_ssim_below_one_on_noisy_and_symmetric():
    ref = _textured((48, 40))
    rng = np.random.default_rng(7)
    noisy = _frozen(np.clip(ref + rng.normal(0, 20, ref.shape), 0, 255).round().astype(np.uint8))
    s = ssim_y(ref, noisy)
    assert -1.0 <= s < 0.999
    assert ssim_y(noisy, ref) == pytest.approx(s, abs=1e-12)


def test_ssim_matches_formula_on_small_case():
    rng = np.random.default_rng(11)
    x = _frozen(rng.integers(0, 256, (17, 19)).astype(np.uint8))
    y = _frozen(np.clip(x * 0.8 + 20 + rng.normal(0, 8, x.shape), 0, 255).round().astype(np.uint8))
    expected = _ssim_reference(x.astype(np.float64), y.astype(np.float64))
    assert ssim_y(x, y) == pytest.approx(expected, abs=1e-9)


def test_ssim_rejects_small_image():
    with pytest.raises(ValueError, match="at least 11"):
        ssim_y(np.zeros((10, 30), np.uint8), np.zeros((10, 30), np.uint8))


def test_ssim_rejects_size_mismatch():
    with pytest.raises(ValueError, match="same"):
        ssim_y(np.zeros((16, 16), np.uint8), np.zeros((16, 16, 3), np.uint8)[:15])


def test_a_channel_axis_of_one_is_grey_everywhere(tmp_path):
    """embed_frame and detect_frame take (H, W, 1) as grey: so do the metrics, the
    attacks and the image writer (they refused it)."""
    from watermark._attacks import apply_attack
    from watermark.media import read_image, write_image

    grey = _textured((64, 80))
    column = grey[..., None]
    np.testing.assert_array_equal(luma(column), luma(grey))
    assert psnr_y(column, grey) == np.inf and ssim_y(column, column) == 1.0
    attacked = apply_attack("jpeg50", column, seed=3)
    assert attacked.shape == (64, 80, 1)
    np.testing.assert_array_equal(attacked[..., 0], apply_attack("jpeg50", grey, seed=3))
    write_image(tmp_path / "g.png", column, format="png")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png").pixels, grey)
