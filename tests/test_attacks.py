"""Tests for watermark._attacks: dtype, purity, reproducibility, sizes, bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from watermark import _attacks as atk
from watermark._attacks import (
    ATTACKS,
    BLIND_MATRIX_ATTACKS,
    FOUNDATION_ATTACKS,
    GEOMETRY_ATTACKS,
    INFORMED_ATTACKS,
    Attack,
    apply_attack,
    attack_names,
)
from watermark._metrics import psnr_y

DTYPES = (np.uint8, np.uint16)

ISSUE_NAMES = (
    *FOUNDATION_ATTACKS,
    *BLIND_MATRIX_ATTACKS,
    *GEOMETRY_ATTACKS,
    *INFORMED_ATTACKS,
)


def _frame(shape=(96, 128, 3), dtype=np.uint8, seed=0) -> np.ndarray:
    """Smooth gradient + texture, read-only, so filters and codecs have work to do."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    base = 0.5 + 0.3 * np.sin(rows / 9.0) * np.cos(cols / 13.0)
    chans = shape[2] if len(shape) == 3 else 1
    x = base[..., None] + 0.1 * rng.standard_normal((*shape[:2], chans))
    x[..., :] += np.linspace(-0.1, 0.1, chans)
    peak = np.iinfo(dtype).max
    img = np.clip(np.rint(x * peak), 0, peak).astype(dtype).reshape(shape)
    if len(shape) == 3 and shape[2] == 4:
        img[..., 3] = np.round(np.linspace(0, peak, shape[1])).astype(dtype)
    img.setflags(write=False)
    return img


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- registry


def test_registry_holds_the_issue_names():
    assert set(ISSUE_NAMES) <= set(ATTACKS)
    assert len(BLIND_MATRIX_ATTACKS) == 34 and len(GEOMETRY_ATTACKS) == 16
    assert all(ATTACKS[n].informed_only for n in ("scale0.2", "camcorder10"))
    assert not any(ATTACKS[n].informed_only for n in BLIND_MATRIX_ATTACKS + GEOMETRY_ATTACKS)
    assert set(FOUNDATION_ATTACKS) <= set(ATTACKS)
    assert FOUNDATION_ATTACKS == ("none", "jpeg50", "scale0.5", "crop50", "combined")
    for name, attack in ATTACKS.items():
        assert isinstance(attack, Attack)
        assert attack.name == name
        assert isinstance(attack.strength, float)


def test_registry_is_read_only():
    with pytest.raises(TypeError):
        ATTACKS["mine"] = ATTACKS["none"]  # type: ignore[index]


def test_attack_names_by_family_and_group():
    assert attack_names() == tuple(ATTACKS)
    assert attack_names("jpeg") == ("jpeg15", "jpeg30", "jpeg50", "jpeg70", "jpeg90")
    assert attack_names(group="compression") == attack_names("jpeg") + attack_names("webp")
    families = {a.family for a in ATTACKS.values()}
    assert sum(len(attack_names(f)) for f in families) == len(ATTACKS)
    groups = {a.group for a in ATTACKS.values()}
    assert sum(len(attack_names(group=g)) for g in groups) == len(ATTACKS)
    assert set(atk.FAMILY_UNITS) == families


def test_family_ladders_are_sorted_by_strength_and_named_consistently():
    for family in {a.family for a in ATTACKS.values()}:
        members = [ATTACKS[n] for n in attack_names(family)]
        assert len({a.group for a in members}) == 1


def test_attack_names_rejects_unknown_family_or_group():
    with pytest.raises(ValueError, match="'colours'"):
        attack_names("colours")
    with pytest.raises(ValueError, match="'colours'"):
        attack_names(group="colours")


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_attack_keeps_dtype_input_and_is_reproducible(name, dtype):
    img = _frame((96, 128, 3), dtype)
    before = img.copy()
    out = apply_attack(name, img, seed=3)
    assert out.dtype == dtype
    assert out.ndim == 3 and out.shape[2] == 3
    assert not np.shares_memory(out, img)
    np.testing.assert_array_equal(img, before)
    np.testing.assert_array_equal(apply_attack(name, img, seed=3), out)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_on_grey_and_rgba(name):
    for shape in ((64, 80), (64, 80, 4)):
        img = _frame(shape)
        out = apply_attack(name, img, seed=1)
        assert out.dtype == np.uint8
        if len(shape) == 2:
            assert out.ndim == 2
        else:
            assert out.shape[2] in (3, 4)


