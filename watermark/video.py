"""Video codec round trips in memory, clip attacks and test clips, through PyAV.

The edge module for video codecs used to attack and to test: it imports ``av`` lazily,
inside the functions, so ``import watermark`` stays light and the pure modules
(``_attacks.py`` and the codec) never import ``av`` themselves. The round trips touch no
file (the clip lives in an ``io.BytesIO``); :func:`attack_clip` and
:func:`synthetic_clip` write the files they are asked to.

PyAV is a core dependency (its wheels bundle FFmpeg with libx264).
"""

from __future__ import annotations

import functools
import io
import itertools
import os
import zlib
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = [
    "CLIP_ATTACKS",
    "VIDEO_ENCODERS",
    "attack_clip",
    "h264_roundtrip",
    "synthetic_clip",
    "video_roundtrip",
]

_FPS = 24
#: Encoders a round trip can use, by name (the FFmpeg encoder names).
VIDEO_ENCODERS = ("libx264", "libx265")


@functools.cache
def _cpu_has_avx512() -> bool:
    """Whether this (Linux) CPU reports AVX-512 Foundation; False where it cannot tell."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return False


def _x264_options(options: dict[str, str]) -> dict[str, str]:
    """`options` for libx264, made to give one stream for one input.

    On a CPU with AVX-512, the libx264 of PyAV's wheels codes the same frames into a
    different stream from one call to the next (its AVX-512 routines: with the
    macroblock tree off, or with AVX2 code, the stream is always the same): an H.264
    attack would not be reproducible. Its AVX2 code is used there instead, which gives
    the stream that CPUs without AVX-512 give.
    """
    if _cpu_has_avx512():
        return {**options, "x264-params": "asm=AVX2"}
    return options


def h264_roundtrip(frames: np.ndarray, *, crf: int, preset: str = "medium") -> np.ndarray:
    """:func:`video_roundtrip` with libx264 (H.264)."""
    return video_roundtrip(frames, crf=crf, preset=preset, encoder="libx264")


def video_roundtrip(
    frames: np.ndarray, *, crf: int, preset: str = "medium", encoder: str = "libx264"
) -> np.ndarray:
    """Encode RGB frames as an H.264 or HEVC clip (yuv420p) in memory and decode them back.

    Parameters
    ----------
    frames : (N, H, W, 3) uint8 ndarray
        RGB order; N >= 1, H and W even (yuv420p halves the chroma in both directions).
    crf : int
        libx264 constant rate factor, 0..51 (23 is x264's default; 28 a streaming-grade
        re-encode).
    preset : str
        Encoder speed preset (``"ultrafast"`` .. ``"veryslow"``).
    encoder : str
        ``"libx264"`` (H.264) or ``"libx265"`` (HEVC).

    Returns
    -------
    (N, H, W, 3) uint8 ndarray
        The decoded frames in display order (BT.601 limited-range YUV <-> RGB, FFmpeg's
        swscale default, both ways).

    Raises
    ------
    ImportError
        If PyAV is not installed, or its FFmpeg has no libx264 encoder.
    ValueError
        On a bad array shape, dtype, odd size or crf.

    Notes
    -----
    One encoder thread (``threads=1``) and, on a CPU with AVX-512, x264's AVX2 code (see
    :func:`_x264_options`), so the output depends on the input only and a benchmark worker
    uses one core. The container is Matroska, written to and read from memory.

    Examples
    --------
    >>> import numpy as np
    >>> clip = np.full((3, 32, 48, 3), 128, np.uint8)
    >>> h264_roundtrip(clip, crf=28).shape  # doctest: +SKIP
    (3, 32, 48, 3)
    """
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[3] != 3 or arr.shape[0] < 1:
        raise ValueError(f"frames must be (N, H, W, 3) with N >= 1; got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8; got dtype {arr.dtype}")
    n, h, w = arr.shape[:3]
    if h % 2 or w % 2 or h < 2 or w < 2:
        raise ValueError(f"yuv420p needs even frame sides; got (H, W) = ({h}, {w}): pad first")
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be an int in 0..51; got {crf!r}")
    if encoder not in VIDEO_ENCODERS:
        raise ValueError(f"encoder must be one of {VIDEO_ENCODERS}; got {encoder!r}")
    try:
        import av
    except ImportError as exc:
        raise ImportError("H.264 round trips need PyAV: pip install av") from exc
    if encoder not in av.codecs_available:
        raise ImportError(
            f"this PyAV ({av.__version__}) was built without the {encoder} encoder; "
            "install the PyPI wheel of av, which bundles it"
        )

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="matroska") as out:
        stream = out.add_stream(encoder, rate=_FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        options = {"crf": str(int(crf)), "preset": preset, "threads": "1"}
        if encoder == "libx265":  # one thread and quiet, like x264 above
            options["x265-params"] = "pools=1:frame-threads=1:log-level=error"
        else:
            options = _x264_options(options)
        stream.options = options
        for rgb in arr:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))  # flush the encoder's look-ahead
    buf.seek(0)
    with av.open(buf, mode="r") as inp:
        decoded = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
    if len(decoded) != n:
        raise RuntimeError(f"{encoder} round trip returned {len(decoded)} frames for {n}")
    return np.stack(decoded)


# ----------------------------------------------------------------------------- clip attacks

#: Attacks on a whole clip (:func:`attack_clip`), the video issue's list. Each writes an
#: H.264 yuv420p mp4 (``frame_jpeg70``: one JPEG still).
CLIP_ATTACKS: tuple[str, ...] = (
    "crf28",
    "crf35",
    "480p",
    "360p",
    "fps30",
    "excerpt",
    "letterbox",
    "camcorder",
    "frame_jpeg70",
)
_CLIP_CRF = {"crf35": 35, "camcorder": 30}  # the others re-encode at crf 28


def attack_clip(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], name: str, *, seed: int
) -> None:
    """Write an attacked copy of a clip (the leak a benchmark or test traces).

    ``crf28`` / ``crf35``: H.264 re-encode. ``480p`` / ``360p``: downscale to that height
    (aspect kept, even sides), crf 28. ``fps30``: 24 -> 30 fps by repeating frames, crf 28.
    ``excerpt``: a third of the clip from a random start, crf 28. ``letterbox``: black
    bars to 2.39:1, crf 28. ``camcorder``: every frame through the camcorder chain (one
    perspective for the clip, fresh noise per frame, blur 1, brightness +10, JPEG 70),
    then crf 30. ``frame_jpeg70``: one random frame as a JPEG at quality 70. Audio is
    dropped. Frames stream through; the source is never modified.

    Parameters
    ----------
    src, dst : path-like
        The clip and the attacked copy (``.mp4``; ``.jpg`` for ``frame_jpeg70``).
    name : str
        One of :data:`CLIP_ATTACKS`.
    seed : int
        Seeds the random choices (start, frame, perspective, noise).
    """
    import av
    import cv2

    from . import _attacks as attacks

    if name not in CLIP_ATTACKS:
        raise ValueError(f"unknown clip attack {name!r}; choose from {CLIP_ATTACKS}")
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    with av.open(str(src)) as inp:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        total = int(vin.frames or 0)
        rate = vin.average_rate or Fraction(24)
        if total <= 0:
            total = sum(1 for _ in inp.decode(vin))
            inp.seek(0)
        frames = (f.to_ndarray(format="rgb24") for f in inp.decode(vin))
        if name == "frame_jpeg70":
            pick = int(rng.integers(total))
            for n, rgb in enumerate(frames):
                if n == pick:
                    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 70])
                    if not ok:
                        raise ValueError(f"{src}: frame {pick} cannot be encoded as JPEG")
                    Path(dst).write_bytes(buf.tobytes())
                    return
            raise ValueError(f"{src}: frame {pick} not found")
        h, w = vin.codec_context.height, vin.codec_context.width
        out_rate = rate
        if name in ("480p", "360p"):
            th = int(name[:-1])
            size = (max(2, round(w * th / h / 2) * 2), th)
            frames = (cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames)
        elif name == "fps30":
            out_rate = Fraction(rate) * Fraction(5, 4)
            frames = _repeat_every(frames, 4)
        elif name == "excerpt":
            length = max(1, total // 3)
            start = int(rng.integers(0, max(1, total - length + 1)))
            frames = itertools.islice(frames, start, start + length)
        elif name == "letterbox":
            frames = (attacks.matte(f, 2.39) for f in frames)
        elif name == "camcorder":
            geometry = np.random.default_rng(rng.integers(2**32))
            state = geometry.bit_generator.state

            def chain(f: np.ndarray) -> np.ndarray:
                g = np.random.default_rng()
                g.bit_generator.state = state  # the same perspective on every frame
                out = attacks.perspective(f, 0.03, rng=g)
                out = attacks.gaussian_blur(out, 1.0)
                out = attacks.brightness(out, 10)
                out = attacks.gaussian_noise(out, 5, rng=rng)
                return attacks.jpeg(out, 70)

            frames = (chain(f) for f in frames)
        _write_h264(dst, frames, out_rate, _CLIP_CRF.get(name, 28))


def _repeat_every(frames: Iterable[np.ndarray], k: int) -> Iterator[np.ndarray]:
    for n, f in enumerate(frames):
        yield f
        if n % k == k - 1:
            yield f


def _write_h264(
    dst: str | os.PathLike[str], frames: Iterable[np.ndarray], rate: Fraction, crf: int
) -> None:
    import av

    with av.open(str(dst), "w", format="mp4") as out:
        stream = out.add_stream(
            "libx264", rate=rate, options=_x264_options({"crf": str(crf), "preset": "veryfast"})
        )
        stream.pix_fmt = "yuv420p"
        started = False
        for rgb in frames:
            if not started:
                stream.width, stream.height = rgb.shape[1] // 2 * 2, rgb.shape[0] // 2 * 2
                started = True
            rgb = np.ascontiguousarray(rgb[: stream.height, : stream.width])
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode(None))


def synthetic_clip(
    dst: str | os.PathLike[str],
    image: np.ndarray,
    *,
    size: tuple[int, int] = (1080, 1920),
    frames: int = 48,
    fps: int = 24,
    crf: int = 16,
    audio: bool = True,
) -> None:
    """Write a test clip: a slow pan across `image`, H.264 yuv420p, with AAC stereo audio.

    Parameters
    ----------
    dst : path-like
        ``.mp4`` or ``.mkv`` file to write.
    image : (H, W, 3) uint8 ndarray
        RGB picture panned across; resized up if smaller than `size`.
    size : (int, int)
        (height, width) of the clip, even.
    frames, fps : int
        Length in frames and frame rate.
    crf : int
        libx264 quality.
    audio : bool
        Add a stereo 440/660 Hz AAC track as long as the clip.
    """
    import av
    import cv2

    h, w = size
    ih, iw = image.shape[:2]
    scale = max(h / ih, (w * 1.25) / iw, 1.0)
    if scale > 1.0:
        image = cv2.resize(
            image, (round(iw * scale), round(ih * scale)), interpolation=cv2.INTER_CUBIC
        )
    ih, iw = image.shape[:2]
    with av.open(str(dst), "w") as out:
        video = out.add_stream(
            "libx264", rate=fps, options=_x264_options({"crf": str(crf), "preset": "veryfast"})
        )
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        sound = out.add_stream("aac", rate=48000, layout="stereo") if audio else None
        span = iw - w
        for n in range(frames):
            x = round(span * n / max(1, frames - 1))
            y = (ih - h) // 2
            rgb = np.ascontiguousarray(image[y : y + h, x : x + w])
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = n
            frame.time_base = Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            samples = 48000 * frames // fps
            t = np.arange(samples) / 48000.0
            tone = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)])
            pcm = (0.2 * tone).astype(np.float32)
            for start in range(0, samples, 1024):
                chunk = np.ascontiguousarray(pcm[:, start : start + 1024])
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                af.sample_rate = 48000
                af.pts = start
                af.time_base = Fraction(1, 48000)
                out.mux(sound.encode(af))
            out.mux(sound.encode(None))
