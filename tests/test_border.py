"""The picture's quadrilateral inside a dark surround, and the blind trace through it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from watermark import _detect
from watermark._attacks import (
    brightness,
    gaussian_blur,
    gaussian_noise,
    jpeg,
    matte,
    perspective,
    rotate,
)
from watermark._border import picture_quad, rectifying_map
from watermark._color import luma
from watermark._detect import detect_frame
from watermark._embed import embed_frame
from watermark.media import read_image

from ._factories import CORPUS
from .frames import cel_frame, textured_frame

KEY = b"border-test-key-0123456789abcdef"
PAYLOAD = 0xFACADE
CANDIDATES = np.array([PAYLOAD, 0x0BADF00D, 0x12345678], np.int64)


def _edges(h: int, w: int) -> np.ndarray:
    return np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])


def _warped(image: np.ndarray, moves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`image` warped so its corners move by `moves` (4, 2) px, black outside; and the
    true corners of its outer edge in the result."""
    h, w = image.shape[:2]
    corners = _edges(h, w)
    m = cv2.getPerspectiveTransform(
        corners.astype(np.float32), (corners + moves).astype(np.float32)
    )
    out = cv2.warpPerspective(image, m, (w, h), flags=cv2.INTER_CUBIC, borderValue=0)
    return out, corners + moves


MOVES = np.array([[14.0, 9.0], [-6.0, 15.0], [-19.0, -4.0], [8.0, -12.0]])


@pytest.mark.parametrize("make", [textured_frame, cel_frame])
def test_quad_of_a_perspective_warp(make) -> None:
    leak, truth = _warped(make(480, 720, seed=2), MOVES)
    quad = picture_quad(luma(leak))
    assert quad is not None
    assert np.abs(quad - truth).max() < 1.5


def test_quad_survives_a_camcorder_chain() -> None:
    leak, truth = _warped(textured_frame(480, 720, seed=4), MOVES)
    rng = np.random.default_rng(0)
    leak = jpeg(gaussian_noise(brightness(gaussian_blur(leak, 1.0), 10), 5, rng=rng), 70)
    quad = picture_quad(luma(leak))
    assert quad is not None
    assert np.abs(quad - truth).max() < 2.5


def test_quad_of_a_turned_frame() -> None:
    # a turned frame's corners leave the leak; its sides are still four straight lines
    frame = textured_frame(480, 720, seed=5)
    h, w = frame.shape[:2]
    m = np.vstack([cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), 5.0, 1.0), [0, 0, 1]])
    truth = cv2.perspectiveTransform(_edges(h, w)[None], m)[0]
    quad = picture_quad(luma(rotate(frame, 5.0)))
    assert quad is not None
    assert np.abs(quad - truth).max() < 1.5


def test_no_quad_without_a_tilted_surround() -> None:
    frame = textured_frame(360, 640, seed=6)
    assert picture_quad(luma(frame)) is None  # no surround
    assert picture_quad(luma(matte(frame, 2.39))) is None  # a matte is axis-aligned
    assert picture_quad(np.zeros((200, 300), np.float32)) is None  # all surround
    dark = np.full((360, 640), 12.0, np.float32)
    dark[100:200, 200:400] = 200.0  # a bright patch inside a dark frame: not a border
    assert picture_quad(dark) is None


def test_rectifying_map_takes_the_quad_to_the_leak_rectangle() -> None:
    quad = _edges(300, 400) + MOVES / 2
    m = rectifying_map(quad, (300, 400, 3))
    np.testing.assert_allclose(
        cv2.perspectiveTransform(quad[None], m)[0], _edges(300, 400), atol=1e-3
    )


def test_quad_finder_does_not_touch_its_input() -> None:
    leak, _ = _warped(textured_frame(240, 320, seed=7), MOVES / 3)
    y = luma(leak)
    before = y.copy()
    picture_quad(y)
    assert np.array_equal(y, before)


def test_hatched_line_art_under_a_perspective_is_traced_through_its_border(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hatched line art hides its tile lattice, and a perspective bends the lattice across
    the frame: only the picture's border brings the frame back."""
    path = CORPUS / "frames" / "pcrunner_world_lineart_dorokhova_1280x720.png"
    if not path.exists():
        pytest.skip(f"test corpus not found at {CORPUS}")
    image = read_image(path).pixels
    leak = perspective(embed_frame(image, KEY, PAYLOAD).image, 0.03, rng=np.random.default_rng(3))
    det = detect_frame(leak, KEY, candidates=CANDIDATES)
    assert det.found and det.payload == PAYLOAD
    unmarked = perspective(image, 0.03, rng=np.random.default_rng(3))
    assert not detect_frame(unmarked, KEY, candidates=CANDIDATES).found
    # without the border the same leak is not read, and the search is charged less
    monkeypatch.setattr(_detect, "picture_quad", lambda y: None)
    blind = detect_frame(leak, KEY, candidates=CANDIDATES)
    assert not blind.found and blind.n_tests < det.n_tests