def test_seed_changes_random_attacks_only():
    img = _frame()
    a, b = apply_attack("noise5", img, seed=0), apply_attack("noise5", img, seed=1)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(apply_attack("jpeg50", img, seed=0), atk.jpeg(img, 50))


def test_none_is_an_exact_copy():
    img = _frame()
    out = apply_attack("none", img, seed=0)
    np.testing.assert_array_equal(out, img)
    assert out.flags.writeable


def test_apply_attack_rejects_unknown_name():
    with pytest.raises(ValueError, match="'jpeg51'"):
        apply_attack("jpeg51", _frame(), seed=0)


def test_apply_attack_rejects_negative_seed():
    with pytest.raises(ValueError, match="-1"):
        apply_attack("none", _frame(), seed=-1)


@pytest.mark.parametrize("seed", [1.5, "3", True, None])
def test_apply_attack_rejects_non_int_seed(seed):
    with pytest.raises(TypeError, match="seed"):
        apply_attack("none", _frame(), seed=seed)


# ----------------------------------------------------------------------------- input checks


@pytest.mark.parametrize("shape", [(8,), (8, 8, 2), (8, 8, 5), (0, 8, 3), (2, 8, 8, 3)])
def test_rejects_bad_shape(shape):
    with pytest.raises(ValueError, match="shape"):
        atk.jpeg(np.zeros(shape, np.uint8), 50)


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.int64, bool])
def test_rejects_bad_dtype(dtype):
    with pytest.raises(TypeError, match="dtype"):
        atk.brightness(np.zeros((8, 8), dtype), 10)


@pytest.mark.parametrize(
    ("call", "bad"),
    [
        (lambda im, v: atk.jpeg(im, v), 0),
        (lambda im, v: atk.jpeg(im, v), 101),
        (lambda im, v: atk.webp(im, v), 0),
        (lambda im, v: atk.webp(im, v), 101),
        (lambda im, v: atk.rescale(im, v), 0.0),
        (lambda im, v: atk.rescale(im, v), -0.5),
        (lambda im, v: atk.rescale(im, v), 9.0),
        (lambda im, v: atk.rescale(im, v), float("nan")),
        (lambda im, v: atk.crop(im, v, rng=_rng()), 0.0),
        (lambda im, v: atk.crop(im, v, rng=_rng()), 1.5),
        (lambda im, v: atk.gaussian_blur(im, v), -1.0),
        (lambda im, v: atk.gaussian_blur(im, v), 51.0),
        (lambda im, v: atk.median(im, v), 4),
        (lambda im, v: atk.median(im, v), 1),
        (lambda im, v: atk.median(im, v), 17),
        (lambda im, v: atk.unsharp(im, sigma=v), 0.0),
        (lambda im, v: atk.unsharp(im, amount=v), -1.0),
        (lambda im, v: atk.gaussian_noise(im, v, rng=_rng()), -1.0),
        (lambda im, v: atk.gaussian_noise(im, v, rng=_rng()), float("inf")),
        (lambda im, v: atk.salt_pepper(im, v, rng=_rng()), 1.1),
        (lambda im, v: atk.brightness(im, v), 256),
        (lambda im, v: atk.contrast(im, v), -0.1),
        (lambda im, v: atk.gamma(im, v), 0.0),
        (lambda im, v: atk.saturation(im, v), -1.0),
        (lambda im, v: atk.hue_shift(im, v), 400),
        (lambda im, v: atk.player_bar(im, v, rng=_rng()), 0.0),
        (lambda im, v: atk.player_bar(im, v, rng=_rng()), 0.6),
        (lambda im, v: atk.rotate(im, v), 181.0),
        (lambda im, v: atk.aspect(im, v), 0.1),
        (lambda im, v: atk.perspective(im, v, rng=_rng()), 0.5),
        (lambda im, v: atk.matte(im, v), 0.1),
        (lambda im, v: atk.occlusion(im, v, rng=_rng()), 0.95),
        (lambda im, v: atk.overlay(im, v, rng=_rng()), 1.5),
    ],
)
def test_rejects_out_of_range_options(call, bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        call(_frame(), bad)


def test_rescale_rejects_vanishing_output():
    with pytest.raises(ValueError, match=r"zero side|shrinks"):
        atk.rescale(_frame((4, 100, 3)), 0.1)


@pytest.mark.parametrize(
    "call",
    [
        lambda im: atk.jpeg(im, "50"),
        lambda im: atk.brightness(im, True),
        lambda im: atk.median(im, 3.0),
    ],
)
def test_rejects_non_numbers(call):
    with pytest.raises(TypeError):
        call(_frame())


@pytest.mark.parametrize(
    "call",
    [
        lambda im: atk.crop(im, 0.5, rng=0),
        lambda im: atk.gaussian_noise(im, 5, rng=None),
        lambda im: atk.salt_pepper(im, 0.1, rng=np.random.RandomState(0)),
        lambda im: atk.player_bar(im, 0.1, rng=1),
        lambda im: atk.screenshot(im, rng=1),
        lambda im: atk.social(im, rng=1),
        lambda im: atk.perspective(im, 0.1, rng=1),
        lambda im: atk.occlusion(im, 0.1, rng=1),
        lambda im: atk.overlay(im, 0.5, rng=1),
        lambda im: atk.camcorder(im, rng=1),
    ],
)
def test_rejects_missing_generator(call):
    with pytest.raises(TypeError, match="Generator"):
        call(_frame())


# ----------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("factor", "expected"), [(0.5, (48, 64)), (0.25, (24, 32)), (1.5, (144, 192)), (0.3, (29, 38))]
)
def test_rescale_sizes(dtype, factor, expected):
    out = atk.rescale(_frame((96, 128, 4), dtype), factor)
    assert out.shape == (*expected, 4)
    assert out.dtype == dtype


