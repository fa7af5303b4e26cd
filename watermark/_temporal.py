"""Marks over time: mark the frames of a clip in order, and pool a clip's frames for one
verdict.

Every frame of a delivery carries the same mark at the same place (the tile starts at the
frame's top-left corner whatever the content does), so the mean of a clip's frames keeps
the whole mark while moving content, grain and codec noise average away. The mean alone
wastes what a codec leaves: a re-encode wipes the mark off flat backgrounds and keeps it
where a frame is busy, under noise that follows the moving content. So each frame's
detail is also normalised by its own local energy before it is summed (each frame weighs
where it is quiet, not where an edge passes), and that pooled detail rides on the mean
(which keeps the picture's borders for the geometry). Neither pool is better everywhere (on
a near-black fade, where the mark is all there is, the plain mean reads it best), so both
are traced like stills, with the same calibrated statistic (each is a function of the leak
alone, so an unmarked clip pools to unmarked frames); looking at both after 1, 2, 4, ...
frames and stopping at the first verdict is counted in the p-value (a weighted union bound
over the looks and the two pools: the first frame alone holds half of the false-alarm
budget, see :func:`look_shares`). No I/O here: frames come in as arrays (see :mod:`watermark.clip`
for files).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from ._carrier import chip_level
from ._color import luma
from ._detect import Detection, detect_frame
from ._embed import EmbedResult, embed_frame
from ._sync import equalise_energy

__all__ = [
    "DEFAULT_MAX_FRAMES",
    "FIRST_LOOK_SHARE",
    "POOLS",
    "SEEN_P",
    "ClipDetection",
    "FramePool",
    "look_schedule",
    "look_shares",
    "mark_frames",
    "normalised_detail",
    "seen_windows",
    "trace_frames",
    "window_length",
]

#: Frames pooled at most by :func:`trace_frames` unless told otherwise.
DEFAULT_MAX_FRAMES = 4096
#: A window of a traced clip "shows the mark" when its own p-value for the verdict's
#: delivery is at most this (a description of where the evidence is, not a verdict).
SEEN_P = 1e-3
_MARGIN_EVERY = 24  # frames between two margin estimates while marking (one a second)
# Grey levels (0..255 scale) per unit of normalised detail added to the pooled mean: enough
# for the detail to outweigh what is left of the mean's own (measured on the video
# benchmark's clips: 10 and 30 read alike; 10 saturates less on bright and dark content).
_DETAIL_GAIN = 10.0
_DETAIL_CHIPS = 2.0  # the detail's scale, in chips of the frame's own size (see chip_level)
#: Pooled frames traced at each look of a clip (the mean, and the mean with its detail).
POOLS = 2
#: Share of a clip trace's false-alarm budget held by its first look (the first frame
#: alone). A re-encoded clip starts on an intra frame, the one frame a codec codes
#: without reference to others, and at a low quality it is often the only one that
#: keeps the mark: motion compensation drags it with the content, and the frames after
#: add more dilution than evidence. A union bound with unequal shares (summing to 1)
#: bounds the false-alarm probability as the equal one does.
FIRST_LOOK_SHARE = 0.5


# ----------------------------------------------------------------------------- marking


def _mark_one(
    frame: np.ndarray, key: bytes, payload: int, strength: float, estimate_margin: bool
) -> EmbedResult:
    # the size rule's chips on every frame: embed_frame's own choice, made on frames with
    # a margin only, would switch chip size within the clip
    shape = np.shape(frame)
    level = chip_level(shape) if len(shape) >= 2 else None  # a bad frame: embed_frame says why
    return embed_frame(
        frame, key, payload, strength=strength, estimate_margin=estimate_margin, level=level
    )


def mark_frames(
    frames: Iterable[np.ndarray],
    key: bytes,
    payload: int,
    *,
    strength: float = 1.0,
    workers: int = 1,
    margin_every: int = _MARGIN_EVERY,
) -> Iterator[EmbedResult]:
    """Mark every frame of a clip with one delivery id, in order.

    Parameters
    ----------
    frames : iterable of ndarray
        The frames, each as :func:`watermark.embed_frame` takes it ((H, W) luma or
        (H, W, 3[+1]) RGB(A); uint8, uint16 or float32 in [0, 1]). Consumed lazily: at most
        ``2 * workers`` frames are held at once, so memory does not grow with the clip. With
        more than one worker each frame is copied when it is read, so a producer may refill
        one buffer for every frame.
    key : bytes
        Studio secret.
    payload : int
        Delivery id, 0 <= payload < 2**32; the same for every frame (a stable mark: no
        flicker, and the frames of a clip pool their evidence). Every frame carries the
        chips of :func:`watermark._carrier.chip_level`.
    strength : float
        Mark strength, in [0, 4].
    workers : int
        Threads marking frames in parallel (1: the calling thread). Marking is OpenCV and
        numpy work that releases the GIL, so threads use the cores without worker
        processes (no start-up cost, no pickling, and no ``__main__`` guard needed).
    margin_every : int
        Frames between two :attr:`EmbedResult.margin` estimates (the first frame always
        has one; the others get NaN), >= 1.

    Yields
    ------
    EmbedResult
        One per frame, in input order.

    Raises
    ------
    TypeError, ValueError
        On a bad frame, key, payload or strength (raised when that frame is reached).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if margin_every < 1:
        raise ValueError(f"margin_every must be >= 1, got {margin_every}")
    if workers == 1:
        for n, frame in enumerate(frames):
            yield _mark_one(frame, key, payload, strength, n % margin_every == 0)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="leaktrace-mark") as pool:
        pending: deque[Future[EmbedResult]] = deque()
        try:
            for n, frame in enumerate(frames):
                # a copy: the next frames are read before this one is marked, and a decoder
                # loop may hand out one buffer refilled each time
                pending.append(
                    pool.submit(
                        _mark_one, np.array(frame), key, payload, strength, n % margin_every == 0
                    )
                )
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


