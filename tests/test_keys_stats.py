import itertools

import numpy as np
import pytest
import scipy.stats

from watermark._keys import check_key, derive_bytes, keyed_generator
from watermark._stats import false_alarm_probability, sign_flip_probability, z_threshold


def test_derivation_is_deterministic_and_separated():
    k = b"a" * 32
    assert derive_bytes(k, "x") == derive_bytes(k, "x")
    assert derive_bytes(k, "x") != derive_bytes(k, "y")
    assert derive_bytes(k, "x") != derive_bytes(b"b" * 32, "x")
    a = keyed_generator(k, "x").integers(0, 2**32, 8)
    b = keyed_generator(k, "x").integers(0, 2**32, 8)
    np.testing.assert_array_equal(a, b)


def test_check_key_rejects_bad_keys():
    with pytest.raises(TypeError, match="bytes"):
        check_key("not bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="16 bytes"):
        check_key(b"short")


def test_false_alarm_probability_values():
    assert false_alarm_probability(0.0, 1) == pytest.approx(0.5)
    assert false_alarm_probability(3.0, 10) == pytest.approx(10 * 0.0013499, rel=1e-3)
    assert false_alarm_probability(-5.0, 100) == 1.0
    # deep tail stays accurate (no underflow to 0 before ~z=37)
    assert 0 < false_alarm_probability(30.0, 1e6) < 1e-190


def test_z_threshold_inverts_probability():
    for n in (1, 1e3, 1e7):
        z = z_threshold(1e-6, n)
        assert false_alarm_probability(z, n) == pytest.approx(1e-6, rel=1e-3)


def test_stats_reject_bad_arguments():
    with pytest.raises(ValueError, match="n_tests"):
        false_alarm_probability(1.0, 0)
    with pytest.raises(ValueError, match="p must"):
        z_threshold(0.0, 10)


def test_null_scores_are_calibrated():
    # z = <v, m>/||v|| for random signs m: unit-variance, P(z > 2.326) ~ 1 %
    rng = np.random.default_rng(0)
    v = rng.standard_cauchy(1024)  # heavy-tailed host: calibration comes from the signs
    m = rng.choice([-1.0, 1.0], size=(20000, 1024))
    z = m @ v / np.linalg.norm(v)
    assert abs(z.std() - 1.0) < 0.03
    assert np.mean(false_alarm_probability(z, 1) <= 0.01) <= 0.013


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sign_flip_probability_bounds_the_exact_tail(seed):
    # every sign pattern of 14 terms enumerated: the bound is never below the exact tail,
    # and above it only by the grid's rounding (n / (2 resolution) standard deviations)
    rng = np.random.default_rng(seed)
    w = rng.exponential(size=14) * rng.choice([-1.0, 1.0], size=14)
    sums = np.array(list(itertools.product([-1.0, 1.0], repeat=14))) @ np.abs(w)
    norm = np.linalg.norm(w)
    for t in np.linspace(0.1, np.abs(w).sum(), 25):
        exact = np.mean(sums >= t - 1e-12)
        looser = np.mean(sums >= t - 14 / (2 * 256) * norm - 1e-12)
        bound = sign_flip_probability(w, t, resolution=256)
        assert exact <= bound <= looser


def test_sign_flip_probability_edges():
    assert sign_flip_probability(np.ones(20), 20.0) == pytest.approx(2.0**-20)
    assert sign_flip_probability(np.ones(20), 20.5) == 0.0
    assert sign_flip_probability(np.ones(5), 0.0) == 1.0
    assert sign_flip_probability(np.zeros(5), 1.0) == 0.0
    # equal terms: the binomial tail, P(at least 250 of 400 signs positive)
    exact = scipy.stats.binom.sf(249, 400, 0.5)
    assert sign_flip_probability(np.ones(400), 100.0) == pytest.approx(exact, rel=1e-6)
    with pytest.raises(ValueError, match="resolution"):
        sign_flip_probability(np.ones(3), 1.0, resolution=4)
    with pytest.raises(ValueError, match="finite"):
        sign_flip_probability(np.array([1.0, np.nan]), 1.0)


def test_sign_flip_probability_is_calibrated_whatever_the_amplitude():
    # terms a * n_j * d_j + noise with d_j = +-1 at random (an unrelated codeword): the
    # sum's law changes with the amplitude a, the sign-flip p-value stays valid
    rng = np.random.default_rng(3)
    n_j = rng.integers(1, 7, size=162).astype(float)
    for a in (0.0, 0.5, 2.0):
        p = []
        for _ in range(2000):
            d = rng.choice([-1.0, 1.0], size=162)
            s = a * n_j * d + rng.standard_t(3, size=162) * np.sqrt(n_j)
            p.append(sign_flip_probability(s, float(s.sum()), resolution=256))
        assert np.mean(np.array(p) <= 0.01) <= 0.016
        assert np.mean(np.array(p) <= 0.1) <= 0.115


def test_a_score_that_is_not_a_number_is_no_evidence():
    assert false_alarm_probability(np.nan, 1) == 1.0
    got = false_alarm_probability(np.array([np.nan, 3.0, np.inf]), 1)
    np.testing.assert_array_equal(got, [1.0, false_alarm_probability(3.0, 1), 0.0])
