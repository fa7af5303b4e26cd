"""Video codec round trips in memory through PyAV (the optional ``video`` extra).

The edge module for video codecs: it imports ``av`` lazily, inside the function, so
``import watermark`` stays light and the pure modules (``_attacks.py`` and the codec)
never import ``av`` themselves. No files are touched: the clip lives in an
``io.BytesIO``.

Install with ``pip install 'leaktrace[video]'`` (PyAV wheels bundle FFmpeg with libx264).
"""

from __future__ import annotations

import io

import numpy as np

__all__ = ["VIDEO_ENCODERS", "h264_roundtrip", "video_roundtrip"]

_FPS = 24
#: Encoders a round trip can use, by name (the FFmpeg encoder names).
VIDEO_ENCODERS = ("libx264", "libx265")


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
    One encoder thread (``threads=1``), so the output is bit-reproducible and a benchmark
    worker uses one core. The container is Matroska, written to and read from memory.

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
        raise ImportError(
            "H.264 round trips need PyAV: pip install 'leaktrace[video]' (or pip install av)"
        ) from exc
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