# ----------------------------------------------------------------------------- tracing


def look_schedule(max_frames: int) -> tuple[int, ...]:
    """Numbers of pooled frames after which a clip is examined.

    Powers of two below `max_frames`, then `max_frames`; a clip that ends earlier is
    examined once more at its end, in place of the next look, so a trace never makes
    more looks than this schedule has entries.

    Examples
    --------
    >>> look_schedule(20)
    (1, 2, 4, 8, 16, 20)
    """
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    looks = [1 << k for k in range(max_frames.bit_length()) if (1 << k) < max_frames]
    return (*looks, max_frames)


def look_shares(looks: int) -> tuple[float, ...]:
    """Share of the false-alarm budget of each look of a schedule of `looks` (both pools
    together): :data:`FIRST_LOOK_SHARE` for the first, the rest split evenly.

    Examples
    --------
    >>> look_shares(1), look_shares(3)
    ((1.0,), (0.5, 0.25, 0.25))
    """
    if looks < 1:
        raise ValueError(f"looks must be >= 1, got {looks}")
    if looks == 1:
        return (1.0,)
    rest = (1.0 - FIRST_LOOK_SHARE) / (looks - 1)
    return (FIRST_LOOK_SHARE, *([rest] * (looks - 1)))


def normalised_detail(y: np.ndarray, sigma: float) -> np.ndarray:
    """A frame's detail divided by its local rms.

    ``r = y - G_s(y)``, then ``r / sqrt(G_s(r^2) + 0.25)`` clipped to +/-3 (the detector's
    own equalisation, :func:`watermark._sync.equalise_energy`, at a frame's scale): a busy
    region and a quiet one weigh the same, and an edge does not outweigh what surrounds it.

    Parameters
    ----------
    y : (H, W) float32 ndarray
        Luma, 0..255 scale.
    sigma : float
        Scale of the high-pass and of the energy window, in pixels, > 0.

    Returns
    -------
    (H, W) float32 ndarray, roughly unit variance where the frame has detail, 0 where it
    is flat.
    """
    r = y - _smooth(y, sigma)
    return equalise_energy(r, _smooth(r * r, sigma))


