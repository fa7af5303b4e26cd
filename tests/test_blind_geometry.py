"""Blind resynchronisation: tile lattices from the autocorrelation, orientations, refinement."""

from __future__ import annotations

import numpy as np
import pytest

from watermark._attacks import aspect, flip, perspective, rotate
from watermark._carrier import TILE_CHIPS, tile_layout
from watermark._color import luma
from watermark._detect import _pilot_halves, detect_frame
from watermark._embed import embed_frame
from watermark._register import describe_tile_axes
from watermark._sync import estimate_lattices, lattice_map, warp_luma

from .frames import cel_frame, textured_frame

KEY = b"geometry-test-key-0123456789abcd"
PAYLOAD = 0xC0FFEE
CANDIDATES = np.array([PAYLOAD, 0x0BADF00D, 0x12345678], np.int64)
CHIP_PX = 4.0  # frames under 1000 px: 4-px chips, a 128-px tile


@pytest.fixture(scope="module")
def marked() -> np.ndarray:
    return embed_frame(textured_frame(600, 900, seed=3), KEY, PAYLOAD).image


@pytest.mark.parametrize("degrees", [7.0, -3.0, 20.0])
def test_lattice_of_a_rotated_mark(marked: np.ndarray, degrees: float) -> None:
    bases = estimate_lattices(luma(rotate(marked, degrees)))
    assert bases
    period = TILE_CHIPS * CHIP_PX
    u = bases[0][:, 0]  # nearest +x; image y points down, so a CCW turn has dy < 0
    assert abs(np.linalg.norm(u) / period - 1.0) < 0.003
    assert abs(np.degrees(np.arctan2(-u[1], u[0])) - degrees) < 0.1


def test_lattice_map_makes_the_lattice_square() -> None:
    basis = np.array([[120.0, -20.0], [30.0, 130.0]])
    m = lattice_map(basis)
    assert np.allclose(m[:2, :2] @ basis, 64.0 * np.eye(2))
    y = np.random.default_rng(0).uniform(0, 255, (300, 400)).astype(np.float32)
    working, valid, placed = warp_luma(y, m)
    assert working.shape == valid.shape and 0.5 < valid.mean() < 1.0
    corners = placed @ np.array([[0, 400, 0, 400], [0, 0, 300, 300], [1, 1, 1, 1]], float)
    assert corners[:2].min() >= -1e-6  # the leak lies inside the working image


@pytest.mark.parametrize(
    "name, attack, rotation, scale_x, flipped",
    [
        ("rotate 7", lambda im: rotate(im, 7.0), 7.0, 1.0, False),
        ("rotate -3", lambda im: rotate(im, -3.0), -3.0, 1.0, False),
        ("flip", flip, 0.0, 1.0, True),
        ("aspect 0.9", lambda im: aspect(im, 0.9), 0.0, 0.9, False),
        ("quarter turn", lambda im: np.ascontiguousarray(np.rot90(im)), 90.0, 1.0, False),
    ],
)
def test_blind_trace_resynchronises_and_reports_the_geometry(
    marked: np.ndarray, name: str, attack, rotation: float, scale_x: float, flipped: bool
) -> None:
    leak = attack(marked)
    d = detect_frame(leak, KEY, candidates=CANDIDATES)
    assert d.found and d.payload == PAYLOAD, name
    g = describe_tile_axes(d.axes, d.offset, CHIP_PX, leak.shape)
    assert abs(g.rotation - rotation) < 0.3 and g.flipped == flipped
    assert abs(g.scale_x - scale_x) < 0.005 and abs(g.scale_y - 1.0) < 0.005


def test_mild_perspective_is_refined(marked: np.ndarray) -> None:
    leak = perspective(marked, 0.03, rng=np.random.default_rng(5))
    d = detect_frame(leak, KEY, candidates=CANDIDATES)
    assert d.found and d.payload == PAYLOAD


@pytest.mark.parametrize("degrees", [4.0, 15.0])
def test_unmarked_or_foreign_rotated_frames_give_no_verdict(
    marked: np.ndarray, degrees: float
) -> None:
    cel = rotate(cel_frame(600, 900, seed=8), degrees)
    assert not detect_frame(cel, KEY, candidates=CANDIDATES).found
    # a mark under another studio's key
    other = detect_frame(
        rotate(marked, degrees), b"another-key-0123456789abcdefghij", candidates=CANDIDATES
    )
    assert not other.found


def test_pilot_halves_split_the_pilot() -> None:
    layout = tile_layout(KEY)
    pilot_a, is_a, decide = _pilot_halves(layout)
    assert not np.any(is_a & decide.pilot)
    assert np.array_equal(is_a | decide.pilot, layout.pilot)
    assert 0.4 < is_a.sum() / layout.pilot.sum() < 0.6
    assert np.array_equal(pilot_a != 0, is_a)
    assert np.array_equal(decide.bit_index, layout.bit_index)  # the data chips are unchanged


def test_a_leak_convicted_by_the_square_search_counts_the_whole_search(
    marked: np.ndarray,
) -> None:
    # the unrotated leak stops before the lattices are estimated; its p-value must still
    # count every hypothesis the lattice search could have added
    plain = detect_frame(marked, KEY, candidates=CANDIDATES)
    turned = detect_frame(rotate(marked, 7.0), KEY, candidates=CANDIDATES)
    assert plain.found and turned.found
    assert plain.axes == (CHIP_PX, 0.0, 0.0, CHIP_PX)
    assert plain.n_tests == turned.n_tests
    assert (
        plain.n_tests
        > detect_frame(marked, KEY, candidates=CANDIDATES, estimate_geometry=False).n_tests
    )
