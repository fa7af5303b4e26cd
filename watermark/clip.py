"""Clips: video files (PyAV) and image sequences. Find them, read their frames, write marked
copies.

The edge module for moving pictures. Video is decoded and encoded with PyAV (FFmpeg,
imported lazily); sequence frames go through
:mod:`watermark.media`. Marking streams: decode -> mark (worker threads) -> encode,
with a bounded number of frames in flight, so memory does not grow with the clip.

What a marked video keeps from its source: the container format, every stream in the same
order (audio, subtitle and data packets copied byte for byte; a QuickTime timecode track
is written anew by the muxer from the same timecode, after the other streams), the frame
count and every frame's time stamp, the frame rate, the pixel format where the encoder
takes it (else the closest: the same chroma subsampling, the nearest bit depth, and the
alpha, which is never dropped: a source whose alpha the codec written cannot carry is
refused), colour metadata (primaries, transfer, matrix, range), sample aspect ratio and
rotation. The marked video stream is re-encoded with the source's codec family at
visually lossless quality (see :data:`CODEC_FAMILIES`). Only the luma plane is marked, in
the frame's own YUV samples: no colour conversion round trip touches the picture. A
source whose decoded video falls short of what it declares (frame count, or the video
stream's own duration) is refused as truncated.

Every failure is a :class:`~watermark.errors.MediaError` whose one-line message starts
with the path. Outputs are written to a temporary file (or files) and renamed into place
only when complete.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ._embed import WEAK_MARGIN, EmbedResult
from ._temporal import mark_frames
from .errors import MediaError
from .media import (
    IMAGE_EXTENSIONS,
    discard_file,
    encode_image,
    publish_new_file,
    read_image,
    resolved_path,
    stage_file,
    staging_path,
    walk_folders,
)
from .metadata import ImageMetadata

__all__ = [
    "CODEC_FAMILIES",
    "ENCODER_PRESETS",
    "VIDEO_EXTENSIONS",
    "ClipFrame",
    "ClipInfo",
    "CodecFamily",
    "MarkReport",
    "MediaItem",
    "find_media",
    "iter_clip_frames",
    "mark_sequence",
    "mark_video",
    "probe_clip",
    "sequence_digest",
    "stage_marked_video",
    "video_digest",
]

#: Video file extensions picked up when a folder is walked (case-insensitive).
VIDEO_EXTENSIONS: frozenset[str] = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})
_MUXERS = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
    ".avi": "avi",
}
# A sequence frame: <stem><sep><digits>.<ext> with sep "." or "_" (shot_010.0001.png,
# plate_0001.tif). Frames sharing stem, separator, extension and padding form one sequence.
_SEQUENCE_FRAME = re.compile(r"^(?P<stem>.+?)(?P<sep>[._])(?P<number>\d+)(?P<ext>\.[^.]+)$")
_SEQUENCE_MIN_FRAMES = 2
_PROGRESS_EVERY = 8  # frames between two progress callbacks


@dataclass(frozen=True, slots=True)
class CodecFamily:
    """How a marked video stream of one codec family is re-encoded.

    Attributes
    ----------
    name : str
        Family name, FFmpeg's decoder name for it (``"h264"``, ``"hevc"``, ...).
    encoder : str
        FFmpeg encoder.
    crf : int or None
        Default constant-rate factor (None: the family has no crf, see `options`).
    preset : str or None
        Default speed preset (None: the family has none).
    options : dict
        Other encoder options.
    """

    name: str
    encoder: str
    crf: int | None
    preset: str | None
    options: dict[str, str] = field(default_factory=dict)

    def encoder_options(self, crf: int | None, preset: str | None) -> dict[str, str]:
        """FFmpeg options for this family with optional overrides."""
        opts = dict(self.options)
        c = self.crf if crf is None else crf
        p = self.preset if preset is None else preset
        if self.name == "vp9":
            opts.update({"crf": str(c), "b": "0"})
            if p is not None:
                opts["cpu-used"] = str(_VP9_SPEED.get(p, 5))
                opts["deadline"] = "realtime" if _VP9_SPEED.get(p, 5) >= 7 else "good"
        elif self.name == "prores":
            if c is not None:  # prores_ks quality scale, 1 (best) .. 31
                opts["qscale"] = str(c)
        elif self.name == "mjpeg":
            q = 2 if c is None else c
            opts.update({"qmin": str(q), "qmax": str(q)})
        else:
            opts["crf"] = str(c)
            if p is not None:
                opts["preset"] = p
        return opts


_VP9_SPEED = {
    "ultrafast": 8,
    "superfast": 8,
    "veryfast": 7,
    "faster": 6,
    "fast": 5,
    "medium": 4,
    "slow": 2,
    "slower": 1,
    "veryslow": 0,
}
#: Speed presets ``--preset`` takes (x264's names; mapped to libvpx-vp9's cpu-used).
ENCODER_PRESETS: tuple[str, ...] = tuple(_VP9_SPEED)

#: Codec families a marked video keeps, by FFmpeg decoder name. The crf defaults are
#: visually lossless for each encoder; presets are the fastest that keep 1080p at 24 fps
#: or more on two cores with the mark.
CODEC_FAMILIES: dict[str, CodecFamily] = {
    "h264": CodecFamily("h264", "libx264", 12, "ultrafast"),
    "hevc": CodecFamily("hevc", "libx265", 12, "ultrafast", {"x265-params": "log-level=error"}),
    "prores": CodecFamily("prores", "prores_ks", None, None, {"profile": "3"}),
    "vp9": CodecFamily("vp9", "libvpx-vp9", 12, "veryfast", {"row-mt": "1"}),
    # strict -1: FFmpeg's mjpeg encoder writes limited-range YUV only when told that
    # unofficial JPEG is fine; without it the source's range could not be kept
    "mjpeg": CodecFamily("mjpeg", "mjpeg", 2, None, {"strict": "-1"}),
}
# Planar formats whose first plane is the luma, with its bits per sample (the chroma
# planes pass through untouched).
_LUMA_PLANE_BITS: dict[str, int] = {
    **dict.fromkeys(
        (
            *("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"),
            *("yuv440p", "yuvj440p", "yuv411p", "yuv410p", "yuva420p", "yuva422p"),
            *("yuva444p", "gray", "nv12", "nv21", "nv16"),
        ),
        8,
    ),
    **dict.fromkeys(
        (
            *("yuv420p10le", "yuv422p10le", "yuv444p10le", "gray10le"),
            *("yuva420p10le", "yuva422p10le", "yuva444p10le"),
        ),
        10,
    ),
    **dict.fromkeys(
        (
            *("yuv420p12le", "yuv422p12le", "yuv444p12le", "gray12le"),
            *("yuva422p12le", "yuva444p12le"),
        ),
        12,
    ),
}
# The alpha formats each encoder really writes alpha in. Encoders list others whose alpha
# depends on how the library was built (libx265) or is refused when opened (libvpx-vp9
# beside 4:2:2 and 4:4:4), so only these are offered.
_ALPHA_FORMATS: dict[str, tuple[str, ...]] = {
    "prores_ks": ("yuva444p10le",),
    "libvpx-vp9": ("yuva420p",),
}
# How much of a declared duration the decoded video may fall short of, in frames: the
# last frame's own duration is not always counted alike by muxers and demuxers.
_DURATION_SLACK_FRAMES = 1.5
# Matroska's per-stream DURATION tag, "HH:MM:SS.nnnnnnnnn".
_MATROSKA_DURATION = re.compile(r"^(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$")


# ----------------------------------------------------------------------------- finding


@dataclass(frozen=True, slots=True)
class MediaItem:
    """One unit of work found in the inputs: a still, a video file or an image sequence.

    Attributes
    ----------
    kind : str
        ``"image"``, ``"video"`` or ``"sequence"``.
    path : Path
        The file; for a sequence its first frame.
    rel : Path
        Output path relative to the output folder (a sequence: its first frame's).
    frames : tuple of Path
        A sequence's frame files in frame order (empty otherwise).
    """

    kind: str
    path: Path
    rel: Path
    frames: tuple[Path, ...] = ()

    @property
    def name(self) -> str:
        """How to call it in messages: the file, or ``folder/stem.####.ext``."""
        if self.kind != "sequence":
            return str(self.path)
        return str(self.path.parent / _pattern_name(self.path.name))

    def output_frames(self, out_root: Path) -> tuple[Path, ...]:
        """Where a sequence's marked frames go (each frame keeps its name)."""
        folder = (out_root / self.rel).parent
        return tuple(folder / p.name for p in self.frames)


def _pattern_name(name: str) -> str:
    m = _SEQUENCE_FRAME.match(name)
    if m is None:
        return name
    return f"{m['stem']}{m['sep']}{'#' * len(m['number'])}{m['ext']}"


def find_media(
    inputs: Iterable[str | os.PathLike[str]],
    *,
    exclude: str | os.PathLike[str] | None = None,
    sequences: bool = True,
) -> list[MediaItem]:
    """Expand files and folders into stills, videos and image sequences.

    Parameters
    ----------
    inputs : iterable of path-like
        Files (taken as given: a video extension makes a video, anything else a still
        that fails later with its own error if it is not one) and folders (walked
        recursively, hidden entries skipped).
    exclude : path-like, optional
        A folder never walked into (the output folder).
    sequences : bool
        Group numbered image files of one folder (``stem.0001.png``, ``stem_0001.png``,
        at least two frames of one stem, separator, extension and padding) into one
        sequence; False: every image file is a still.

    Returns
    -------
    list of MediaItem
        In input order; each folder's items sorted by path; an item found twice once.
    """
    items: list[MediaItem] = []
    seen: set[Path] = set()
    for item in inputs:
        root = Path(item)
        if root.is_dir():
            found: list[MediaItem] = []
            for here, names in walk_folders(root, exclude=exclude):
                found.extend(_folder_items(root, here, names, sequences))
            found.sort(key=lambda m: m.rel.as_posix())
        elif root.suffix.lower() in VIDEO_EXTENSIONS:
            found = [MediaItem("video", root, Path(root.name))]
        else:
            found = [MediaItem("image", root, Path(root.name))]
        for m in found:
            key = resolved_path(m.path)
            if key not in seen:
                seen.add(key)
                items.append(m)
    return items


def _folder_items(root: Path, here: Path, names: list[str], sequences: bool) -> list[MediaItem]:
    """Stills, videos and sequences among one folder's file names (sorted)."""
    items: list[MediaItem] = []
    numbered: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
    for name in names:
        suffix = Path(name).suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            items.append(MediaItem("video", here / name, (here / name).relative_to(root)))
        elif suffix in IMAGE_EXTENSIONS:
            m = _SEQUENCE_FRAME.match(name) if sequences else None
            if m is None:
                items.append(MediaItem("image", here / name, (here / name).relative_to(root)))
            else:
                key = (m["stem"], m["sep"], m["ext"].lower())
                numbered.setdefault(key, []).append((m["number"], name))
    groups: dict[tuple[str, str, str, int], list[tuple[int, str]]] = {}
    for key, members in numbered.items():
        shown = {len(n) for n, _ in members if _zero_padded(n)}
        for number, name in members:
            groups.setdefault((*key, _padding(number, shown)), []).append((int(number), name))
    for members in groups.values():
        members.sort()
        if len(members) < _SEQUENCE_MIN_FRAMES:
            items.extend(
                MediaItem("image", here / n, (here / n).relative_to(root)) for _, n in members
            )
            continue
        frames = tuple(here / n for _, n in members)
        items.append(MediaItem("sequence", frames[0], frames[0].relative_to(root), frames))
    return items


def _zero_padded(number: str) -> bool:
    """Whether a frame number as written shows its padding: a leading zero (``0009``)."""
    return len(number) > 1 and number.startswith("0")


def _padding(number: str, shown: set[int]) -> int:
    """The zero-padded width a frame number is written to, among the numbers of its stem.

    A number with a leading zero shows its padding (``0009``: 4). One without shows only
    that the padding is at most its length: ``10`` follows ``9`` in an unpadded sequence,
    and ``10000`` follows ``9999`` in a 4-digit one, so grouping by the digit count alone
    would cut one sequence in two (two deliveries, the second one numbered from 10). Such a
    number joins the widest padding its stem's zero-padded numbers show that it fits; with
    none, it is unpadded (1).

    Parameters
    ----------
    number : str
        The frame number as written in the file name.
    shown : set of int
        The paddings the zero-padded numbers of the same stem, separator and extension
        in the folder show.

    Returns
    -------
    int
        The padding width, >= 1.
    """
    if _zero_padded(number):
        return len(number)
    return max((width for width in shown if width <= len(number)), default=1)


def check_sequence(item: MediaItem) -> None:
    """Raise MediaError when a sequence's frame numbers have a gap."""
    numbers = [int(_SEQUENCE_FRAME.match(p.name)["number"]) for p in item.frames]  # type: ignore[index]
    missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
    if missing:
        shown = ", ".join(str(n) for n in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise MediaError(
            f"{item.name}: frame(s) {shown} missing from the sequence "
            f"({numbers[0]}..{numbers[-1]}, {len(numbers)} present)"
        )


# ----------------------------------------------------------------------------- digests


def video_digest(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise MediaError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return h.hexdigest()


def sequence_digest(frame_digests: Iterable[str]) -> str:
    """Hex SHA-256 identifying a sequence: over its frames' SHA-256 digests, in order."""
    h = hashlib.sha256(b"leaktrace-sequence")
    for d in frame_digests:
        h.update(bytes.fromhex(d))
    return h.hexdigest()


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class ClipInfo:
    """What a clip is, read from its header (video) or first frame (sequence).

    Attributes
    ----------
    kind : str
        ``"video"`` or ``"sequence"``.
    width, height : int
        Frame size in pixels (as stored, before any display rotation).
    frames : int
        Frame count (the container's, or counted; 0 when unknown).
    fps : float
        Frames per second (the stream's average rate; 24 for a sequence, which has none).
    codec : str
        Video codec (FFmpeg decoder name), or the sequence frames' image format.
    pix_fmt : str
        FFmpeg pixel format, or ``"rgb"`` / ``"grey"`` with the bit depth for sequences.
    """

    kind: str
    width: int
    height: int
    frames: int
    fps: float
    codec: str
    pix_fmt: str


@dataclass(frozen=True, slots=True)
class ClipFrame:
    """One decoded frame: pixels and when it is shown.

    Attributes
    ----------
    index : int
        0-based position in the clip.
    time : float
        Presentation time in seconds (index / 24 for a sequence).
    pixels : ndarray
        (H, W) luma (video: the stored luma plane, uint8, or uint16 scaled to 16 bits) or
        (H, W[, C]) RGB(A) (sequence frames), as :func:`watermark.luma` takes them.
    """

    index: int
    time: float
    pixels: np.ndarray


_SEQUENCE_FPS = 24.0


def _av() -> Any:
    try:
        import av
    except ImportError as exc:  # pragma: no cover - the video extra is a core dependency
        raise MediaError(f"video needs PyAV: pip install av ({exc})") from None
    return av


def _open_video(path: Path) -> tuple[Any, Any]:
    """The input container and its marked video stream (the first that is not cover art)."""
    av = _av()
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file")
    try:
        container = av.open(str(path), metadata_errors="replace")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise MediaError(
            f"{path}: not a readable video file, or truncated ({_reason(exc)})"
        ) from None
    streams = [
        s
        for s in container.streams.video
        if not (s.disposition & av.stream.Disposition.attached_pic)
    ]
    if not streams:
        container.close()
        raise MediaError(f"{path}: no video stream")
    stream = streams[0]
    if stream.codec_context is None or stream.codec_context.width <= 0:
        name = stream.codec_context.name if stream.codec_context else "unknown"
        container.close()  # after reading the stream: PyAV 18.1.1 refuses it once closed
        raise MediaError(f"{path}: unsupported video codec ({name})")
    stream.thread_type = "AUTO"
    return container, stream


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).splitlines()[0] if text else type(exc).__name__


def probe_clip(item: MediaItem) -> ClipInfo:
    """Read a clip's header (video) or first frame (sequence) without decoding it all.

    Raises
    ------
    MediaError
        Not a readable video, no video stream, unsupported codec, or (sequence) a gap or
        an unreadable first frame.
    """
    if item.kind == "sequence":
        check_sequence(item)
        first = read_image(item.frames[0])
        colour = "grey" if first.pixels.ndim == 2 else "rgb"
        return ClipInfo(
            "sequence",
            first.shape[1],
            first.shape[0],
            len(item.frames),
            _SEQUENCE_FPS,
            first.format,
            f"{colour}{first.bit_depth}",
        )
    container, stream = _open_video(item.path)
    try:
        cc = stream.codec_context
        return ClipInfo(
            "video",
            int(cc.width),
            int(cc.height),
            int(stream.frames or 0) or _estimated_frames(container, stream),
            _fps(stream),
            str(cc.name),
            str(cc.format.name if cc.format else "unknown"),
        )
    finally:
        container.close()


def _fps(stream: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else _SEQUENCE_FPS


def _estimated_frames(container: Any, stream: Any) -> int:
    if stream.duration and stream.time_base:
        return max(0, round(float(stream.duration * stream.time_base) * _fps(stream)))
    if container.duration:
        return max(0, round(container.duration / 1_000_000 * _fps(stream)))
    return 0


def iter_clip_frames(item: MediaItem, *, max_frames: int | None = None) -> Iterator[ClipFrame]:
    """Decode a clip's frames in display order, one at a time.

    Parameters
    ----------
    item : MediaItem
        A video or a sequence.
    max_frames : int, optional
        Stop after this many frames.

    Yields
    ------
    ClipFrame

    Raises
    ------
    MediaError
        Unreadable, corrupt or truncated data, a gap in a sequence, a frame whose size
        differs from the first frame's, or no frame at all.
    """
    limit = math.inf if max_frames is None else max_frames
    if item.kind == "sequence":
        check_sequence(item)
        shape = None
        for n, path in enumerate(item.frames):
            if n >= limit:
                return
            pixels = read_image(path).pixels
            shape = _same_size(item, path, pixels.shape[:2], shape)
            yield ClipFrame(n, n / _SEQUENCE_FPS, pixels)
        return
    container, stream = _open_video(item.path)
    try:
        n = 0
        for frame in _decode(container, stream, item.path):
            if n >= limit:
                return
            yield ClipFrame(n, _frame_time(frame, n, stream), _luma_plane(_plane_ready(frame))[0])
            n += 1
        if n == 0:
            raise MediaError(f"{item.path}: no decodable video frame")
    finally:
        container.close()


def _same_size(
    item: MediaItem, path: Path, shape: tuple[int, ...], first: tuple[int, ...] | None
) -> tuple[int, ...]:
    if first is not None and shape != first:
        raise MediaError(
            f"{path}: frame is {shape[1]}x{shape[0]}, the sequence {item.name} is "
            f"{first[1]}x{first[0]}"
        )
    return shape


def _frame_time(frame: Any, index: int, stream: Any) -> float:
    if frame.pts is not None and frame.time_base:
        start = stream.start_time or 0
        return float((frame.pts - start) * frame.time_base)
    return index / _fps(stream)


def _decode(
    container: Any,
    stream: Any,
    path: Path,
    on_packet: Callable[[Any], None] | None = None,
    on_video_packet: Callable[[Any], None] | None = None,
) -> Iterator[Any]:
    """Frames of `stream` in display order; other packets go to `on_packet` (muxing).

    Every packet that holds data is passed on, whatever its time stamps (Matroska leaves
    the dts of some unset); only the empty packets PyAV yields to flush each stream at
    the end are not. `on_video_packet` sees each of `stream`'s own packets before it is
    decoded. Errors raised by the callbacks are theirs to word: only FFmpeg's errors while
    demuxing and decoding are blamed on the source.
    """
    av = _av()
    decoder = _video_decoder(stream, path)
    streams = [stream] if on_packet is None else list(container.streams)
    try:
        for packet in container.demux(streams):
            if packet.stream.index != stream.index:
                if packet.size and on_packet is not None:
                    on_packet(packet)
                continue
            if packet.size and on_video_packet is not None:
                on_video_packet(packet)
            yield from decoder.decode(packet)
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: corrupt or truncated video data ({_reason(exc)})") from None


def _has_alpha_tag(stream: Any) -> bool:
    """True when a VP8/VP9 stream says it carries alpha (Matroska's AlphaMode)."""
    return any(k.lower() == "alpha_mode" and v == "1" for k, v in stream.metadata.items())


def _vp9_alpha(stream: Any) -> bool:
    """True when the stream is VP9 with alpha, which only libvpx-vp9 decodes (FFmpeg's
    own vp9 decoder ignores the alpha it carries beside the picture)."""
    return stream.codec_context.name == "vp9" and _has_alpha_tag(stream)


def _video_decoder(stream: Any, path: Path) -> Any:
    """The codec context that decodes `stream`: its own, or libvpx-vp9 for VP9 with
    alpha (so that the alpha is decoded too)."""
    if not _vp9_alpha(stream):
        return stream.codec_context
    av = _av()
    if stream.codec_context.format is None or stream.codec_context.format.name != "yuv420p":
        # libvpx decodes alpha beside 8-bit 4:2:0 pictures only
        raise MediaError(
            f"{path}: its alpha channel would be lost: VP9 alpha is only read beside 8-bit "
            "4:2:0 video"
        )
    try:
        decoder = av.CodecContext.create("libvpx-vp9", "r")
    except (av.FFmpegError, ValueError) as exc:
        raise MediaError(
            f"{path}: its alpha channel would be lost: this FFmpeg has no libvpx-vp9 decoder "
            f"({_reason(exc)})"
        ) from None
    decoder.thread_type = "AUTO"
    return decoder


def _source_format(stream: Any) -> str:
    """The pixel format the marked stream's frames are decoded to."""
    cc = stream.codec_context
    name = cc.format.name if cc.format else "yuv420p"
    return "yuva420p" if _vp9_alpha(stream) else name


def _plane_ready(frame: Any) -> Any:
    """The frame in a pixel format whose first plane is its luma (most already are)."""
    if frame.format.name in _LUMA_PLANE_BITS:
        return frame
    return frame.reformat(format="yuv444p10le" if _deep(frame) else "yuv444p")


def _deep(frame: Any) -> bool:
    return any(c.bits > 8 for c in frame.format.components)


def _luma_plane(frame: Any) -> tuple[np.ndarray, int]:
    """A copy of the frame's luma plane, uint8, or uint16 scaled to 16 bits; its bits."""
    bits = _LUMA_PLANE_BITS[frame.format.name]
    plane = frame.planes[0]
    dtype = np.uint8 if bits == 8 else np.dtype("<u2")
    rows = np.frombuffer(memoryview(plane), dtype).reshape(plane.height, -1)
    y = np.array(rows[:, : plane.width])
    if bits > 8:
        y = (y.astype(np.uint16) << np.uint16(16 - bits)).astype(np.uint16)
    return y, bits


def _write_luma(frame: Any, y: np.ndarray, bits: int) -> None:
    """Write a marked luma plane back into the frame's own buffer."""
    plane = frame.planes[0]
    dtype = np.uint8 if bits == 8 else np.dtype("<u2")
    rows = np.frombuffer(memoryview(plane), dtype).reshape(plane.height, -1)
    if bits > 8:
        y = ((y.astype(np.uint32) + (1 << (15 - bits))) >> (16 - bits)).astype(np.uint16)
    rows[:, : plane.width] = y


# ----------------------------------------------------------------------------- marking


@dataclass(frozen=True, slots=True)
class MarkReport:
    """What marking a clip did.

    Attributes
    ----------
    frames : int
        Frames marked (all the clip's).
    psnr_y : float
        Mean over frames of the mark's luma PSNR, in dB, before the output is encoded.
    margin : float
        Smallest margin of the frames sampled (one a second, see
        :func:`watermark._temporal.mark_frames`).
    codec : str
        Codec family written (video) or image format (sequence).
    seconds : float
        Duration, in seconds (frames / fps for a sequence).
    """

    frames: int
    psnr_y: float
    margin: float
    codec: str
    seconds: float

    @property
    def weak(self) -> bool:
        """True when sampled frames are too small, flat or close to white or black to be
        traced one by one."""
        return self.margin < WEAK_MARGIN


class _Tally:
    """Running PSNR mean and smallest sampled margin; what the decoded video covers."""

    def __init__(self) -> None:
        self.frames = 0
        self.psnr_sum = 0.0
        self.margin = math.inf
        self.first_time: float | None = None  # seconds, the first decoded frame's
        self.last_time: float | None = None  # seconds, the latest decoded frame's
        self.last_end = 0.0  # seconds, the latest end of a decoded frame with a duration
        self.first_packet: float | None = None  # seconds, the earliest packet's pts
        self.discarded = 0  # packets the container says are not shown (edit lists)

    def see_frame(self, frame: Any) -> None:
        """Note a decoded frame's presentation time."""
        if frame.time is None:
            return
        t = float(frame.time)
        if self.first_time is None:
            self.first_time = t
        self.last_time = t if self.last_time is None else max(self.last_time, t)
        if frame.duration and frame.time_base:  # a frame held longer (variable frame rate)
            self.last_end = max(self.last_end, t + float(frame.duration * frame.time_base))

    def see_packet(self, packet: Any) -> None:
        """Note one of the marked stream's packets, before it is decoded."""
        if packet.is_discard:  # pre-roll an edit list hides: decoded, never shown
            self.discarded += 1
            return
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is not None and packet.time_base:
            t = float(ts * packet.time_base)
            self.first_packet = t if self.first_packet is None else min(self.first_packet, t)

    def add(self, r: EmbedResult) -> None:
        self.frames += 1
        self.psnr_sum += r.psnr_y if math.isfinite(r.psnr_y) else 99.0
        if math.isfinite(r.margin):
            self.margin = min(self.margin, r.margin)

    def report(self, codec: str, seconds: float) -> MarkReport:
        psnr = self.psnr_sum / self.frames if self.frames else math.inf
        margin = 0.0 if not math.isfinite(self.margin) else self.margin
        return MarkReport(self.frames, psnr, margin, codec, seconds)


def _family_for(
    path: Path, source_codec: str, codec: str | None, preset: str | None = None
) -> CodecFamily:
    if preset is not None and preset not in _VP9_SPEED:
        raise MediaError(f"{path}: --preset {preset} is not one of {', '.join(_VP9_SPEED)}")
    name = source_codec if codec is None else codec
    family = CODEC_FAMILIES.get(name)
    if family is None:
        supported = ", ".join(CODEC_FAMILIES)
        if codec is not None:
            raise MediaError(f"{path}: --codec {codec} is not one of {supported}")
        raise MediaError(
            f"{path}: unsupported video codec {source_codec} (marking re-encodes {supported}; "
            "--codec NAME writes one of them instead)"
        )
    return family


def mark_video(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    key: bytes,
    payload: int,
    *,
    strength: float = 1.0,
    codec: str | None = None,
    crf: int | None = None,
    preset: str | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> MarkReport:
    """Mark every frame of a video file with one delivery and write the marked copy.

    The marked copy is written atomically (a hidden temporary file in `dst`'s folder,
    renamed when complete; nothing is left behind on failure). The parameters, the
    result and the errors are those of :func:`stage_marked_video`, which this wraps.

    Returns
    -------
    MarkReport
    """
    report, tmp = stage_marked_video(
        src,
        dst,
        key,
        payload,
        strength=strength,
        codec=codec,
        crf=crf,
        preset=preset,
        workers=workers,
        progress=progress,
    )
    if not publish_new_file(tmp, Path(dst)):  # never over what appeared there meanwhile
        raise MediaError(f"{dst}: already exists; not overwritten")
    return report


def stage_marked_video(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    key: bytes,
    payload: int,
    *,
    strength: float = 1.0,
    codec: str | None = None,
    crf: int | None = None,
    preset: str | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[MarkReport, Path]:
    """Mark every frame of a video file with one delivery; stage the marked copy.

    As :func:`mark_video`, but the marked copy is left in a hidden temporary file beside
    `dst` (fsynced) for the caller to publish (:func:`watermark.media.publish_new_file`) or
    discard; on failure nothing is left.

    Parameters
    ----------
    src : path-like
        The source video; never modified.
    dst : path-like
        The marked copy, written atomically (a hidden temporary file in its folder,
        renamed when complete; nothing is left behind on failure). Its extension picks the
        container (``.mp4``, ``.mov``, ``.mkv``, ``.webm``, ``.avi``); it must not exist.
    key : bytes
        Studio secret.
    payload : int
        Delivery id.
    strength : float
        Mark strength.
    codec : str, optional
        Codec family to write (a key of :data:`CODEC_FAMILIES`; default: the source's).
    crf : int, optional
        Quality override (libx264/libx265/libvpx-vp9 crf; prores_ks qscale; mjpeg q).
    preset : str, optional
        Encoder speed preset override (x264 names; mapped to libvpx-vp9's cpu-used).
    workers : int
        Threads marking frames (decoding and encoding run beside them).
    progress : callable, optional
        ``progress(frames_done, frames_total)`` every few frames (total 0 when unknown).

    Returns
    -------
    MarkReport, Path
        The report and the staged file.

    Raises
    ------
    MediaError
        Unreadable, truncated or corrupt source, no video stream, unsupported codec or
        container, alpha the codec written cannot keep, or a write failure (named by
        `dst`, never blamed on the source).
    """
    src, dst = Path(src), Path(dst)
    muxer = _MUXERS.get(dst.suffix.lower())
    if muxer is None:
        raise MediaError(f"{dst}: unknown video extension (use one of {', '.join(_MUXERS)})")
    if dst.exists():
        raise MediaError(f"{dst}: already exists")
    av = _av()
    inp, vin = _open_video(src)
    tmp = staging_path(dst)
    try:
        family = _family_for(src, str(vin.codec_context.name), codec, preset)
        total = int(vin.frames or 0) or _estimated_frames(inp, vin)
        try:
            out = av.open(str(tmp), "w", format=muxer)
        except (av.FFmpegError, OSError) as exc:
            raise MediaError(f"{dst}: cannot write ({_reason(exc)})") from None
        try:
            tally = _mark_streams(
                inp,
                vin,
                out,
                family,
                key,
                payload,
                strength,
                crf,
                preset,
                workers,
                progress,
                total,
                src,
                dst,
            )
        finally:
            try:
                out.close()
            except av.FFmpegError as exc:
                raise MediaError(f"{dst}: cannot finish writing ({_reason(exc)})") from None
        seconds = _duration(inp, vin, tally.frames)
        # the stream's fields are read while its container is open (PyAV 18.1.1 refuses
        # them after close)
        declared = _Declared.of(vin, tally)
    except BaseException:
        discard_file(tmp)
        raise
    finally:
        inp.close()
    try:
        _check_complete(src, declared, tally)
    except MediaError:
        discard_file(tmp)
        raise
    _fsync(tmp)
    return tally.report(family.name, seconds), tmp


@dataclass(frozen=True, slots=True)
class _Declared:
    """What a source's marked stream says it holds, to check the decoded video against.

    Attributes
    ----------
    frames : int
        Frames it presents (the container's count less the packets an edit list hides;
        0 when unknown, as in Matroska).
    start : float
        Seconds: where its presentation starts.
    end : float or None
        Seconds: where it ends (its start plus its own duration, or Matroska's DURATION
        tag; never the container's, which is the longest stream's).
    fps : float
        Frame rate, for the slack allowed at the end.
    """

    frames: int
    start: float
    end: float | None
    fps: float

    @classmethod
    def of(cls, vin: Any, tally: _Tally) -> _Declared:
        """Read it off the stream (while its container is open) and what demuxing saw."""
        tb = vin.time_base
        start = float(vin.start_time * tb) if vin.start_time is not None and tb else None
        if start is None:
            start = tally.first_packet if tally.first_packet is not None else 0.0
        end = None
        if vin.duration and tb:
            end = start + float(vin.duration * tb)
        else:
            tag = next((v for k, v in vin.metadata.items() if k.upper() == "DURATION"), None)
            m = _MATROSKA_DURATION.match(tag.strip()) if tag else None
            if m is not None:  # Matroska writes the track's end time
                end = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
        frames = max(0, int(vin.frames or 0) - tally.discarded)
        return cls(frames, start, end, _fps(vin))


def _check_complete(src: Path, declared: _Declared, tally: _Tally) -> None:
    """Raise MediaError when the decoded video falls short of what the source declares.

    The frames decoded against the frames it presents, where the container counts them
    (AVI, MP4, MOV; an MP4 edit list's hidden pre-roll is not counted). Where it does not
    (Matroska, WebM), the end of the last decoded frame (its own duration when it has
    one, else a frame at the average rate) against the stream's declared end (the video
    stream's own, so a complete file whose audio runs longer passes), with 1.5 frames of
    slack.
    """
    if tally.frames == 0:
        raise MediaError(f"{src}: no decodable video frame")
    frame = 1.0 / declared.fps
    end = None if tally.last_time is None else max(tally.last_time + frame, tally.last_end)
    short_frames = declared.frames > 0 and tally.frames < declared.frames
    # the time check stands in for a frame count where the container keeps none
    short_time = (
        declared.frames == 0
        and declared.end is not None
        and end is not None
        and end < declared.end - _DURATION_SLACK_FRAMES * frame
    )
    if not (short_frames or short_time):
        return
    if short_frames:
        counted, span = f"{tally.frames} of the {declared.frames} frames it declares", ""
    else:
        counted = f"{tally.frames} frames"
        span = f", up to {end:.2f} of the {declared.end:.2f} s it declares"
    # frames missing at the start: the first decoded frame comes later than the first
    # packet's time stamp (not zero: an H.264 AVI starts a frame in)
    origin = tally.first_packet if tally.first_packet is not None else declared.start
    lead = 0.0 if tally.first_time is None else tally.first_time - origin
    if lead > 0.5 * frame:
        raise MediaError(
            f"{src}: its first {lead:.2f} s cannot be decoded: the video starts without a "
            f"key frame ({counted} decode{span}), as a stream-copy cut between key frames "
            "does; cut it at a key frame or re-encode it"
        )
    raise MediaError(f"{src}: truncated or corrupt: {counted} could be decoded{span}")


def _duration(inp: Any, vin: Any, frames: int) -> float:
    if vin.duration and vin.time_base:
        return float(vin.duration * vin.time_base)
    if inp.duration:
        return inp.duration / 1_000_000
    return frames / _fps(vin)


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mark_streams(
    inp: Any,
    vin: Any,
    out: Any,
    family: CodecFamily,
    key: bytes,
    payload: int,
    strength: float,
    crf: int | None,
    preset: str | None,
    workers: int,
    progress: Callable[[int, int], None] | None,
    total: int,
    src: Path,
    dst: Path,
) -> _Tally:
    av = _av()
    # every stream in the source's order: the marked one re-encoded, the others copied
    copies: dict[int, Any] = {}
    vout = None
    timecode = _timecode(inp, vin)
    for s in inp.streams:
        if s.index == vin.index:
            vout = _encoder_stream(out, vin, family, crf, preset, src, dst)
            if timecode is not None:
                vout.metadata["timecode"] = timecode
        elif _is_timecode_track(s):
            # QuickTime's tmcd track cannot be copied (the mov muxer fails to finish the
            # file); the muxer writes its own from the marked stream's timecode, as
            # ffmpeg does
            continue
        else:
            try:
                copies[s.index] = out.add_stream_from_template(s)
            except (av.FFmpegError, ValueError) as exc:
                raise MediaError(
                    f"{dst}: cannot carry the source's {s.type} stream {s.index} "
                    f"({s.codec_context.name if s.codec_context else s.type}) in this container "
                    f"({_reason(exc)})"
                ) from None
            copies[s.index].metadata.update(s.metadata)
    out.metadata.update(inp.metadata)
    assert vout is not None

    def copy_packet(packet: Any) -> None:
        if packet.stream.index not in copies:
            return  # a stream not carried over (a timecode track)
        packet.stream = copies[packet.stream.index]
        try:
            out.mux(packet)
        except av.FFmpegError as exc:
            # the output's failure (the first packet also opens the encoder and writes
            # the header), never the source's
            raise MediaError(f"{dst}: cannot write ({_reason(exc)})") from None

    held: deque[tuple[Any, int]] = deque()
    last_pts = [None]
    # AVI stores no time stamps: each chunk is the next frame in decode order, and a
    # reader guesses presentation times from the chunk index. So the marked frames are
    # numbered one per frame from the source's start, which puts chunk k where the
    # source had it (a pts left as decoded would leave empty chunks before the first
    # frame, and an H.264 AVI's guessed B-frame pts are not in display order).
    avi_base = None
    if out.format.name == "avi":
        start = vin.start_time * vin.time_base if vin.start_time and vin.time_base else 0
        avi_base = max(0, round(start / vout.time_base))

    def planes() -> Iterator[np.ndarray]:
        for frame in _decode(inp, vin, src, copy_packet, tally.see_packet):
            tally.see_frame(frame)
            frame = _plane_ready(frame)
            frame.make_writable()
            y, bits = _luma_plane(frame)
            held.append((frame, bits))
            yield y

    tally = _Tally()
    try:
        for result in mark_frames(planes(), key, payload, strength=strength, workers=workers):
            frame, bits = held.popleft()
            _write_luma(frame, result.image, bits)
            tally.add(result)
            frame.pict_type = av.video.frame.PictureType.NONE  # the encoder picks key frames
            if avi_base is not None:
                frame.pts, frame.time_base = avi_base + tally.frames - 1, vout.time_base
            elif frame.pts is None or (last_pts[0] is not None and frame.pts <= last_pts[0]):
                frame.pts = 0 if last_pts[0] is None else last_pts[0] + 1
            last_pts[0] = frame.pts
            if tally.frames == 1:
                _copy_frame_side(frame, vout)
            for packet in vout.encode(frame):
                out.mux(packet)
            if progress is not None and tally.frames % _PROGRESS_EVERY == 0:
                progress(tally.frames, max(total, tally.frames))
        for packet in vout.encode(None):
            out.mux(packet)
    except av.FFmpegError as exc:
        raise MediaError(f"{dst}: cannot encode ({_reason(exc)})") from None
    if progress is not None:
        progress(tally.frames, tally.frames)
    return tally


def _timecode(inp: Any, vin: Any) -> str | None:
    """The source's start timecode: the marked stream's or a timecode track's."""
    tracks = [s.metadata for s in inp.streams if _is_timecode_track(s)]
    for tags in (vin.metadata, *tracks):
        value = next((v for k, v in tags.items() if k.lower() == "timecode"), None)
        if value:
            return str(value)
    return None


def _is_timecode_track(stream: Any) -> bool:
    """True for a QuickTime timecode (tmcd) track: a data stream FFmpeg tags with it."""
    return stream.type == "data" and any(k.lower() == "timecode" for k in stream.metadata)


def _encoder_stream(
    out: Any,
    vin: Any,
    family: CodecFamily,
    crf: int | None,
    preset: str | None,
    src: Path,
    dst: Path,
) -> Any:
    """The output's marked video stream: `family`'s encoder set up like the source."""
    av = _av()
    cin = vin.codec_context
    rate = vin.average_rate or vin.guessed_rate or Fraction(24)
    writes_alpha = _ALPHA_FORMATS.get(family.encoder, ())
    formats = [
        f.name
        for f in (av.codec.Codec(family.encoder, "w").video_formats or [])
        if f.name in writes_alpha or not _alpha(f.name)
    ]
    source_fmt = _source_format(vin)
    pix_fmt = _pixel_format(source_fmt, formats)
    if _alpha(source_fmt) and not _alpha(pix_fmt):
        raise MediaError(
            f"{src}: its alpha channel would be lost: {family.encoder} cannot write "
            f"{source_fmt} (--codec {' or '.join(_alpha_families())} keeps it)"
        )
    options = family.encoder_options(crf, preset)
    if family.name == "prores" and av.VideoFormat(pix_fmt).chroma_width(64) == 64:
        # 4:4:4 (and alpha) is ProRes 4444's; XQ when the source is XQ
        options["profile"] = "5" if str(cin.profile or "").upper() == "XQ" else "4"
    try:
        vout = out.add_stream(family.encoder, rate=rate, options=options)
    except (av.FFmpegError, ValueError) as exc:
        raise MediaError(f"{dst}: cannot write {family.name} video ({_reason(exc)})") from None
    cc = vout.codec_context
    cc.width, cc.height = cin.width, cin.height
    cc.pix_fmt = pix_fmt
    if out.format.name == "avi":
        # one chunk per frame: AVI's time base is the frame duration
        cc.time_base = vout.time_base = 1 / Fraction(rate)
    else:
        cc.time_base = vin.time_base
        vout.time_base = vin.time_base
    for attr in ("color_range", "color_primaries", "color_trc", "colorspace"):
        value = getattr(cin, attr, None)
        if value is not None:
            setattr(cc, attr, value)
    if vin.sample_aspect_ratio:
        cc.sample_aspect_ratio = vin.sample_aspect_ratio
    if family.name == "hevc" and out.format.name in ("mp4", "mov"):
        cc.codec_tag = "hvc1"  # what Apple players need
    vout.metadata.update(vin.metadata)
    if family.name == "vp9" and _alpha(pix_fmt):
        vout.metadata["alpha_mode"] = "1"  # Matroska's AlphaMode: readers look for it
    return vout


def _alpha(pix_fmt: str) -> bool:
    """True when the pixel format has an alpha plane."""
    return any(c.is_alpha for c in _av().VideoFormat(pix_fmt).components)


def _alpha_families() -> list[str]:
    """Families whose encoder keeps alpha."""
    return [name for name, f in CODEC_FAMILIES.items() if f.encoder in _ALPHA_FORMATS]


def _pixel_format(source: str, formats: list[str]) -> str:
    """The encoder's pixel format closest to the source's.

    Nothing lost comes first (alpha, colour, chroma resolution, bit depth), then no
    range conversion (yuvj formats are full range), then nothing added (the closest
    depth above, the same chroma subsampling, no alpha the source lacks), then planar
    over semi-planar; ties go to the encoder's own order.
    """
    if source in formats or not formats:
        return source if source in formats else "yuv420p"
    av = _av()

    def traits(name: str) -> tuple[str, int, int, int, bool, bool]:
        f = av.VideoFormat(name)
        colour = [c for c in f.components if not c.is_alpha]
        kind = "rgb" if f.is_rgb else "grey" if len(colour) == 1 else "yuv"
        # chroma samples across and down per 64 pixels (64: none subsampled)
        cw, ch = {"rgb": (64, 64), "grey": (0, 0)}.get(
            kind, (f.chroma_width(64), f.chroma_height(64))
        )
        planar = len({c.plane for c in f.components}) == len(f.components)  # not nv12
        return kind, cw, ch, max(c.bits for c in colour), _alpha(name), planar

    kind, cw, ch, bits, alpha, _ = traits(source)

    def cost(name: str) -> tuple[int, ...]:
        k, w, h, b, a, planar = traits(name)
        return (
            int(alpha and not a),
            int(kind != k and not (kind == "grey" and k == "yuv")),
            int(w < cw) + int(h < ch),
            max(0, bits - b),
            # a yuvj format is full range: the encoder would convert the samples to it
            int(source.startswith("yuvj") != name.startswith("yuvj")),
            max(0, b - bits),
            int(w > cw) + int(h > ch),
            int(a and not alpha),
            int(kind != k),
            int(not planar),
        )

    return min(formats, key=cost)


def _copy_frame_side(frame: Any, vout: Any) -> None:
    """Display rotation of the source (read off its first frame) onto the output stream."""
    rotation = getattr(frame, "rotation", 0) or 0
    if rotation:
        vout.set_display_rotation(rotation)


def mark_sequence(
    item: MediaItem,
    out_frames: tuple[Path, ...],
    key: bytes,
    payload: int,
    *,
    strength: float = 1.0,
    workers: int = 1,
    jpeg_quality: int = 95,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[MarkReport, list[Path], str]:
    """Mark every frame of an image sequence; stage the marked frames, publish nothing.

    Each marked frame is written to a hidden temporary file beside its destination, in
    the frame's format and bit depth. On any failure (an unreadable frame, a gap, a frame
    of another size) every staged file is removed before the error propagates.

    Returns
    -------
    MarkReport, list of Path, str
        The report, the staged files (in frame order; publish each to its
        `out_frames` entry with :func:`watermark.media.publish_new_file`), and the
        sequence's digest (:func:`sequence_digest` over its frame files).
    """
    check_sequence(item)
    staged: list[Path] = []
    digests: list[str] = []
    formats: list[tuple[str, ImageMetadata, tuple[int, int] | None]] = []

    def frames() -> Iterator[np.ndarray]:
        shape = None
        for path in item.frames:
            loaded = read_image(path, markable=True)
            shape = _same_size(item, path, loaded.shape, shape)
            digests.append(loaded.sha256)
            formats.append((loaded.format, loaded.metadata, loaded.jpeg_sampling))
            yield loaded.pixels

    tally = _Tally()
    try:
        for n, result in enumerate(
            mark_frames(frames(), key, payload, strength=strength, workers=workers)
        ):
            fmt, metadata, sampling = formats[n]
            data = encode_image(
                result.image,
                format=fmt,
                jpeg_quality=jpeg_quality,
                metadata=metadata,
                jpeg_sampling=sampling,
            )
            staged.append(stage_file(out_frames[n], data))
            tally.add(result)
            if progress is not None:
                progress(n + 1, len(item.frames))
    except BaseException:
        for tmp in staged:
            discard_file(tmp)
        raise
    fmt = formats[0][0] if formats else "none"
    return tally.report(fmt, tally.frames / _SEQUENCE_FPS), staged, sequence_digest(digests)
