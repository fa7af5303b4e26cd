"""Synthetic test frames: flat-fill cel frames with outlines, hatched line art, shaded
sketches on white paper, and textured photo-like frames."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["cel_frame", "hatched_frame", "sketch_frame", "textured_frame"]


def cel_frame(height: int, width: int, *, seed: int) -> np.ndarray:
    """A cel-style RGB uint8 frame: flat background, flat-filled shapes, dark outlines."""
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = rng.integers(150, 250, 3, dtype=np.uint8)
    for _ in range(12):
        colour = tuple(int(c) for c in rng.integers(30, 250, 3))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (
            int(rng.integers(width // 16, width // 4)),
            int(rng.integers(height // 16, height // 4)),
        )
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(img, centre, axes, angle, 0, 360, colour, -1, cv2.LINE_AA)
        cv2.ellipse(img, centre, axes, angle, 0, 360, (20, 20, 30), 2, cv2.LINE_AA)
    return img


def textured_frame(height: int, width: int, *, seed: int) -> np.ndarray:
    """A photo-like RGB uint8 frame: smooth gradients plus 1/f-ish texture."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 1.0, (height, width, 3)).astype(np.float32)
    tex = cv2.GaussianBlur(noise, (0, 0), 1.5) * 25 + cv2.GaussianBlur(noise, (0, 0), 6.0) * 60
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (yy / height * 80 + xx / width * 40)[..., None]
    return np.clip(np.rint(90 + ramp + tex), 0, 255).astype(np.uint8)


def hatched_frame(height: int, width: int, *, seed: int) -> np.ndarray:
    """A line-art RGB uint8 frame: dense diagonal hatching (a line every 5 px, one
    direction per half) under a few thick outlines; its own period hides a tiled mark's
    lattice from the autocorrelation."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width), 250, np.uint8)
    half = width // 2
    for slope, (x0, x1) in ((1, (0, half)), (-1, (half, width))):
        part = np.full((height, x1 - x0), 250, np.uint8)
        for c in range(-height, x1 - x0 + height, 5):
            cv2.line(part, (c, 0), (c + slope * height, height), 40, 1, cv2.LINE_AA)
        img[:, x0:x1] = part
    for _ in range(12):
        pts = rng.integers(0, [width, height], size=(5, 2)).astype(np.int32)
        cv2.polylines(img, [pts], True, 0, 3, cv2.LINE_AA)
    return np.dstack([img] * 3)


def sketch_frame(height: int, width: int, *, seed: int, ink: float = 0.05) -> np.ndarray:
    """A pencil-sketch-like RGB uint8 frame: patches of textured shading over `ink` of the
    area (in (0, 1)), the rest pure white paper (255), which carries only the darker half
    of a mark and loses it all to a brightness lift."""
    rng = np.random.default_rng(seed)
    blobs = rng.normal(size=(height // 32 + 1, width // 32 + 1)).astype(np.float32)
    blobs = cv2.resize(blobs, (width, height), interpolation=cv2.INTER_CUBIC)
    shaded = blobs > np.quantile(blobs, 1.0 - ink)
    img = np.full((height, width, 3), 255, np.uint8)
    img[shaded] = textured_frame(height, width, seed=seed)[shaded]
    return img
