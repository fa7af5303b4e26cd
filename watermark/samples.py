"""Bundled sample frames (small PNGs in ``watermark/data``) for the demo and tests.

See ``watermark/data/SOURCES.md`` for their origin and licences.
"""

from __future__ import annotations

from importlib import resources

import cv2
import numpy as np

__all__ = ["SAMPLE_NAMES", "sample_frames"]

#: File names of the bundled frames, in the order :func:`sample_frames` returns them.
SAMPLE_NAMES: tuple[str, ...] = (
    "morevna_sita_1920x1080.png",
    "bbb_meadow_640x360.png",
    "pcrunner_kitchen_640x360.png",
)


def sample_frames() -> list[tuple[str, np.ndarray]]:
    """Load the bundled sample frames.

    Returns
    -------
    list of (str, ndarray)
        ``(file name, pixels)`` pairs; pixels are uint8 RGB, read-only: a 1920x1080
        cel-style render (flat colours), then a 640x360 3D open-movie frame and a
        640x360 inked illustration.

    Raises
    ------
    FileNotFoundError
        A bundled file is missing (a broken installation).

    Examples
    --------
    >>> [pixels.shape for _, pixels in sample_frames()]
    [(1080, 1920, 3), (360, 640, 3), (360, 640, 3)]
    """
    frames: list[tuple[str, np.ndarray]] = []
    folder = resources.files("watermark") / "data"
    for name in SAMPLE_NAMES:
        data = (folder / name).read_bytes()
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"bundled sample {name} is unreadable; reinstall leaktrace")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        rgb.setflags(write=False)
        frames.append((name, rgb))
    return frames
