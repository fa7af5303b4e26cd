"""Key derivation: every keyed quantity comes from the studio secret through HMAC-SHA256."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np

__all__ = ["check_key", "derive_bytes", "key_fingerprint", "keyed_generator"]

_DOMAIN = b"leaktrace/v1/"


def check_key(key: bytes) -> bytes:
    """Validate a studio secret.

    Parameters
    ----------
    key : bytes
        The secret, at least 16 bytes (``leaktrace init`` makes 32).

    Returns
    -------
    bytes
        The same key.

    Raises
    ------
    TypeError
        If `key` is not bytes.
    ValueError
        If `key` is shorter than 16 bytes.
    """
    if not isinstance(key, bytes | bytearray):
        raise TypeError(f"key must be bytes, got {type(key).__name__}")
    if len(key) < 16:
        raise ValueError(f"key must be at least 16 bytes, got {len(key)}")
    return bytes(key)


def derive_bytes(key: bytes, label: str) -> bytes:
    """Derive 32 bytes for one purpose: HMAC-SHA256(key, domain || label).

    Examples
    --------
    >>> len(derive_bytes(b"k" * 32, "pilot"))
    32
    """
    return hmac.new(check_key(key), _DOMAIN + label.encode("utf-8"), hashlib.sha256).digest()


def key_fingerprint(key: bytes) -> str:
    """16 hex digits that tell studio secrets apart without revealing them.

    Derived under a label of its own (:func:`derive_bytes`), so it says nothing about the
    bits that build a mark: two machines show the same fingerprint exactly when they hold
    the same secret.

    Examples
    --------
    >>> key_fingerprint(b"k" * 32) == key_fingerprint(b"k" * 32) != key_fingerprint(b"j" * 32)
    True
    """
    return derive_bytes(key, "fingerprint")[:8].hex()


def keyed_generator(key: bytes, label: str) -> np.random.Generator:
    """A numpy Generator seeded from ``derive_bytes(key, label)``.

    Different labels give independent streams; the same key and label always
    give the same stream (PCG64 seeded with the 256-bit digest).
    """
    digest = derive_bytes(key, label)
    words = np.frombuffer(digest, dtype="<u4").astype(np.uint64)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words.tolist())))
