"""Marks over time: mark the frames of a clip in order, and pool a clip's frames for one
verdict.

Every frame of a delivery carries the same mark at the same place (the tile starts at the
frame's top-left corner whatever the content does), so the mean of a clip's frames keeps
the whole mark while moving content, grain and codec noise average away. The pooled frame
is traced like a still, with the same calibrated statistic; looking at it after 1, 2, 4,
... frames and stopping at the first verdict is counted in the p-value (a union bound over
the looks). No I/O here: frames come in as arrays (see :mod:`watermark.clip` for files).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ._color import luma
from ._detect import Detection, detect_frame
from ._embed import EmbedResult, embed_frame

__all__ = [
    "DEFAULT_MAX_FRAMES",
    "SEEN_P",
    "ClipDetection",
    "FramePool",
    "look_schedule",
    "mark_frames",
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


# ----------------------------------------------------------------------------- marking


def _mark_one(
    frame: np.ndarray, key: bytes, payload: int, strength: float, estimate_margin: bool
) -> EmbedResult:
    return embed_frame(frame, key, payload, strength=strength, estimate_margin=estimate_margin)


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
        ``2 * workers`` frames are held at once, so memory does not grow with the clip.
    key : bytes
        Studio secret.
    payload : int
        Delivery id, 0 <= payload < 2**32; the same for every frame (a stable mark: no
        flicker, and the frames of a clip pool their evidence).
    strength : float
        Mark strength, in [0, 4].
    workers : int
        Threads marking frames in parallel (1: the calling thread). Marking is OpenCV and
        numpy work that releases the GIL, so threads use the cores without worker
        processes (no start-up cost, no copies, and no ``__main__`` guard needed).
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
                pending.append(
                    pool.submit(_mark_one, frame, key, payload, strength, n % margin_every == 0)
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


class FramePool:
    """Running sum of the luma of a clip's frames (float64, one frame's size)."""

    def __init__(self) -> None:
        self._sum: np.ndarray | None = None
        self.count = 0

    def add(self, frame: np.ndarray) -> None:
        """Add one frame (any image :func:`watermark.luma` takes), same size as the first."""
        y = luma(frame)
        if self._sum is None:
            self._sum = np.zeros(y.shape, np.float64)
        elif y.shape != self._sum.shape:
            raise ValueError(
                f"frame {self.count} is {y.shape[1]}x{y.shape[0]}, the clip's first frame "
                f"is {self._sum.shape[1]}x{self._sum.shape[0]}"
            )
        self._sum += y
        self.count += 1

    def mean(self) -> np.ndarray:
        """The pooled frame: mean luma, (H, W) float32 in [0, 1]."""
        if self._sum is None:
            raise ValueError("no frames pooled")
        return np.clip(self._sum * (1.0 / (255.0 * self.count)), 0.0, 1.0).astype(np.float32)


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
        As in :class:`watermark.Detection`, corrected for the looks as well.
    frames_used : int
        Frames pooled at the last look.
    looks : int
        Looks the p-values are corrected for (the schedule's length).
    detection : Detection
        The pooled frame's own detection at the last look (not corrected for the looks).
    """

    found: bool
    payload: int | None
    score: float
    p_value: float
    p_mark: float
    frames_used: int
    looks: int
    detection: Detection

    @property
    def n_tests(self) -> float:
        """Hypotheses the p-value is corrected for (geometries x deliveries x looks)."""
        return float(self.detection.n_tests) * self.looks


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
    pool = FramePool()
    detection: Detection | None = None
    for frame in frames:
        pool.add(frame)
        if pool.count in schedule:
            detection = _look(pool, key, candidates, p_threshold / looks)
            if detection.found or pool.count >= max_frames:
                break
    else:
        if pool.count == 0:
            raise ValueError("the clip has no frames")
        if detection is None or pool.count not in schedule:
            detection = _look(pool, key, candidates, p_threshold / looks)
    assert detection is not None
    return ClipDetection(
        detection.found,
        detection.payload,
        detection.score,
        min(1.0, looks * detection.p_value),
        min(1.0, looks * detection.p_mark),
        pool.count,
        looks,
        detection,
    )


def _look(
    pool: FramePool, key: bytes, candidates: np.ndarray | None, p_threshold: float
) -> Detection:
    return detect_frame(pool.mean(), key, candidates=candidates, p_threshold=p_threshold)


def seen_windows(
    frames: Iterable[np.ndarray],
    key: bytes,
    payload: int,
    *,
    window: int,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> list[tuple[int, int]]:
    """Frame ranges of a clip whose own pooled windows show one delivery's mark.

    The clip is cut into windows of `window` frames; each window's mean is traced against
    `payload` alone and counts as showing the mark when its p-value is at most
    :data:`SEEN_P`. Neighbouring windows that show it are merged.

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
        d = detect_frame(pool.mean(), key, candidates=candidates, p_threshold=SEEN_P)
        if d.found:
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