@pytest.mark.parametrize("area", [1.0, 0.8, 0.5, 0.25])
def test_crop_keeps_area_and_aspect_and_is_a_subimage(area):
    img = _frame((96, 128, 3))
    out = atk.crop(img, area, rng=_rng(5))
    h, w = round(96 * np.sqrt(area)), round(128 * np.sqrt(area))
    assert out.shape == (h, w, 3)
    # locate the crop: it must be an exact window of the input
    hits = [
        (r, c)
        for r in range(96 - h + 1)
        for c in range(128 - w + 1)
        if np.array_equal(img[r, c : c + w], out[0])
        and np.array_equal(img[r : r + h, c : c + w], out)
    ]
    assert hits


def test_crop_offset_depends_on_rng():
    img = _frame((96, 128, 3))
    outs = {atk.crop(img, 0.25, rng=_rng(s)).tobytes() for s in range(6)}
    assert len(outs) > 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_jpeg_quality_orders_distortion_and_drops_alpha(dtype):
    img = _frame((96, 128, 4), dtype)
    hi, lo = atk.jpeg(img, 90), atk.jpeg(img, 30)
    assert hi.shape == lo.shape == (96, 128, 3)
    assert psnr_y(img, hi) > psnr_y(img, lo) > 20
    if dtype == np.uint16:
        assert np.all(hi % 257 == 0)  # went through 8 bits


def test_jpeg_keeps_rgb_order():
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0] = 220  # pure red
    img.setflags(write=False)
    out = atk.jpeg(img, 90).astype(int)
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 30


def test_webp_grey_stays_grey():
    out = atk.webp(_frame((64, 64)), 50)
    assert out.shape == (64, 64)


def test_colour_ops_keep_alpha_bit_exact():
    img = _frame((64, 80, 4), np.uint16)
    for name in (
        "blur2",
        "median5",
        "unsharp",
        "noise10",
        "saltpepper1",
        "brightness+25",
        "contrast1.3",
        "gamma0.7",
        "saturation0.5",
        "hue10",
        "grey",
    ):
        np.testing.assert_array_equal(apply_attack(name, img, seed=0)[..., 3], img[..., 3])


def test_median_uint16_large_kernel_matches_uint8_path():
    img8 = _frame((40, 50, 3))
    out8 = atk.median(img8, 7)
    out16 = atk.median(img8.astype(np.uint16) * 257, 7)
    np.testing.assert_array_equal(out16, out8.astype(np.uint16) * 257)


