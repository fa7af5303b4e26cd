"""Blind detection: geometry hypotheses scored by the pilot, then a calibrated verdict."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._carrier import TILE_CHIPS, TileLayout, chip_level, tile_layout
from ._color import check_image, luma
from ._ecc import CODED_BITS, decode_payload, encode_payloads
from ._keys import check_key
from ._stats import false_alarm_probability
from ._sync import WORK_PX, chip_estimates, fold_tiles, pilot_scores, whiten, working_luma

__all__ = ["Detection", "DEFAULT_CHIP_SIZES", "detect_frame", "leak_scale"]

# Chip sizes (leak pixels) searched: the native 4/8/16-px chips and their halves, i.e. every
# frame size at scale 1 and 0.5. Each is one geometry hypothesis.
DEFAULT_CHIP_SIZES: tuple[float, ...] = (8.0, 4.0, 16.0, 2.0)
_TOP_HYPOTHESES = 3
# Lower confidence bound, in standard errors, on the mark amplitude the pilot measures.
_AMPLITUDE_LCB = 3.0


@dataclass(frozen=True, slots=True)
class Detection:
    """Verdict of :func:`detect_frame`.

    Attributes
    ----------
    found : bool
        True only when p_value <= the threshold and the payload is identified.
    payload : int or None
        Delivery id (0 <= payload < 2**32) when found, else None.
    score : float
        The test statistic: a normalised correlation, N(0, 1) on unmarked images.
    p_value : float
        False-alarm probability of the verdict: the chance that an unmarked image (or one
        marked with another delivery) scores this high, corrected for the search over
        geometry hypotheses and over every candidate delivery.
    chip_px : float
        Chip size found in the leak, in pixels (0 when nothing was searched); with the
        original's size, :func:`leak_scale` turns it into the leak's scale.
    offset : tuple of float
        (row, col) position of the leak's top-left pixel inside the mark's tile, in chips,
        each in [0, 32).
    n_tests : float
        Number of hypotheses the p_value is corrected for.
    """

    found: bool
    payload: int | None
    score: float
    p_value: float
    chip_px: float
    offset: tuple[float, float]
    n_tests: float = 1.0


@dataclass(frozen=True, slots=True)
class _Hypothesis:
    pilot_z: float
    chip_px: float
    phase: tuple[int, int]
    shift: tuple[int, int]
    chips: np.ndarray  # (T, T) chip estimates aligned to tile order


def leak_scale(chip_px: float, original_shape: tuple[int, ...]) -> float:
    """Size of a leak relative to its original, from the chip size found in the leak.

    Examples
    --------
    >>> leak_scale(4.0, (1080, 1920))
    0.5
    """
    return float(chip_px) / float(2 ** chip_level(original_shape))


def _search(y: np.ndarray, layout: TileLayout, chip_sizes: tuple[float, ...]) -> list[_Hypothesis]:
    pilot = layout.pilot_chips
    found: list[_Hypothesis] = []
    for chip_px in chip_sizes:
        yw = working_luma(y, chip_px)
        if min(yw.shape) < 2 * WORK_PX:
            continue
        v = chip_estimates(*fold_tiles(whiten(yw)))  # (q, q, T, T)
        z = pilot_scores(v, pilot)
        flat = np.argsort(z, axis=None)[::-1][:_TOP_HYPOTHESES]
        for idx in flat:
            a, b, i, j = np.unravel_index(idx, z.shape)
            aligned = np.roll(v[a, b], (int(i), int(j)), axis=(0, 1))
            found.append(
                _Hypothesis(float(z[a, b, i, j]), chip_px, (int(a), int(b)), (int(i), int(j)), aligned)
            )
    found.sort(key=lambda h: h.pilot_z, reverse=True)
    return found[:_TOP_HYPOTHESES]


def _offset(h: _Hypothesis) -> tuple[float, float]:
    # leak chip 0 starts at working pixel `phase` and is tile chip `shift`
    r, c = ((s - p / WORK_PX) % TILE_CHIPS for s, p in zip(h.shift, h.phase, strict=True))
    return (float(r), float(c))


def _soft_bits(h: _Hypothesis, layout: TileLayout) -> tuple[np.ndarray, np.ndarray]:
    data = layout.bit_index >= 0
    idx = layout.bit_index[data]
    weighted = (h.chips * layout.signs)[data]
    soft = np.bincount(idx, weights=weighted, minlength=CODED_BITS)
    energy = np.bincount(idx, weights=h.chips[data] ** 2, minlength=CODED_BITS)
    return soft, energy


def _registry_verdict(
    h: _Hypothesis, layout: TileLayout, candidates: np.ndarray, n_geometry: float
) -> tuple[int, float, float]:
    """Best candidate, its score, and the p-value of accusing it."""
    soft, energy = _soft_bits(h, layout)
    pilot_part = float(np.sum(h.chips * layout.pilot_chips))
    total = float(np.sqrt(np.sum(h.chips**2))) or 1.0
    signs = encode_payloads(candidates).astype(np.float64) * 2.0 - 1.0  # (N, 162)
    z = (pilot_part + signs @ soft) / total
    best = int(np.argmax(z))
    p_detect = false_alarm_probability(z[best], n_geometry * len(candidates))
    if len(candidates) == 1:
        return best, float(z[best]), float(p_detect)
    # Could another registered delivery have produced this? Test the best one against each
    # other on the coded bits where they differ: under "the other one is the mark", the
    # correlation there is centred at or below 0.
    # Chip estimates are v = a m + noise; the pilot measures a / sigma. Under "delivery d is
    # the mark", S_d = sum over the chips where d and best differ of v * m_best is centred at
    # -(a / sigma) * n_d, so P(S_d >= observed | d) = Q(z_pair + (a / sigma) sqrt(n_d)), with a
    # lower confidence bound on a / sigma. sigma is over-estimated by including the signal.
    differ = signs != signs[best]
    n_pilot = float(np.count_nonzero(layout.pilot))
    amp = max(0.0, (h.pilot_z - _AMPLITUDE_LCB) / np.sqrt(n_pilot))
    chips_per_bit = np.bincount(layout.bit_index[layout.bit_index >= 0], minlength=CODED_BITS)
    n_diff = differ @ chips_per_bit.astype(np.float64)
    num = differ @ (soft * signs[best])
    den = np.sqrt(np.maximum(differ @ energy, 1e-12))
    others = np.flatnonzero(differ.any(axis=1))
    z_pair = num[others] / den[others] + amp * np.sqrt(n_diff[others])
    p_confuse = float(np.sum(false_alarm_probability(z_pair, 1.0))) if others.size else 0.0
    # identical codewords cannot be told apart: never accuse between them
    if np.count_nonzero(~differ.any(axis=1)) > 1:
        p_confuse = 1.0
    return best, float(z[best]), float(min(1.0, max(p_detect, p_confuse)))


def detect_frame(
    image: np.ndarray,
    key: bytes,
    *,
    candidates: np.ndarray | None = None,
    p_threshold: float = 1e-6,
    chip_sizes: tuple[float, ...] = DEFAULT_CHIP_SIZES,
) -> Detection:
    """Look for the mark of `key` in a leaked frame, without the original.

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray
        RGB(A) order; uint8, uint16, or float32 in [0, 1].
    key : bytes
        Studio secret.
    candidates : (N,) integer ndarray, optional
        Delivery ids in the registry. When given, every candidate's full pattern is scored
        and the verdict names the best one only if it beats both "no mark" and every other
        candidate at `p_threshold`. When None, the payload is decoded blind (Viterbi, CRC).
    p_threshold : float
        Accusation threshold on the false-alarm probability, in (0, 1).
    chip_sizes : tuple of float
        Chip sizes in the leak to search, in pixels; each is one geometry hypothesis.

    Returns
    -------
    Detection

    Raises
    ------
    TypeError, ValueError
        On a bad image, key, threshold or candidate list.
    """
    arr = check_image(image)
    layout = tile_layout(check_key(key))
    if not 0.0 < p_threshold < 1.0:
        raise ValueError(f"p_threshold must be in (0, 1), got {p_threshold}")
    if not chip_sizes or any(not 1.5 <= s <= 64.0 for s in chip_sizes):
        raise ValueError(f"chip_sizes must be values in [1.5, 64] px, got {chip_sizes}")
    cand = None
    if candidates is not None:
        cand = np.asarray(candidates)
        if cand.ndim != 1 or cand.dtype.kind not in "iu":
            raise ValueError(f"candidates must be a 1-D integer array, got {cand.dtype} {cand.shape}")
    y = luma(arr)
    hyps = _search(y, layout, tuple(chip_sizes))
    n_geometry = float(len(chip_sizes) * WORK_PX * WORK_PX * TILE_CHIPS * TILE_CHIPS)
    if not hyps:
        return Detection(False, None, 0.0, 1.0, 0.0, (0.0, 0.0), n_geometry)

    if cand is not None and cand.size:
        best_result: tuple[float, int, float, _Hypothesis] | None = None
        for h in hyps:
            idx, z, p = _registry_verdict(h, layout, cand, n_geometry)
            if best_result is None or p < best_result[0] or (p == best_result[0] and z > best_result[2]):
                best_result = (p, idx, z, h)
        assert best_result is not None
        p, idx, z, h = best_result
        found = p <= p_threshold
        return Detection(
            found, int(cand[idx]) if found else None, z, p, h.chip_px, _offset(h),
            n_geometry * cand.size,
        )

    h = hyps[0]
    p = float(false_alarm_probability(h.pilot_z, n_geometry))
    payload, crc_ok = decode_payload(_soft_bits(h, layout)[0])
    found = crc_ok and p <= p_threshold
    return Detection(found, payload if found else None, h.pilot_z, p, h.chip_px, _offset(h), n_geometry)
