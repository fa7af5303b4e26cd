"""Tests of watermark._phash (pure module)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from watermark._phash import hamming, perceptual_hash

from ._factories import texture


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_hash_is_stable_across_dtypes_and_channels(dtype: type) -> None:
    base = texture((120, 160, 3), np.uint16, seed=3)
    if dtype == np.uint8:
        image = (base // 257).astype(np.uint8)
    elif dtype == np.float32:
        image = base.astype(np.float32) / 65535
    else:
        image = base
    image.setflags(write=False)
    reference = perceptual_hash(base)
    h = perceptual_hash(image)
    assert 0 <= h < 2**64
    assert hamming(h, reference) <= 2
    rgba = np.dstack([image, np.zeros(image.shape[:2], image.dtype)])
    assert perceptual_hash(rgba) == h  # alpha ignored


def test_hash_separates_and_matches() -> None:
    a = texture((240, 320, 3), seed=1)
    b = texture((240, 320, 3), seed=2)
    small = cv2.resize(a, (160, 120), interpolation=cv2.INTER_AREA)
    assert hamming(perceptual_hash(a), perceptual_hash(small)) <= 4
    assert hamming(perceptual_hash(a), perceptual_hash(b)) > 12
    grey = texture((64, 64), seed=4)
    assert perceptual_hash(grey) == perceptual_hash(np.dstack([grey] * 3))


def test_hash_refusals() -> None:
    with pytest.raises(ValueError, match="empty"):
        perceptual_hash(np.zeros((0, 5), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        perceptual_hash(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(TypeError, match="int32"):
        perceptual_hash(np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match="2\\*\\*64"):
        hamming(-1, 0)
    assert hamming(0, 2**64 - 1) == 64


def test_phash_module_is_pure() -> None:
    source = (Path(__file__).parents[1] / "watermark" / "_phash.py").read_text()
    for forbidden in ("open(", "sqlite3", "typer", "rich", "pathlib", "import os"):
        assert forbidden not in source
