import cv2
import numpy as np
import pytest

from watermark._attacks import rotate
from watermark._carrier import TILE_CHIPS, tile_layout
from watermark._color import luma
from watermark._detect import _ORIENTATIONS, _orient, _pilot_halves, detect_frame
from watermark._embed import embed_frame
from watermark._scan import keyed_scan, near_square_lattices, scan_chip_size, scan_grid
from watermark._sync import estimate_chip_sizes

from .frames import hatched_frame, textured_frame

KEY = b"k" * 32
PAYLOAD = 0x1234ABCD
CANDIDATES = np.array([PAYLOAD, 5, 7], dtype=np.uint64)


def _pilots() -> np.ndarray:
    pilot_a = _pilot_halves(tile_layout(KEY))[0]
    return np.stack([_orient(pilot_a, g.T) for g in _ORIENTATIONS[:2]])  # as is, mirrored


@pytest.fixture(scope="module")
def hatched():
    img = hatched_frame(720, 1280, seed=1)
    img.setflags(write=False)
    # 4-px chips, as the size rule gives 720 rows (embed alone would take 8-px chips for
    # this weak frame)
    marked = embed_frame(img, KEY, PAYLOAD, level=2).image

    def three_quarters(a: np.ndarray) -> np.ndarray:
        return cv2.resize(a, (960, 540), interpolation=cv2.INTER_AREA)  # 3-px chips

    return three_quarters(img), three_quarters(marked)


def test_grid_is_fine_where_the_chips_are_small():
    g = scan_grid(2.0, 8.0, 512)
    assert g[0] == 2.0 and g[-2] < 8.0 <= g[-1]
    np.testing.assert_allclose(np.diff(g) / g[:-1], g[:-1] / 512)  # relative step c / side
    assert len(scan_grid(2.0, 8.0, 1024)) > 1.9 * len(g)


def test_scan_finds_the_chips_hatching_hides_from_the_autocorrelation(hatched):
    unmarked, leak = hatched
    y = luma(leak)
    assert all(abs(s / 3.0 - 1.0) > 0.01 for s in estimate_chip_sizes(y, n_candidates=6))
    chip_px, score = scan_chip_size(y, _pilots(), smallest=540 / 300, largest=64.0)
    assert abs(chip_px / 3.0 - 1.0) < 0.003
    assert score > 5.5
    _, unmarked_score = scan_chip_size(luma(unmarked), _pilots(), smallest=1.8, largest=64.0)
    assert unmarked_score < 5.5
    # and the trace reads it on that lattice (decided on pilot B)
    det = detect_frame(leak, KEY, candidates=CANDIDATES)
    assert det.found and det.payload == PAYLOAD
    assert abs(det.chip_px / 3.0 - 1.0) < 0.003
    assert not detect_frame(unmarked, KEY, candidates=CANDIDATES).found
    # blind decoding (no registry) reads the payload there too
    blind = detect_frame(leak, KEY)
    assert blind.found and blind.payload == PAYLOAD


def test_scan_sees_a_mirrored_leak(hatched):
    _, leak = hatched
    y = np.ascontiguousarray(luma(leak)[:, ::-1])
    chip_px, score = scan_chip_size(y, _pilots(), smallest=1.8, largest=64.0)
    assert abs(chip_px / 3.0 - 1.0) < 0.003 and score > 5.5
    chip_px, score = scan_chip_size(y, _pilots()[:1], smallest=1.8, largest=64.0)
    assert score < 5.5  # not without the mirrored pilot


def test_scan_rejects_bad_arguments():
    y = np.zeros((300, 300), np.float32)
    with pytest.raises(ValueError, match="pilots"):
        scan_chip_size(y, np.zeros((TILE_CHIPS, TILE_CHIPS)), smallest=2.0, largest=4.0)
    with pytest.raises(ValueError, match="smallest"):
        scan_chip_size(y, _pilots(), smallest=4.0, largest=2.0)
    with pytest.raises(ValueError, match="smallest"):
        scan_grid(0.0, 2.0, 100)


def test_scan_of_a_tiny_leak_returns_nothing():
    y = np.full((60, 60), 128.0, np.float32)  # no tile of 1-px chips fits twice
    assert scan_chip_size(y, _pilots(), smallest=1.0, largest=64.0) == (0.0, -np.inf)


def test_keyed_scan_scores_tile_lattices_too():
    """A lattice is scored from the same spectra as the square sizes: the turned tile of a
    rotated leak scores like its square size would unturned; a lattice 4 % off, the
    unturned square and a square size score like noise."""
    marked = embed_frame(textured_frame(600, 900, seed=3), KEY, PAYLOAD).image
    pilot_a = _pilot_halves(tile_layout(KEY))[0]
    every = np.stack([_orient(pilot_a, g.T) for g in _ORIENTATIONS])
    t = np.radians(7.0)
    turned = 128.0 * np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    bases = np.stack([turned, 1.04 * turned, 128.0 * np.eye(2)])
    y = luma(rotate(marked, 7.0))
    chip_px, score, (lattice,) = keyed_scan(
        y, _pilots(), smallest=2.0, largest=64.0, lattices=((bases, every),)
    )
    assert lattice[0] > 8.0
    assert lattice[1] < 5.5 and lattice[2] < 5.5
    assert score < 5.5  # the square scan cannot see a turned tile
    # unturned, the square lattice and the square size agree
    y = luma(marked)
    chip_px, score, (lattice,) = keyed_scan(
        y, _pilots(), smallest=2.0, largest=64.0, lattices=((bases[2:], _pilots()),)
    )
    assert abs(chip_px / 4.0 - 1.0) < 0.003
    assert lattice[0] > 8.0 and abs(lattice[0] - score) < 0.5
    # a lattice whose tile does not fit twice in the leak is not scored
    _, _, (lattice,) = keyed_scan(
        y, _pilots(), smallest=2.0, largest=64.0, lattices=((60.0 * bases[2:], _pilots()),)
    )
    assert lattice[0] == -np.inf


def test_near_square_lattices_turn_and_stretch_the_native_tile():
    bases = near_square_lattices([4.0, 8.0], max_turn=10.0, turn_step=1.0)
    period = np.sqrt(np.abs(np.linalg.det(bases))) / TILE_CHIPS
    assert bases.shape[1:] == (2, 2) and np.all(np.isfinite(bases))
    assert period.min() > 4.0 * 0.87 and period.max() < 8.0 * 1.15
    turned = np.abs(bases[:, 1, 0]) > 0  # the stretched ones have no off-diagonal term
    angle = np.degrees(np.arctan2(bases[turned, 1, 0], bases[turned, 0, 0]))
    assert np.isclose(angle.min(), -10.0) and np.isclose(angle.max(), 10.0)
    assert np.all(np.abs(angle) > 0.5)  # unturned squares are the square scan's
    cols = np.linalg.norm(bases[turned], axis=1)  # square chips: both periods equal
    np.testing.assert_allclose(cols[:, 0], cols[:, 1])
    sx, sy = bases[~turned, 0, 0], bases[~turned, 1, 1]
    assert np.all(np.abs(sx / sy - 1.0) > 0.03)
    assert near_square_lattices([]).shape == (0, 2, 2)
