import numpy as np
import pytest

from watermark._keys import check_key, derive_bytes, keyed_generator
from watermark._stats import false_alarm_probability, z_threshold


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
