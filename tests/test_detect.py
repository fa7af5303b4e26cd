import cv2
import numpy as np
import pytest

from watermark._carrier import chip_values, tile_layout
from watermark._detect import (
    _confusion_probability,
    _Hypothesis,
    _plausible_chip,
    _soft_bits,
    detect_frame,
    leak_scale,
)
from watermark._ecc import CODED_BITS, encode_payloads
from watermark._embed import embed_frame
from watermark._sync import estimate_chip_sizes

from .frames import cel_frame, textured_frame

KEY = b"k" * 32
OTHER_KEY = b"z" * 32
CANDIDATES = np.array([0x1234ABCD, 0x0F0F0F0F, 0xCAFEBABE, 0x00000001], dtype=np.uint64)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def _half(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module", params=["cel", "textured"])
def marked(request):
    make = cel_frame if request.param == "cel" else textured_frame
    img = make(480, 640, seed=11)
    img.setflags(write=False)
    return img, embed_frame(img, KEY, int(CANDIDATES[2])).image


@pytest.mark.parametrize(
    "attack",
    [
        lambda im: im,
        lambda im: _jpeg(im, 50),
        lambda im: _half(im),
        lambda im: im[77 : 77 + 339, 101 : 101 + 453],  # ~50 % of the area, odd offset
    ],
    ids=["none", "jpeg50", "half", "crop50"],
)
def test_registry_trace_names_the_delivery(marked, attack):
    _, img = marked
    det = detect_frame(attack(img), KEY, candidates=CANDIDATES)
    assert det.found
    assert det.payload == int(CANDIDATES[2])
    assert det.p_value <= 1e-6
    assert det.score > 8.0


def test_blind_decoding_without_registry(marked):
    _, img = marked
    det = detect_frame(img, KEY)
    assert det.found and det.payload == int(CANDIDATES[2])
    assert det.chip_px == 4.0


def test_scale_and_offset_are_reported(marked):
    _, img = marked
    det = detect_frame(_half(img[40:, 24:]), KEY, candidates=CANDIDATES)
    assert det.found and det.chip_px == 2.0
    assert leak_scale(det.chip_px, img.shape) == 0.5
    # the crop started 40 px = 10 chips down and 24 px = 6 chips right
    assert det.offset[0] == pytest.approx(10.0, abs=0.3)
    assert det.offset[1] == pytest.approx(6.0, abs=0.3)


def test_unmarked_and_wrong_key_give_no_verdict(marked):
    original, img = marked
    for det in (
        detect_frame(original, KEY, candidates=CANDIDATES),
        detect_frame(img, OTHER_KEY, candidates=CANDIDATES),
        detect_frame(original, KEY),
        detect_frame(img, OTHER_KEY),
    ):
        assert not det.found and det.payload is None
        assert det.p_value > 1e-3


def test_unregistered_delivery_is_not_pinned_on_a_candidate(marked):
    _, img = marked
    others = np.array([c for c in CANDIDATES if c != CANDIDATES[2]], dtype=np.uint64)
    det = detect_frame(img, KEY, candidates=others)
    assert not det.found


def test_identical_candidates_are_refused(marked):
    # a repeated id would be its own rival, and the verdict silently lost: said instead
    _, img = marked
    for twins in ([CANDIDATES[2], CANDIDATES[2]], [*CANDIDATES, CANDIDATES[0]]):
        with pytest.raises(ValueError, match="candidates must be distinct"):
            detect_frame(img, KEY, candidates=np.array(twins, dtype=np.uint64))


def test_detect_accepts_readonly_grey_uint16(marked):
    _, img = marked
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    grey.setflags(write=False)
    det = detect_frame(grey, KEY, candidates=CANDIDATES)
    assert det.found and det.payload == int(CANDIDATES[2])


def test_detect_rejects_bad_arguments():
    img = np.zeros((64, 64), np.uint8)
    with pytest.raises(ValueError, match="p_threshold"):
        detect_frame(img, KEY, p_threshold=0.0)
    with pytest.raises(ValueError, match="chip_sizes"):
        detect_frame(img, KEY, chip_sizes=(0.5,))
    with pytest.raises(ValueError, match="candidates"):
        detect_frame(img, KEY, candidates=np.array([1.5]))
    with pytest.raises(ValueError, match="16x16"):
        detect_frame(np.zeros((8, 8), np.uint8), KEY)
    with pytest.raises(TypeError, match="key"):
        detect_frame(img, "key")  # type: ignore[arg-type]


def test_tiny_or_flat_frames_do_not_crash():
    flat = np.full((20, 20, 3), 200, np.uint8)
    det = detect_frame(flat, KEY, candidates=CANDIDATES)
    assert not det.found


@pytest.mark.parametrize("scale", [0.75, 0.667, 1.5])
def test_other_scales_are_found_by_the_lattice_search(scale):
    img = textured_frame(480, 640, seed=5)
    marked = embed_frame(img, KEY, int(CANDIDATES[1])).image
    size = (round(640 * scale), round(480 * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    leak = cv2.resize(marked, size, interpolation=interp)
    det = detect_frame(leak, KEY, candidates=CANDIDATES)
    assert det.found and det.payload == int(CANDIDATES[1])
    assert det.chip_px == pytest.approx(4.0 * scale, rel=0.01)
    assert leak_scale(det.chip_px, img.shape) == pytest.approx(scale, rel=0.01)
    # without the estimate, only 1 and 0.5 are searched: nothing is found
    assert not detect_frame(leak, KEY, candidates=CANDIDATES, estimate_geometry=False).found


@pytest.mark.parametrize("make", [cel_frame, textured_frame], ids=["cel", "textured"])
def test_quarter_size_leak_of_a_small_frame_is_traced(make):
    # a frame under 1000 px carries 4-px chips: a quarter-size copy has 1-px chips
    img = make(480, 960, seed=8)
    marked = embed_frame(img, KEY, int(CANDIDATES[3])).image
    leak = cv2.resize(marked, (240, 120), interpolation=cv2.INTER_AREA)
    det = detect_frame(leak, KEY, candidates=CANDIDATES)
    assert det.found and det.payload == int(CANDIDATES[3])
    assert det.chip_px == 1.0
    assert leak_scale(det.chip_px, img.shape) == 0.25
    assert not detect_frame(
        cv2.resize(img, (240, 120), interpolation=cv2.INTER_AREA), KEY, candidates=CANDIDATES
    ).found
    # without the 1-px hypothesis, no other square size reads it
    sizes = (8.0, 4.0, 16.0, 2.0)
    assert not detect_frame(
        leak, KEY, candidates=CANDIDATES, chip_sizes=sizes, estimate_geometry=False
    ).found


def test_chip_sizes_no_delivered_frame_can_show_are_not_searched():
    # an 8K frame has 16-px chips, 270 across its short side, at any scale
    assert _plausible_chip(16.0, (4320, 7680)) and _plausible_chip(1.0, (270, 480))
    assert _plausible_chip(2.0, (1080, 1920)) and not _plausible_chip(1.0, (1080, 1920))
    assert not _plausible_chip(2.0, (2160, 3840)) and _plausible_chip(4.0, (2160, 3840))


def test_estimated_chip_size_is_precise():
    img = textured_frame(600, 800, seed=6)
    marked = embed_frame(img, KEY, 9).image
    leak = cv2.resize(marked, (640, 480), interpolation=cv2.INTER_AREA)  # scale 0.8
    y = cv2.cvtColor(leak, cv2.COLOR_RGB2GRAY).astype(np.float32)
    sizes = estimate_chip_sizes(y)
    assert min(abs(s / 3.2 - 1.0) for s in sizes) < 0.005


def test_estimator_on_flat_or_tiny_input_proposes_nothing_or_few():
    assert estimate_chip_sizes(np.full((32, 32), 100, np.float32)) == []
    flat = estimate_chip_sizes(np.full((300, 400), 100, np.float32))
    assert len(flat) <= 12


@pytest.mark.parametrize("amplitude", [0.05, 0.15, 0.4])
def test_pair_bound_holds_when_a_rival_is_the_mark(amplitude):
    # chips carry delivery `rival`'s pattern at this amplitude (noise sigma 1); the bound on
    # accusing `accused` instead must be a valid p-value whatever the amplitude
    layout = tile_layout(KEY)
    rival, accused = encode_payloads(CANDIDATES[:2]).astype(np.float64) * 2.0 - 1.0
    pattern = chip_values(layout, encode_payloads(int(CANDIDATES[0])))
    n_pilot = float(np.count_nonzero(layout.pilot))
    per_bit = np.bincount(layout.bit_index[layout.bit_index >= 0], minlength=CODED_BITS)
    rng = np.random.default_rng(17)
    trials = 3000
    p = np.empty(trials)
    for n in range(trials):
        chips = amplitude * pattern + rng.standard_normal(pattern.shape)
        pilot_z = float(np.sum(chips * layout.pilot_chips)) / np.sqrt(
            float(np.sum(chips**2 * layout.pilot))
        )
        soft, energy = _soft_bits(_Hypothesis(pilot_z, 1.0, (0, 0), (0, 0), chips), layout)
        p[n] = _confusion_probability(
            soft, energy, accused, rival[None] != accused, pilot_z, n_pilot, per_bit.astype(float)
        )
    for alpha in (0.01, 0.1):
        assert np.mean(p <= alpha) <= alpha + 3.0 * np.sqrt(alpha * (1 - alpha) / trials)


def test_pair_bound_clears_the_delivery_that_is_the_mark():
    layout = tile_layout(KEY)
    rival, accused = encode_payloads(CANDIDATES[:2]).astype(np.float64) * 2.0 - 1.0
    pattern = chip_values(layout, encode_payloads(int(CANDIDATES[1])))  # accused is the mark
    per_bit = np.bincount(layout.bit_index[layout.bit_index >= 0], minlength=CODED_BITS)
    chips = 0.3 * pattern + np.random.default_rng(3).standard_normal(pattern.shape)
    pilot_z = float(np.sum(chips * layout.pilot_chips)) / np.sqrt(
        float(np.sum(chips**2 * layout.pilot))
    )
    soft, energy = _soft_bits(_Hypothesis(pilot_z, 1.0, (0, 0), (0, 0), chips), layout)
    n_pilot = float(np.count_nonzero(layout.pilot))
    p = _confusion_probability(
        soft, energy, accused, rival[None] != accused, pilot_z, n_pilot, per_bit.astype(float)
    )
    assert p < 1e-6


def test_whitening_keeps_more_mark_between_thin_lines_than_a_blur_residual() -> None:
    """Noisy thin line art over a +-3 chip pattern (working resolution): the blended host
    estimate (blur and median) takes more of the lines out of the residual than a blur
    alone, so the whitened residual correlates better with the chips."""
    from watermark._sync import equalise_energy, whiten

    def blur_only(y: np.ndarray) -> np.ndarray:  # the whitening before the median
        r = y - cv2.GaussianBlur(y, (0, 0), 1.0)
        return equalise_energy(r, cv2.GaussianBlur(r * r, (0, 0), 2.0))

    def correlation(r: np.ndarray, pattern: np.ndarray) -> float:
        return float(np.sum(r * pattern) / np.sqrt(np.sum(r * r) * np.sum(pattern**2)))

    for seed in range(3):
        rng = np.random.default_rng(seed)
        chips = rng.choice([-1.0, 1.0], size=(128, 128))
        pattern = np.kron(chips, np.ones((2, 2))).astype(np.float32)  # 2-px working chips
        art = np.full((256, 256), 250, np.uint8)
        for _ in range(60):
            a, b = rng.integers(0, 256, 2), rng.integers(0, 256, 2)
            cv2.line(art, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), 40, 1, cv2.LINE_AA)
        y = art + 3.0 * pattern + rng.normal(0.0, 3.0, art.shape)
        y = y.astype(np.float32)
        blended = correlation(whiten(y.copy()), pattern)
        assert blended > 1.1 * correlation(blur_only(y.copy()), pattern)


def test_an_empty_registry_names_no_delivery(marked):
    _, img = marked
    det = detect_frame(img, KEY, candidates=np.array([], np.uint64))
    assert not det.found and det.payload is None
    assert det.p_mark <= 1e-6  # the mark is there; it belongs to no registered delivery
