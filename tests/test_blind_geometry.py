"""Blind resynchronisation: tile lattices from the autocorrelation, orientations, refinement."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from watermark._attacks import aspect, camcorder, flip, perspective, rotate
from watermark._carrier import TILE_CHIPS, tile_layout
from watermark._color import luma
from watermark._detect import _pilot_halves, detect_frame
from watermark._embed import embed_frame
from watermark._register import describe_tile_axes
from watermark._scan import keyed_scan, near_square_lattices
from watermark._sync import (
    PICTURE_GUARD,
    WORK_PX,
    _fit_bases,
    area_resize,
    estimate_lattices,
    lattice_candidates,
    lattice_map,
    warp_luma,
)
from watermark.media import read_image

from ._factories import CORPUS
from .frames import cel_frame, sketch_frame, textured_frame

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
    working, valid, placed, _ = warp_luma(y, m)
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


@pytest.mark.parametrize(
    "name, to_leak, size",
    [
        # (original -> leak affine map, leak (w, h)); the square fold answers the crops,
        # the lattice folds the rest
        ("crop 0, 0", [[1, 0, 0], [0, 1, 0]], (450, 300)),
        ("crop 37, 11", [[1, 0, -37], [0, 1, -11]], (450, 300)),
        ("scale 0.8", [[0.8, 0, -13], [0, 0.8, -7]], (560, 420)),
        ("flip", [[-1, 0, 899], [0, 1, 0]], (900, 600)),
        ("aspect 0.9", [[0.9, 0, 0], [0, 1, 0]], (810, 600)),
        ("rotate 7", cv2.getRotationMatrix2D((449.5, 299.5), 7.0, 1.0), (900, 600)),
    ],
)
def test_blind_offset_is_where_the_leak_sits_in_the_tile(
    marked: np.ndarray, name: str, to_leak, size: tuple[int, int]
) -> None:
    m = np.asarray(to_leak, np.float64)
    leak = cv2.warpAffine(marked, m, size, flags=cv2.INTER_LINEAR)
    d = detect_frame(leak, KEY, candidates=CANDIDATES)
    assert d.found and d.payload == PAYLOAD, name
    g = describe_tile_axes(d.axes, d.offset, CHIP_PX, leak.shape)
    # the original point under the leak's centre, known modulo the tile
    centre = np.array([(size[0] - 1) / 2.0, (size[1] - 1) / 2.0, 1.0])
    truth = np.linalg.solve(np.vstack([m, [0.0, 0.0, 1.0]]), centre)[:2]
    period = TILE_CHIPS * CHIP_PX
    error = (np.array(g.offset) - truth + period / 2) % period - period / 2
    # the folds find the grid to half a working pixel, a quarter chip (1 px here); a half
    # chip (2 px) off was the bias of reading the cell's start as the chip's
    assert np.abs(error).max() <= 0.3 * CHIP_PX, (name, error)


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
    turned = detect_frame(rotate(marked, 7.0, inner_crop=True), KEY, candidates=CANDIDATES)
    assert plain.found and turned.found
    assert plain.axes == (CHIP_PX, 0.0, 0.0, CHIP_PX)
    assert plain.n_tests == turned.n_tests
    # with black corners the turned picture's quadrilateral is one more geometry, found
    # without the key: its maps at the two native chip sizes (4 and 8 px for 600 x 900), in
    # all 8 orientations and refined
    cornered = detect_frame(rotate(marked, 7.0), KEY, candidates=CANDIDATES)
    assert cornered.found
    extra = 2 * (8 + 1) * WORK_PX**2 * TILE_CHIPS**2 * CANDIDATES.size
    assert cornered.n_tests == plain.n_tests + extra
    assert (
        plain.n_tests
        > detect_frame(marked, KEY, candidates=CANDIDATES, estimate_geometry=False).n_tests
    )


def test_a_weak_square_verdict_goes_on_to_the_geometry_that_fits() -> None:
    # turned by 1 degree, this 400 x 600 frame is just convicted by the square search (p 3e-10
    # with axis-aligned chips); the lattices fit the turn and read it far more strongly, and
    # the verdict keeps the stronger reading (n_tests counts both either way)
    leak = rotate(embed_frame(textured_frame(400, 600, seed=3), KEY, PAYLOAD).image, 1.0)
    det = detect_frame(leak, KEY, candidates=CANDIDATES)
    assert det.found and det.payload == PAYLOAD
    assert det.p_value < 1e-30
    assert np.degrees(np.arctan2(det.axes[1], det.axes[0])) == pytest.approx(1.0, abs=0.2)


def _turned(degrees: float, period: float) -> np.ndarray:
    """Tile basis (columns the period vectors (dx, dy)) of a square tile turned CCW."""
    t = np.radians(degrees)
    return period * np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])


def _peaks_at(basis: np.ndarray, shape: tuple[int, int] = (512, 512)) -> np.ndarray:
    """A synthetic autocorrelation (lag (0, 0) at [0, 0], wrapping) peaking on a lattice."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w]
    dy = np.where(ys < h / 2, ys, ys - h).astype(float)
    dx = np.where(xs < w / 2, xs, xs - w).astype(float)
    ac = np.zeros(shape, np.float32)
    for i in range(-4, 5):
        for j in range(-4, 5):
            px, py = basis @ np.array([i, j], float)
            ac += np.exp(-((dx - px) ** 2 + (dy - py) ** 2) / 2.0).astype(np.float32)
    return ac


