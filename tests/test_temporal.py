"""Tests of watermark._temporal beyond the clip files: marking frames handed over in one
reused buffer."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from watermark._temporal import mark_frames

from .frames import textured_frame

KEY = b"t" * 32


def test_marking_with_threads_copes_with_a_reused_frame_buffer() -> None:
    shot = [textured_frame(64, 96, seed=s) for s in range(6)]

    def refilled() -> Iterator[np.ndarray]:  # a decoder loop that reads into one array
        buffer = np.empty_like(shot[0])
        for frame in shot:
            buffer[...] = frame
            yield buffer

    fresh = [r.image for r in mark_frames(iter(shot), KEY, 9, workers=1)]
    for workers in (1, 2, 3):
        marked = [r.image for r in mark_frames(refilled(), KEY, 9, workers=workers)]
        assert all(np.array_equal(a, b) for a, b in zip(marked, fresh, strict=True)), workers
