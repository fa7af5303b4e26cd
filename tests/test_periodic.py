import numpy as np
import pytest

from watermark._attacks import apply_attack
from watermark._color import luma
from watermark._detect import detect_frame
from watermark._embed import embed_frame
from watermark._periodic import cap_periodic_peaks

from .frames import cel_frame, hatched_frame, textured_frame

KEY = b"p" * 32
CANDIDATES = np.array([0x1234ABCD, 0x0F0F0F0F, 0xCAFEBABE], dtype=np.uint64)


def _grating(shape: tuple[int, int], amplitude: float, period: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    return (amplitude * np.sin(2 * np.pi * (xx + 0.6 * yy) / period)).astype(np.float32)


def _amplitude(y: np.ndarray, grating: np.ndarray) -> float:
    """Least-squares amplitude of `grating` (unit amplitude) in `y`, away from the border."""
    c = (slice(64, -64), slice(64, -64))
    g = grating[c]
    return float(np.sum((y[c] - y[c].mean()) * g) / np.sum(g * g))


@pytest.mark.parametrize(
    "frame", [cel_frame(300, 400, seed=0), textured_frame(360, 640, seed=1)], ids=["cel", "tex"]
)
def test_a_leak_without_periodic_texture_is_left_as_it_is(frame):
    y = luma(frame)
    assert cap_periodic_peaks(y) is y
    marked = luma(embed_frame(frame, KEY, int(CANDIDATES[0])).image)
    assert cap_periodic_peaks(marked) is marked  # the mark itself makes no peak


def test_a_strong_grating_is_taken_out_and_the_rest_kept():
    rng = np.random.default_rng(0)
    shape = (360, 500)
    rest = (128 + 20 * rng.standard_normal(shape)).astype(np.float32)
    unit = _grating(shape, 1.0, 5.3)
    y = rest + 30.0 * unit
    out = cap_periodic_peaks(y)
    assert out is not y and out.shape == y.shape and out.dtype == np.float32
    assert _amplitude(y, unit) == pytest.approx(30.0, rel=0.02)
    assert abs(_amplitude(out, unit)) < 6.0  # cut to 8x the noise floor around it
    kept = np.corrcoef(out.ravel(), rest.ravel())[0, 1]
    assert kept > 0.9
    # a weak one (2 grey levels) is below what the cap touches
    weak = rest + 2.0 * unit
    assert cap_periodic_peaks(weak) is weak


def test_the_cap_follows_the_texture_where_it_is():
    # a grating over the left half only: the right half comes back unchanged
    rng = np.random.default_rng(1)
    shape = (384, 768)
    y = (128 + 10 * rng.standard_normal(shape)).astype(np.float32)
    y[:, :384] += _grating((384, 384), 40.0, 4.7)
    out = cap_periodic_peaks(y)
    right = (slice(None), slice(384 + 128, None))
    np.testing.assert_allclose(out[right], y[right], atol=1e-3)
    assert np.abs(out[:, :256] - y[:, :256]).mean() > 10.0


def test_small_leaks_are_left_as_they_are():
    y = (128 + _grating((100, 300), 40.0, 5.0)).astype(np.float32)
    assert cap_periodic_peaks(y) is y


@pytest.mark.parametrize("attack", ["none", "jpeg50", "flip"])
def test_dense_hatching_at_720p_is_traced(attack):
    # a 1-px line every 5 px over the whole frame, 4-px chips: before the cap, its energy
    # drowned the mark in the whitened folds and none of these was traced (p 1.0)
    marked = embed_frame(hatched_frame(720, 1280, seed=0), KEY, int(CANDIDATES[1])).image
    det = detect_frame(apply_attack(attack, marked, seed=0), KEY, candidates=CANDIDATES)
    assert det.found and det.payload == int(CANDIDATES[1])
    assert det.p_value < 1e-12
    assert det.texture_cut  # the verdict says its pixels were not the file's


def test_a_detection_says_when_nothing_was_cut():
    marked = embed_frame(cel_frame(360, 640, seed=2), KEY, int(CANDIDATES[2])).image
    det = detect_frame(marked, KEY, candidates=CANDIDATES)
    assert det.found and det.payload == int(CANDIDATES[2])
    assert not det.texture_cut