def test_fit_bases_pins_a_lattice_down_from_a_rough_start() -> None:
    true = _turned(10.0, 60.0)
    ac = _peaks_at(true)
    rough = _turned(11.0, 60.8)  # one degree and 1.3 % off: 1.3 px at the first points
    fitted = _fit_bases(ac, rough[None], 256, 256, square=True)[0]
    assert np.abs(fitted - true).max() < 0.05
    # the general fit follows a rectangle (aspect change) the square one cannot
    wide = np.array([[66.0, 0.0], [0.0, 60.0]])
    fitted = _fit_bases(_peaks_at(wide), np.array([[[65.0, 0.5], [-0.5, 61.0]]]), 256, 256)[0]
    assert np.abs(fitted - wide).max() < 0.05


def test_area_resize_is_area_averaging() -> None:
    y = np.random.default_rng(2).uniform(0, 255, (600, 1000)).astype(np.float32)
    for size in [(500, 300), (250, 150), (333, 177), (1000, 600)]:
        direct = cv2.resize(y, size, interpolation=cv2.INTER_AREA)
        fast = area_resize(y, size)
        assert fast.shape == direct.shape
        assert abs(float(fast.mean()) - float(direct.mean())) < 0.05
    # exact halvings are the 2 x 2 means
    np.testing.assert_array_equal(
        area_resize(y, (500, 300)), cv2.resize(y, (500, 300), interpolation=cv2.INTER_AREA)
    )
    np.testing.assert_allclose(
        area_resize(y, (250, 150)), y.reshape(150, 4, 250, 4).mean(axis=(1, 3)), atol=1e-3
    )


@pytest.mark.parametrize("degrees", [1.0, -6.0, 15.0])
def test_hatched_backdrop_is_traced_from_a_runner_up_lattice(degrees: float) -> None:
    """Line art hatched with a period of its own: its lattices outrank the mark's in the
    autocorrelation, so the best four miss it; a runner-up the key recognises is right."""
    path = CORPUS / "frames" / "pcrunner_world_lineart_dorokhova_1280x720.png"
    if not path.exists():
        pytest.skip(f"test corpus not found at {CORPUS}")
    image = read_image(path).pixels
    leak = rotate(embed_frame(image, KEY, PAYLOAD).image, degrees)
    true = _turned(degrees, TILE_CHIPS * CHIP_PX)
    best = estimate_lattices(luma(leak), n_candidates=4)
    assert min(np.abs(b - true).max() for b in best) > 2.0  # not among the best four
    best, spares = lattice_candidates(luma(leak), n_candidates=4, n_spares=24)
    assert min(np.abs(b - true).max() for b in spares) < 0.5
    det = detect_frame(leak, KEY, candidates=CANDIDATES)
    assert det.found and det.payload == PAYLOAD
    assert not detect_frame(rotate(image, degrees), KEY, candidates=CANDIDATES).found


