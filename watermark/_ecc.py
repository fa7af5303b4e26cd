"""Payload coding: 32-bit delivery id + CRC-16, convolutional code K=7 rate 1/3, soft Viterbi.

The code is the standard K=7 rate-1/3 code with generators 133, 145, 175 (octal),
free distance 15, zero-terminated (6 tail bits). The CRC-16/CCITT check lets a blind
decoder tell a real payload from noise: a random word passes with probability 2**-16.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CODED_BITS",
    "CRC_BITS",
    "PAYLOAD_BITS",
    "bits_to_int",
    "crc16",
    "decode_payload",
    "encode_payloads",
    "int_to_bits",
    "list_decode",
]

PAYLOAD_BITS = 32
CRC_BITS = 16
_K = 7
_GENERATORS = (0o133, 0o145, 0o175)
_MESSAGE_BITS = PAYLOAD_BITS + CRC_BITS
_STEPS = _MESSAGE_BITS + _K - 1
CODED_BITS = _STEPS * len(_GENERATORS)  # 162
_N_STATES = 1 << (_K - 1)


def int_to_bits(values: np.ndarray | int, n_bits: int = PAYLOAD_BITS) -> np.ndarray:
    """Big-endian bits of non-negative integers.

    Parameters
    ----------
    values : int or (N,) integer ndarray
        Each in [0, 2**n_bits).
    n_bits : int
        Bits per value.

    Returns
    -------
    (n_bits,) or (N, n_bits) uint8 ndarray

    Examples
    --------
    >>> int_to_bits(5, 4).tolist()
    [0, 1, 0, 1]
    """
    arr = np.asarray(values, dtype=np.uint64)
    shifts = np.arange(n_bits - 1, -1, -1, dtype=np.uint64)
    return ((arr[..., None] >> shifts) & np.uint64(1)).astype(np.uint8)


def bits_to_int(bits: np.ndarray) -> int:
    """Inverse of :func:`int_to_bits` for one value."""
    out = 0
    for b in np.asarray(bits, dtype=np.uint8).tolist():
        out = (out << 1) | int(b)
    return out


def crc16(bits: np.ndarray) -> np.ndarray:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of bit rows.

    Parameters
    ----------
    bits : (L,) or (N, L) uint8 ndarray of 0/1

    Returns
    -------
    (16,) or (N, 16) uint8 ndarray, big-endian.
    """
    b = np.atleast_2d(np.asarray(bits, dtype=np.uint8))
    reg = np.full(b.shape[0], 0xFFFF, dtype=np.uint32)
    for t in range(b.shape[1]):  # loop over the 32 message bits, vectorised over rows
        top = ((reg >> 15) & 1) ^ b[:, t]
        reg = ((reg << 1) & 0xFFFF) ^ (top * 0x1021)
    out = int_to_bits(reg, CRC_BITS)
    return out[0] if np.asarray(bits).ndim == 1 else out


def _parity(x: np.ndarray) -> np.ndarray:
    return (np.bitwise_count(x) & 1).astype(np.uint8)


def encode_payloads(payloads: np.ndarray | int) -> np.ndarray:
    """Codewords for delivery ids: bits(id) + CRC-16, convolutionally encoded.

    Parameters
    ----------
    payloads : int or (N,) integer ndarray
        Delivery ids in [0, 2**32).

    Returns
    -------
    (CODED_BITS,) or (N, CODED_BITS) uint8 ndarray of 0/1.
    """
    arr = np.asarray(payloads)
    if np.any(arr < 0) or np.any(arr >= 2**PAYLOAD_BITS):
        raise ValueError(f"payload must be in [0, 2**{PAYLOAD_BITS}), got {arr!r}")
    flat = np.atleast_1d(arr).astype(np.uint64)
    msg = int_to_bits(flat)
    msg = np.concatenate([msg, crc16(msg), np.zeros((flat.size, _K - 1), np.uint8)], axis=1)
    # register at step t holds inputs t, t-1, ..., t-6 (newest in the lowest bit); it
    # fits a byte, and is built one shift at a time (no (N, steps, K) window copy: a
    # registry's 100,000 candidates are coded at every verdict)
    padded = np.concatenate([np.zeros((flat.size, _K - 1), np.uint8), msg], axis=1)
    reg = np.zeros((flat.size, _STEPS), np.uint8)
    for i in range(_K):  # oldest input (i = 0) -> highest bit
        reg |= padded[:, i : i + _STEPS] << np.uint8(_K - 1 - i)
    gens = np.array(_GENERATORS, dtype=np.uint8)
    coded = _parity(reg[..., None] & gens).reshape(flat.size, CODED_BITS)
    return coded[0] if arr.ndim == 0 else coded