def test_brightness_rounds_and_clips():
    img = np.array([[0, 100, 250]], np.uint8)
    img.setflags(write=False)
    assert atk.brightness(img, 10).tolist() == [[10, 110, 255]]
    assert atk.brightness(img, -10.6).tolist() == [[0, 89, 239]]  # rounded, not truncated
    img16 = img.astype(np.uint16) * 257
    assert atk.brightness(img16, 10).tolist() == [[2570, 28270, 65535]]


def test_gaussian_noise_sigma_is_in_8bit_units():
    img = np.full((256, 256), 128 * 257, np.uint16)
    out = atk.gaussian_noise(img, 10, rng=_rng(0)).astype(np.float64) / 257
    assert out.std() == pytest.approx(10, rel=0.05)


def test_salt_pepper_fraction():
    img = np.full((200, 200, 3), 128, np.uint8)
    out = atk.salt_pepper(img, 0.1, rng=_rng(0))
    changed = np.any(out != 128, axis=2).mean()
    assert changed == pytest.approx(0.1, abs=0.01)
    assert set(np.unique(out)) == {0, 128, 255}


def test_grey_and_saturation_zero_agree():
    img = _frame()
    g = atk.to_grey(img)
    assert np.all(g[..., 0] == g[..., 1]) and np.all(g[..., 1] == g[..., 2])
    np.testing.assert_array_equal(atk.saturation(img, 0.0), g)


@pytest.mark.parametrize("fn", [atk.saturation, atk.hue_shift])
def test_chroma_ops_copy_grey(fn):
    img = _frame((32, 32))
    out = fn(img, 0.5)
    np.testing.assert_array_equal(out, img)
    assert not np.shares_memory(out, img)


def test_hue_shift_full_turn_is_near_identity():
    img = _frame()
    assert np.abs(atk.hue_shift(img, 360).astype(int) - img).max() <= 1


def test_player_bar_covers_only_the_bottom():
    img = _frame((100, 160, 4))
    out = atk.player_bar(img, 0.1, rng=_rng(0))
    np.testing.assert_array_equal(out[:90], img[:90])
    assert np.all(out[90:, :, 3] == 255)
    assert out[90:, :, :3].max() > 200  # the text is drawn in white


def test_screenshot_and_social_sizes():
    img = _frame((300, 400, 4), np.uint16)
    shot = atk.screenshot(img, rng=_rng(0))
    assert shot.dtype == np.uint16 and shot.ndim == 3 and shot.shape[2] == 3
    assert 200 + 28 <= shot.shape[0] <= 200 + 120 and 267 + 8 <= shot.shape[1] <= 267 + 80
    soc = atk.social(img, rng=_rng(0))
    assert soc.shape == (round(150 * np.sqrt(0.8)), round(200 * np.sqrt(0.8)), 3)


def test_module_is_pure():
    src = Path(atk.__file__).read_text(encoding="utf-8")
    banned = r"^\s*(import|from)\s+(av|sqlite3|typer|rich|pathlib|os)\b|\bopen\(|imwrite|imread\("
    assert not re.search(banned, src, flags=re.MULTILINE)


# ----------------------------------------------------------------------------- h264 (PyAV)


def test_h264_keeps_shape_dtype_and_input_and_is_close():
    pytest.importorskip("av")
    for shape in ((95, 127, 3), (64, 80, 4), (63, 81)):  # odd sides: padded, cropped back
        for dtype in DTYPES:
            img = _frame(shape, dtype)
            before = img.copy()
            out = atk.h264(img, 28)
            expect = shape if len(shape) == 2 else (*shape[:2], 3)
            assert out.shape == expect and out.dtype == dtype
            np.testing.assert_array_equal(img, before)
            colour = img if img.ndim == 2 else img[..., :3]
            assert not np.array_equal(out, colour)
            assert 25.0 < psnr_y(colour, out) < 60.0
            if dtype == np.uint16:
                assert np.all(out % 257 == 0)  # through 8 bits, x257


def test_h264_is_reproducible_and_registered():
    pytest.importorskip("av")
    img = _frame((96, 128, 3))
    out = apply_attack("h264crf28", img, seed=0)
    np.testing.assert_array_equal(out, apply_attack("h264crf28", img, seed=5))
    np.testing.assert_array_equal(out, atk.h264(img, 28))
    assert ATTACKS["h264crf28"].family == "h264" and ATTACKS["h264crf28"].group == "codec"
    assert "h264crf28" in attack_names(group="codec")