@pytest.mark.parametrize("attack", ["aspect0.9", "rotate5crop"])
def test_line_art_hiding_its_lattice_is_found_by_the_key(attack: str) -> None:
    """Thin line art on white: after a stretch or a turn its lattice is in neither the
    autocorrelation's best four nor its runners-up; the keyed lattices near the native
    square ones find it."""
    path = CORPUS / "frames" / "pcrunner_world_lineart_dorokhova_1280x720.png"
    if not path.exists():
        pytest.skip(f"test corpus not found at {CORPUS}")
    image = read_image(path).pixels
    marked = embed_frame(image, KEY, PAYLOAD).image
    if attack == "aspect0.9":
        leak, true = aspect(marked, 0.9), np.diag([0.9, 1.0]) * TILE_CHIPS * CHIP_PX
    else:
        leak, true = rotate(marked, 5.0, inner_crop=True), _turned(5.0, TILE_CHIPS * CHIP_PX)
    y = luma(leak)
    best, spares = lattice_candidates(y, n_candidates=4, n_spares=24)
    assert min(np.abs(b - true).max() for b in [*best, *spares]) > 2.0
    near = near_square_lattices([CHIP_PX])
    _, _, (scores,) = keyed_scan(
        y, _scan_pilots(), smallest=2.0, largest=64.0, lattices=((near, _scan_pilots()),)
    )
    assert np.abs(near[int(np.argmax(scores))] - true).max() < 0.02 * TILE_CHIPS * CHIP_PX
    det = detect_frame(leak, KEY, candidates=CANDIDATES)
    assert det.found and det.payload == PAYLOAD
    assert not detect_frame(aspect(image, 0.9), KEY, candidates=CANDIDATES).found


def _scan_pilots() -> np.ndarray:
    pilot_a = _pilot_halves(tile_layout(KEY))[0]
    return np.stack([pilot_a, pilot_a[:, ::-1]])


def test_a_picture_in_a_dark_surround_is_folded_without_its_border() -> None:
    y = np.zeros((300, 400), np.float32)
    quad = np.array([[39.5, 29.5], [359.5, 49.5], [349.5, 269.5], [49.5, 259.5]])
    m = lattice_map(np.eye(2) * 64.0)  # 1 leak px -> 1 working px
    _, whole, placed, _ = warp_luma(y, m)
    _, inner, placed_inner, _ = warp_luma(y, m, quad)
    assert np.array_equal(placed, placed_inner)
    inside = np.zeros(y.shape, np.uint8)
    cv2.fillConvexPoly(inside, np.round(quad * 16).astype(np.int32), 1, shift=4)
    deep = cv2.erode(inside, np.ones((2 * PICTURE_GUARD + 3,) * 2, np.uint8)).astype(bool)
    near = cv2.dilate(inside, np.ones((3, 3), np.uint8)).astype(bool)
    assert inner.min() == 0.0 and inner.max() == 1.0
    assert np.all(inner[deep] == 1.0)  # the picture, away from its border
    assert not inner[~near].any()  # nothing of the surround
    # the border band is left out: the guard's width all round
    band = inside.astype(bool) & ~deep
    assert 0.5 * band.sum() < band.sum() - inner[band].sum()
    assert whole[~near].all()  # without a picture every pixel of the leak counts


def test_camcorder_chain_on_a_sketch_on_white_paper() -> None:
    # shading on 5 % of pure white paper: brightness +10 clips the paper, and the mark
    # left on the shading is outweighed by the step to the dark surround unless only
    # the picture is folded (0d0a733, which folded it all: p 1.6e-7 and 2.3e-5; now
    # 3.2e-12 and 1.3e-14)
    marked = embed_frame(sketch_frame(720, 1280, seed=1), KEY, PAYLOAD).image
    for seed in (0, 1):
        d = detect_frame(
            camcorder(marked, rng=np.random.default_rng(seed)), KEY, candidates=CANDIDATES
        )
        assert d.found and d.payload == PAYLOAD and d.p_value <= 1e-9, seed
