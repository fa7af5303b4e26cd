"""Detection statistics: Gaussian and sign-flip tails, union bounds over everything searched.

Every score here is a normalised correlation ``z = <v, m> / ||v||`` between chip estimates
``v`` and a keyed +/-1 pattern ``m``. For any image ``v``, a pattern whose signs are random
to the image (no mark, or another studio's key) makes ``z`` sub-Gaussian with unit
variance (Hoeffding), and by the central limit theorem close to N(0, 1): the false-alarm
probability is computable, not guessed.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr

__all__ = ["false_alarm_probability", "sign_flip_probability", "z_threshold"]


def false_alarm_probability(z: float | np.ndarray, n_tests: float) -> float | np.ndarray:
    """Probability that the best of `n_tests` null scores reaches `z` (union bound).

    Parameters
    ----------
    z : float or ndarray
        Normalised correlation score(s).
    n_tests : float
        Number of hypotheses searched (>= 1).

    Returns
    -------
    float or ndarray in [0, 1]: ``min(1, n_tests * Q(z))`` with ``Q`` the standard normal
    upper tail (1 for a NaN score).

    Examples
    --------
    >>> round(float(false_alarm_probability(3.0, 1)), 5)
    0.00135
    """
    if n_tests < 1:
        raise ValueError(f"n_tests must be >= 1, got {n_tests}")
    log_p = np.log(n_tests) + log_ndtr(-np.asarray(z, dtype=np.float64))
    # a score that is not a number is no evidence: probability 1, never an accusation
    out = np.exp(np.minimum(np.nan_to_num(log_p, nan=0.0), 0.0))
    return float(out) if np.ndim(out) == 0 else out


def z_threshold(p: float, n_tests: float) -> float:
    """Smallest score whose :func:`false_alarm_probability` is at most `p`."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    lo, hi = 0.0, 40.0
    for _ in range(80):  # bisection on a monotone function
        mid = 0.5 * (lo + hi)
        if false_alarm_probability(mid, n_tests) > p:
            lo = mid
        else:
            hi = mid
    return hi


def sign_flip_probability(
    weights: np.ndarray, statistic: float, *, resolution: int = 2048
) -> float:
    """Upper bound on ``P(sum_j e_j |w_j| >= statistic)`` for independent fair signs ``e_j``.

    The exact tail of a sign-flip (Rademacher) sum, as needed when each term of a score is
    symmetric about 0 given its magnitude: no normal approximation, no variance estimate.
    Each ``|w_j|`` is rounded to a grid of ``||w|| / resolution`` and the sum's law on that
    grid is built term by term; the rounding is paid for by lowering `statistic` by the
    total rounding error, so the result is never below the exact tail.

    Parameters
    ----------
    weights : (n,) ndarray
        Term magnitudes (signs are ignored), any real dtype, n <= a few thousand.
    statistic : float
        Observed value of the sum, in the units of `weights`.
    resolution : int
        Grid steps per ``||w||``, >= 16; the bound is loose by at most ``n / (2 resolution)``
        standard deviations.

    Returns
    -------
    float in [0, 1]; 0 only when `statistic` exceeds ``sum |w_j|``.

    Examples
    --------
    >>> sign_flip_probability(np.ones(3), 3.0)  # all three signs positive: 1/8
    0.125
    """
    if resolution < 16:
        raise ValueError(f"resolution must be >= 16, got {resolution}")
    w = np.abs(np.asarray(weights, dtype=np.float64).ravel())
    norm = float(np.sqrt(np.sum(w**2)))
    if not np.isfinite(norm) or not np.isfinite(statistic):
        raise ValueError("weights and statistic must be finite")
    if statistic <= 0.0 or norm == 0.0:
        return 1.0 if statistic <= 0.0 else 0.0
    step = norm / resolution
    k = np.rint(w / step).astype(np.int64)
    slack = float(np.sum(np.abs(w - k * step)))  # |sum e_j (w_j - k_j step)| <= slack
    # sum e_j w_j >= statistic implies sum e_j k_j >= (statistic - slack) / step
    need = int(np.ceil((statistic - slack) / step - 1e-9))
    law = np.ones(1)  # law of sum e_j k_j over the terms so far, on -span..span
    span = 0
    for kj in k[k > 0]:  # one step per term (n terms), each a vector operation
        grown = np.zeros(2 * (span + int(kj)) + 1)
        grown[: law.size] += 0.5 * law
        grown[2 * int(kj) :] += 0.5 * law
        law, span = grown, span + int(kj)
    if need > span:
        return 0.0
    return float(min(1.0, np.sum(law[max(need, -span) + span :])))