def _trellis() -> tuple[np.ndarray, np.ndarray]:
    """Predecessor states and branch output signs for each (next state, branch)."""
    ns = np.arange(_N_STATES, dtype=np.uint32)
    # state = last 6 inputs, newest in bit 0; next = ((state << 1) | bit) & 63
    prev = np.stack([ns >> 1, (ns >> 1) | (1 << (_K - 2))], axis=1)  # (64, 2)
    reg = (prev << 1) | (ns[:, None] & 1)  # 7-bit register, newest in bit 0
    gens = np.array(_GENERATORS, dtype=np.uint32)
    out = _parity(reg[..., None] & gens).astype(np.float64) * 2.0 - 1.0  # (64, 2, 3)
    return prev.astype(np.intp), out


_PREV, _OUT_SIGNS = _trellis()


def decode_payload(soft: np.ndarray) -> tuple[int, bool]:
    """Soft-decision Viterbi decoding of one codeword.

    Parameters
    ----------
    soft : (CODED_BITS,) float ndarray
        Soft bits: positive means bit 1, magnitude is confidence (any scale).

    Returns
    -------
    payload : int
        The decoded 32-bit delivery id.
    crc_ok : bool
        Whether the decoded CRC-16 matches; False means "no valid payload".
    """
    s = np.asarray(soft, dtype=np.float64)
    if s.shape != (CODED_BITS,):
        raise ValueError(f"soft must have shape ({CODED_BITS},), got {s.shape}")
    steps = s.reshape(_STEPS, len(_GENERATORS))
    metric = np.full(_N_STATES, -np.inf)
    metric[0] = 0.0
    choice = np.empty((_STEPS, _N_STATES), dtype=np.uint8)
    for t in range(_STEPS):  # loop over 54 trellis steps, vectorised over the 64 states
        branch = metric[_PREV] + _OUT_SIGNS @ steps[t]  # (64, 2)
        c = np.argmax(branch, axis=1)
        choice[t] = c
        metric = branch[np.arange(_N_STATES), c]
    state = 0  # zero-terminated
    bits = np.empty(_STEPS, dtype=np.uint8)
    for t in range(_STEPS - 1, -1, -1):
        bits[t] = state & 1
        state = int(_PREV[state, choice[t, state]])
    msg = bits[:_MESSAGE_BITS]
    payload_bits, crc = msg[:PAYLOAD_BITS], msg[PAYLOAD_BITS:]
    return bits_to_int(payload_bits), bool(np.array_equal(crc16(payload_bits), crc))


def list_decode(soft: np.ndarray, list_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parallel list Viterbi: the `list_size` best zero-terminated paths.

    Parameters
    ----------
    soft : (CODED_BITS,) float ndarray
        Soft bits, positive means 1.
    list_size : int
        Number of paths kept per state, 1 to 256.

    Returns
    -------
    payloads : (L,) uint64 ndarray
        The 32-bit ids of the paths, best first.
    metrics : (L,) float64 ndarray
        Correlation of each path's codeword with `soft` (sum of soft * (2 c - 1)).
    crc_ok : (L,) bool ndarray
        Whether each path's CRC-16 is valid, i.e. whether it is a possible delivery.

    Notes
    -----
    Paths that are not valid codewords of the system (CRC fails) cannot be a delivery, so
    the best CRC-valid path in the list is the maximum-likelihood delivery among all 2**32
    (CRC-aided list decoding).
    """
    s = np.asarray(soft, dtype=np.float64)
    if s.shape != (CODED_BITS,):
        raise ValueError(f"soft must have shape ({CODED_BITS},), got {s.shape}")
    if not 1 <= list_size <= 256:
        raise ValueError(f"list_size must be in [1, 256], got {list_size}")
    n_list = list_size
    steps = s.reshape(_STEPS, len(_GENERATORS))
    metric = np.full((_N_STATES, n_list), -np.inf)
    metric[0, 0] = 0.0
    back = np.empty((_STEPS, _N_STATES, n_list), dtype=np.int32)  # index into (2, L)
    rows = np.arange(_N_STATES)[:, None]
    for t in range(_STEPS):  # 54 steps, vectorised over states and list entries
        branch = _OUT_SIGNS @ steps[t]  # (64, 2)
        cand = metric[_PREV] + branch[..., None]  # (64, 2, L)
        flat = cand.reshape(_N_STATES, 2 * n_list)
        order = np.argsort(-flat, axis=1, kind="stable")[:, :n_list]
        metric = flat[rows, order]
        back[t] = order
    finite = np.isfinite(metric[0])
    bits = np.empty((n_list, _STEPS), dtype=np.uint8)
    state = np.zeros(n_list, dtype=np.intp)
    rank = np.arange(n_list)
    for t in range(_STEPS - 1, -1, -1):
        bits[:, t] = state & 1
        choice = back[t, state, rank]
        branch_idx, rank = choice // n_list, choice % n_list
        state = _PREV[state, branch_idx]
    msg = bits[:, :_MESSAGE_BITS]
    weights = np.uint64(1) << np.arange(PAYLOAD_BITS - 1, -1, -1, dtype=np.uint64)
    payloads = (msg[:, :PAYLOAD_BITS].astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
    crc_ok = np.all(crc16(msg[:, :PAYLOAD_BITS]) == msg[:, PAYLOAD_BITS:], axis=1) & finite
    return payloads[finite], metric[0][finite], crc_ok[finite]
