"""Detection statistics: Gaussian tails with a union bound over everything searched.

Every score here is a normalised correlation ``z = <v, m> / ||v||`` between chip estimates
``v`` and a keyed +/-1 pattern ``m``. For any image ``v``, a pattern whose signs are random
to the image (no mark, or another studio's key) makes ``z`` sub-Gaussian with unit
variance (Hoeffding), and by the central limit theorem close to N(0, 1): the false-alarm
probability is computable, not guessed.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr

__all__ = ["false_alarm_probability", "z_threshold"]


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
    upper tail.

    Examples
    --------
    >>> round(float(false_alarm_probability(3.0, 1)), 5)
    0.00135
    """
    if n_tests < 1:
        raise ValueError(f"n_tests must be >= 1, got {n_tests}")
    log_p = np.log(n_tests) + log_ndtr(-np.asarray(z, dtype=np.float64))
    out = np.exp(np.minimum(log_p, 0.0))
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
