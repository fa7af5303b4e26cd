"""Tests of the bundled sample frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from watermark import samples
from watermark.samples import SAMPLE_NAMES, sample_frames


def test_sample_frames() -> None:
    frames = sample_frames()
    assert [name for name, _ in frames] == list(SAMPLE_NAMES)
    for name, pixels in frames:
        width, height = (int(v) for v in name.rsplit("_", 1)[1].removesuffix(".png").split("x"))
        assert pixels.shape == (height, width, 3) and pixels.dtype == np.uint8
        assert not pixels.flags.writeable
        assert pixels.std() > 5


def test_samples_are_small_and_attributed() -> None:
    data = Path(samples.__file__).parent / "data"
    assert sum((data / name).stat().st_size for name in SAMPLE_NAMES) < 1_500_000
    sources = (data / "SOURCES.md").read_text()
    for name in SAMPLE_NAMES:
        assert name in sources
    assert "CC-BY" in sources and "CC0" in sources


def test_broken_installation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(samples, "SAMPLE_NAMES", ("SOURCES.md",))
    with pytest.raises(FileNotFoundError, match="reinstall"):
        sample_frames()