def test_h264_gives_one_stream_for_one_frame():
    """x264's AVX-512 routines (PyAV's wheels, on a CPU that has them) coded the same
    clip differently from call to call (6 outputs in 6 calls on this cel frame)."""
    pytest.importorskip("av")
    from .frames import cel_frame

    img = cel_frame(300, 452, seed=1)
    outputs = set()
    for k in range(5):
        _ = [np.ones((200, 200 + k)) for _ in range(k)]  # a different heap each call
        outputs.add(atk.h264(img, 28).tobytes())
    assert len(outputs) == 1


def test_hevc_round_trip():
    pytest.importorskip("av")
    img = _frame((96, 128, 3))
    out = atk.hevc(img, 30)
    assert out.shape == img.shape and out.dtype == img.dtype
    assert psnr_y(img, out) > 25.0


def test_h264_crf_orders_distortion():
    pytest.importorskip("av")
    img = _frame((96, 128, 3))
    assert psnr_y(img, atk.h264(img, 18)) > psnr_y(img, atk.h264(img, 40))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"crf": -1}, "crf"),
        ({"crf": 52}, "crf"),
        ({"crf": 28, "frames": 0}, "frames"),
        ({"crf": 28.5}, "whole"),
    ],
)
def test_h264_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        atk.h264(_frame(), **kwargs)


def test_h264_roundtrip_rejects_bad_clips():
    from watermark.video import h264_roundtrip

    with pytest.raises(ValueError, match="even"):
        h264_roundtrip(np.zeros((2, 15, 16, 3), np.uint8), crf=28)
    with pytest.raises(ValueError, match="uint8"):
        h264_roundtrip(np.zeros((2, 16, 16, 3), np.uint16), crf=28)
    with pytest.raises(ValueError, match="shape"):
        h264_roundtrip(np.zeros((16, 16, 3), np.uint8), crf=28)
    with pytest.raises(ValueError, match="crf"):
        h264_roundtrip(np.zeros((2, 16, 16, 3), np.uint8), crf=60)


# ----------------------------------------------------------------------------- geometry II


def test_rotate_keeps_size_and_turns_the_picture():
    img = np.zeros((41, 61), np.uint8)
    img[20, 40:] = 255  # a ray from the centre to the right edge
    out = atk.rotate(img, 90)
    assert out.shape == img.shape
    assert out[:20, 30].max() > 100 and out[20, 45:].max() < 50  # now points up
    inner = atk.rotate(_frame((100, 160, 3)), 5, inner_crop=True)
    assert inner.shape[0] < 100 and inner.shape[1] < 160
    assert abs(inner.shape[1] / inner.shape[0] - 1.6) < 0.05


def test_aspect_flip_matte_shapes():
    img = _frame((90, 160, 3))
    assert atk.aspect(img, 0.9).shape == (90, 144, 3)
    np.testing.assert_array_equal(atk.flip(atk.flip(img)), img)
    scope = atk.matte(img, 2.39)
    assert scope.shape == img.shape and not scope[:10].any() and not scope[-10:].any()
    box = atk.matte(img, 4 / 3)
    assert not box[:, :15].any() and not box[:, -15:].any()
    np.testing.assert_array_equal(box[:, 40:120], img[:, 40:120])


def test_perspective_moves_corners_within_the_amount():
    img = np.full((100, 100), 200, np.uint8)
    out = atk.perspective(img, 0.1, rng=_rng())
    assert out.shape == img.shape and out[50, 50] == 200
    assert out[0, 0] == 0 or out[-1, -1] == 0  # some corner moved in, leaving black
    assert (out[15:85, 15:85] == 200).all()  # nothing moves by more than 10 %


def test_occlusion_covers_about_the_fraction():
    img = np.zeros((200, 300, 3), np.uint8)
    out = atk.occlusion(img, 0.4, rng=_rng())
    covered = (out != img).any(axis=2).mean()
    assert 0.3 < covered < 0.9


def test_camcorder_and_overlay_change_the_frame():
    img = _frame((120, 160, 3))
    for out in (atk.camcorder(img, rng=_rng()), atk.overlay(img, 0.5, rng=_rng())):
        assert out.shape == img.shape and out.dtype == img.dtype
        assert 15.0 < psnr_y(img, out) < 45.0