def _smooth(y: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of `sigma` px; wide ones at a reduced resolution (smooth output, a
    fraction of the cost: a 4K frame's sigma-32 blur takes 0.85 s at full resolution)."""
    step = max(1, int(sigma // 4))
    if step == 1:
        return cv2.GaussianBlur(y, (0, 0), sigma)
    h, w = y.shape
    small = cv2.resize(y, (-(-w // step), -(-h // step)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / step)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


class FramePool:
    """Running sums of a clip's frames: their luma and their normalised detail.

    Both are float64 arrays of one frame's size; the detail's scale is twice the chip size
    a delivery of the first frame's size carries (:func:`watermark._carrier.chip_level`).
    """

    def __init__(self) -> None:
        self._sum: np.ndarray | None = None
        self._detail: np.ndarray | None = None
        self._sigma = 0.0
        self.count = 0

    def add(self, frame: np.ndarray) -> None:
        """Add one frame (any image :func:`watermark.luma` takes), same size as the first."""
        y = luma(frame)
        if self._sum is None or self._detail is None:
            self._sum = np.zeros(y.shape, np.float64)
            self._detail = np.zeros(y.shape, np.float64)
            self._sigma = _DETAIL_CHIPS * 2.0 ** chip_level(y.shape)
        elif y.shape != self._sum.shape:
            raise ValueError(
                f"frame {self.count} is {y.shape[1]}x{y.shape[0]}, the clip's first frame "
                f"is {self._sum.shape[1]}x{self._sum.shape[0]}"
            )
        self._sum += y
        self._detail += normalised_detail(y, self._sigma)
        self.count += 1

    def mean(self) -> np.ndarray:
        """The mean luma, (H, W) float32 in [0, 1]."""
        if self._sum is None:
            raise ValueError("no frames pooled")
        return np.clip(self._sum * (1.0 / (255.0 * self.count)), 0.0, 1.0).astype(np.float32)

    def pooled(self) -> np.ndarray:
        """The mean luma plus the mean normalised detail, (H, W) float32 in [0, 1]."""
        if self._sum is None or self._detail is None:
            raise ValueError("no frames pooled")
        grey = (self._sum + _DETAIL_GAIN * self._detail) * (1.0 / (255.0 * self.count))
        return np.clip(grey, 0.0, 1.0).astype(np.float32)

    def frames(self) -> tuple[np.ndarray, np.ndarray]:
        """The :data:`POOLS` frames a clip is traced on: :meth:`mean` and :meth:`pooled`."""
        return self.mean(), self.pooled()


@dataclass(frozen=True, slots=True)
class ClipDetection:
    """Verdict of :func:`trace_frames` on a clip.

    Attributes
    ----------
    found : bool
        True when the pooled frame named a delivery at the threshold.
    payload : int or None
        The delivery id when found.
    score : float
        Detection statistic of the last look (z units).
    p_value, p_mark : float
        As in :class:`watermark.Detection`, corrected for the looks and the pools as well:
        divided by the last look's share of the budget per pool (``share / pools``).
    frames_used : int
        Frames pooled at the last look.
    looks : int
        Looks the p-values are corrected for (the schedule's length).
    detection : Detection
        The own detection of the pooled frame (of the two) with the smaller p-value at the
        last look (not corrected for the looks and pools).
    pools : int
        Pooled frames traced at each look (:meth:`FramePool.frames`), also counted.
    share : float
        The last look's share of the false-alarm budget (:func:`look_shares`), both
        pools together.
    """

    found: bool
    payload: int | None
    score: float
    p_value: float
    p_mark: float
    frames_used: int
    looks: int
    detection: Detection
    pools: int = POOLS
    share: float = 1.0

    @property
    def n_tests(self) -> float:
        """Hypotheses the p-value is corrected for: geometries x deliveries, times the
        pools over the last look's share (with equal shares: times looks x pools)."""
        return float(self.detection.n_tests) * self.pools / self.share


def trace_frames(
    frames: Iterable[np.ndarray],
    key: bytes,
    *,
    candidates: np.ndarray | None = None,
    p_threshold: float = 1e-6,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> ClipDetection:
    """Trace a clip by pooling its frames; stop at the first look that names a delivery.

    Parameters
    ----------
    frames : iterable of ndarray
        The clip's frames in order, all the same size (see :class:`FramePool`); consumed
        lazily, at most `max_frames` of them.
    key : bytes
        Studio secret.
    candidates : (N,) integer ndarray, optional
        Registered delivery ids (see :func:`watermark.detect_frame`).
    p_threshold : float
        Accusation threshold on the false-alarm probability of the whole trace, in (0, 1).
    max_frames : int
        Frames pooled at most, >= 1.

    Returns
    -------
    ClipDetection

    Raises
    ------
    ValueError
        No frames, frames of different sizes, or a bad argument.
    """
    if not 0.0 < p_threshold < 1.0:
        raise ValueError(f"p_threshold must be in (0, 1), got {p_threshold}")
    schedule = look_schedule(max_frames)
    looks = len(schedule)
    shares = look_shares(looks)
    made = 0  # looks made so far; a clip that ends early is looked at in the next one's place
    pool = FramePool()
    detection: Detection | None = None
    for frame in frames:
        pool.add(frame)
        if pool.count in schedule:
            detection = _look(pool, key, candidates, p_threshold * shares[made] / POOLS)
            made += 1
            if detection.found or pool.count >= max_frames:
                break
    else:
        if pool.count == 0:
            raise ValueError("the clip has no frames")
        if detection is None or pool.count not in schedule:
            detection = _look(pool, key, candidates, p_threshold * shares[made] / POOLS)
            made += 1
    assert detection is not None
    tests = POOLS / shares[made - 1]  # the last look's correction
    return ClipDetection(
        detection.found,
        detection.payload,
        detection.score,
        min(1.0, tests * detection.p_value),
        min(1.0, tests * detection.p_mark),
        pool.count,
        looks,
        detection,
        POOLS,
        shares[made - 1],
    )


def _look(
    pool: FramePool, key: bytes, candidates: np.ndarray | None, p_threshold: float
) -> Detection:
    """The detection of the two pooled frames with the smaller p-value (the other's p_mark
    kept when smaller: both are tested)."""
    plain, detail = (
        detect_frame(f, key, candidates=candidates, p_threshold=p_threshold) for f in pool.frames()
    )
    best = plain if plain.p_value <= detail.p_value else detail
    return dataclasses.replace(best, p_mark=min(plain.p_mark, detail.p_mark))


def seen_windows(
    frames: Iterable[np.ndarray],
    key: bytes,
    payload: int,
    *,
    window: int,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> list[tuple[int, int]]:
    """Frame ranges of a clip whose own pooled windows show one delivery's mark.

    The clip is cut into windows of `window` frames; each window's two pooled frames
    (:meth:`FramePool.frames`) are traced against `payload` alone, and the window counts as
    showing the mark when either is at p <= ``SEEN_P / POOLS`` (:data:`SEEN_P` for the
    pair). Neighbouring windows that show it are merged.

    Parameters
    ----------
    frames : iterable of ndarray
        The clip's frames in order, all the same size.
    key : bytes
        Studio secret.
    payload : int
        The delivery a verdict named.
    window : int
        Frames per window, >= 1.
    max_frames : int
        Frames read at most.

    Returns
    -------
    list of (int, int)
        ``(first, last)`` frame indices (inclusive), in order.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    candidates = np.array([payload], np.int64)
    ranges: list[tuple[int, int]] = []
    pool = FramePool()
    start = 0

    def close(end: int) -> None:
        if any(
            detect_frame(f, key, candidates=candidates, p_threshold=SEEN_P / POOLS).found
            for f in pool.frames()
        ):
            if ranges and ranges[-1][1] == start - 1:
                ranges[-1] = (ranges[-1][0], end)
            else:
                ranges.append((start, end))

    n = -1
    for n, frame in enumerate(itertools.islice(frames, max_frames)):
        pool.add(frame)
        if pool.count == window:
            close(n)
            pool, start = FramePool(), n + 1
    if pool.count:
        close(n)
    return ranges


def window_length(frames_total: int, frames_per_second: float, *, most: int = 32) -> int:
    """Frames per window for :func:`seen_windows`: at least a second, at most `most`
    windows over the clip."""
    per_second = max(1, round(frames_per_second)) if math.isfinite(frames_per_second) else 1
    return max(per_second, math.ceil(max(frames_total, 1) / most))
