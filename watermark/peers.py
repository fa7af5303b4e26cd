"""Adapters for other open-source watermarking methods, compared by ``leaktrace bench --peers``.

Three peers, each embedding a 32-bit payload in an RGB uint8 image and extracting it blind
(without the original):

- ``dwtDct`` and ``dwtDctSvd`` of invisible-watermark (``imwatermark``), payload as 'bits';
- ``blind-watermark`` (``blind_watermark.WaterMark``), payload as 32 bits, extracted with the
  watermark length only (``wm_shape=32``).

The packages are the optional ``peers`` extra (``pip install 'leaktrace[peers]'``) and are
imported lazily, inside the functions that need them. invisible-watermark imports ``torch``
at import time (for its rivaGan method, unused here) and depends on the non-headless
``opencv-python``; ``pip install --no-deps invisible-watermark blind-watermark`` (plus
``torch``) avoids the second OpenCV build. blind-watermark prints a banner when a
``WaterMark`` is made and calls ``multiprocessing.set_start_method('fork')`` when imported;
both are contained here (stdout is swallowed, the start method is left untouched).

Peers get the geometry back for free: a leak whose (H, W) differs from the marked image is
resized to ``expected_shape`` before extraction (leaktrace's detector gets no such help).

All three extract one 4x4 block at a time in a Python loop (blind-watermark about 1.9 s per
megapixel, nearly half of a full ``bench --peers`` run's CPU time at first; dwtDctSvd about
0.4 s, dwtDct about 0.15 s). ``extract(..., vectorised=True)`` replaces that one loop, and
only it, with whole-array calls that give bit-identical per-block results (OpenCV's row DCT
applied twice is its 2-D DCT, NumPy's batched SVD runs the same LAPACK routine per matrix,
and dwtDct's largest-coefficient pick is an argmax either way); everything else -- reading
the image, colour conversion, wavelet transform, averaging, k-means, decryption -- is still
the package's own code. The bench times the package's own extraction and checks that both
give the same bits on one leak of every frame.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import multiprocessing
import types
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from .errors import LeaktraceError

__all__ = [
    "PAYLOAD_BITS",
    "PEER_METHODS",
    "PeerUnavailableError",
    "bits_of",
    "check_peers",
    "embed",
    "extract",
    "peer_versions",
]

PEER_METHODS: tuple[str, ...] = ("dwtDct", "dwtDctSvd", "blind-watermark")
"""The peer methods, in report order."""

PAYLOAD_BITS = 32
"""Bits every peer embeds (the width of a leaktrace delivery id)."""

_DISTRIBUTIONS = {
    "dwtDct": "invisible-watermark",
    "dwtDctSvd": "invisible-watermark",
    "blind-watermark": "blind-watermark",
}
_INSTALL_HINT = (
    "pip install 'leaktrace[peers]' (or, keeping opencv-python-headless only: "
    "pip install --no-deps invisible-watermark blind-watermark && pip install torch matplotlib)"
)


class PeerUnavailableError(LeaktraceError):
    """A peer method's package is not installed (the ``peers`` extra)."""


def _check_method(method: str) -> str:
    if method not in PEER_METHODS:
        raise ValueError(f"unknown peer method {method!r}; choose one of {PEER_METHODS}")
    return method


def bits_of(payload: int) -> np.ndarray:
    """The 32 bits of ``payload``, most significant first, as a ``(32,)`` uint8 array.

    Examples
    --------
    >>> bits_of(0x80000001).tolist()[:2], int(bits_of(0x80000001)[-1])
    ([1, 0], 1)
    """
    if isinstance(payload, bool) or not isinstance(payload, (int, np.integer)):
        raise TypeError(f"payload must be an int; got {payload!r}")
    if not 0 <= int(payload) < 2**PAYLOAD_BITS:
        raise ValueError(f"payload must be in [0, 2**32); got {payload!r}")
    shifts = np.arange(PAYLOAD_BITS - 1, -1, -1, dtype=np.uint64)
    return ((np.uint64(payload) >> shifts) & np.uint64(1)).astype(np.uint8)


def peer_versions() -> dict[str, str | None]:
    """Installed versions of the peer packages (None when absent), by distribution name."""
    out: dict[str, str | None] = {}
    for dist in ("invisible-watermark", "blind-watermark", "torch"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def check_peers(methods: Sequence[str] = PEER_METHODS) -> None:
    """Import every package ``methods`` need; raise :class:`PeerUnavailableError` if one fails.

    Raises
    ------
    PeerUnavailableError
        With the package name and the install command.
    """
    for method in methods:
        _check_method(method)
        try:
            if method == "blind-watermark":
                _blind_watermark()
            else:
                _imwatermark()
        except ImportError as exc:
            raise PeerUnavailableError(
                f"peer {method} needs {_DISTRIBUTIONS[method]} ({exc}); {_INSTALL_HINT}"
            ) from exc


def _imwatermark():
    import imwatermark  # imports torch (rivaGan) at import time

    return imwatermark


def _blind_watermark():
    # blind_watermark.pool calls multiprocessing.set_start_method('fork') at import: that
    # would change this process's start method, or raise in a spawned worker. Neutralise it.
    original = multiprocessing.set_start_method
    multiprocessing.set_start_method = lambda *args, **kwargs: None
    try:
        import blind_watermark
    finally:
        multiprocessing.set_start_method = original
    blind_watermark.bw_notes.close()  # no banner on stdout
    return blind_watermark


def _rgb8(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB view or copy of an image (grey repeated, alpha dropped)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"peers take uint8 images; got dtype {arr.dtype}")
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"image must be (H, W), (H, W, 3) or (H, W, 4); got {arr.shape}")
    return arr[..., :3]


def _passwords(seed: int) -> tuple[int, int]:
    """blind-watermark's two integer passwords (legacy RandomState seeds) from ``seed``."""
    rng = np.random.default_rng([int(seed), 0xB1])
    return int(rng.integers(1, 2**31)), int(rng.integers(1, 2**31))


def embed(method: str, image: np.ndarray, payload: int, *, seed: int = 0) -> np.ndarray:
    """Embed ``payload`` (32 bits) with a peer method.

    Parameters
    ----------
    method : str
        One of :data:`PEER_METHODS`.
    image : (H, W[, C]) uint8 ndarray
        RGB(A) order; alpha is dropped, grey is repeated to 3 channels. Not modified.
        invisible-watermark needs H * W >= 256 * 256.
    payload : int
        0 <= payload < 2**32.
    seed : int
        blind-watermark's passwords are derived from it (the other two have no key).

    Returns
    -------
    (H, W, 3) uint8 ndarray
        The marked image, RGB.

    Raises
    ------
    PeerUnavailableError
        The method's package is not installed.
    ValueError, TypeError
        A bad method, image or payload.
    """
    _check_method(method)
    bits = bits_of(payload)
    rgb = _rgb8(image)
    check_peers([method])
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    if method == "blind-watermark":
        wm = _blind_object(seed)
        with contextlib.redirect_stdout(io.StringIO()):
            wm.read_img(img=bgr)
            wm.read_wm(bits.astype(bool), mode="bit")
            out = wm.embed()  # float BGR in [0, 255]
        out8 = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    else:
        from imwatermark import WatermarkEncoder

        encoder = WatermarkEncoder()
        encoder.set_watermark("bits", bits.tolist())
        out8 = np.asarray(encoder.encode(bgr, method))
        if out8.dtype != np.uint8:
            out8 = np.clip(np.rint(out8), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out8[..., ::-1])


def extract(
    method: str,
    image: np.ndarray,
    *,
    expected_shape: tuple[int, int],
    seed: int = 0,
    vectorised: bool = False,
) -> np.ndarray:
    """Extract the 32 payload bits blind (no original image) with a peer method.

    Parameters
    ----------
    method : str
        One of :data:`PEER_METHODS`.
    image : (H, W[, C]) uint8 ndarray
        The suspect image, RGB(A) or grey. Not modified.
    expected_shape : (int, int)
        (H, W) of the marked image; a leak of another size is resized to it first
        (INTER_AREA when shrinking, INTER_CUBIC otherwise).
    seed : int
        The seed given to :func:`embed`.
    vectorised : bool
        Replace the package's per-block loop by a whole-array copy
        (:func:`_blind_block_bits`, :func:`_imwatermark_decode_frame`): the same bits,
        several times faster on the bench's frames of at most 1024 px.

    Returns
    -------
    (32,) uint8 ndarray of 0/1
        The extracted bits, most significant first (compare with :func:`bits_of`).

    Raises
    ------
    PeerUnavailableError
        The method's package is not installed.
    """
    _check_method(method)
    rgb = _rgb8(image)
    check_peers([method])
    h, w = (int(v) for v in expected_shape)
    if rgb.shape[:2] != (h, w):
        shrink = h * w < rgb.shape[0] * rgb.shape[1]
        interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
        rgb = cv2.resize(np.ascontiguousarray(rgb), (w, h), interpolation=interp)  # cv2: (w, h)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    if method == "blind-watermark":
        wm = _blind_object(seed)
        if vectorised:
            # an instance attribute: this object's extract() calls it in place of the loop
            wm.bwm_core.extract_raw = types.MethodType(_blind_block_bits, wm.bwm_core)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                bits = wm.extract(embed_img=bgr, wm_shape=PAYLOAD_BITS, mode="bit")
        finally:
            if vectorised:
                # the bound method refers back to the core: a cycle that would keep the
                # core's image arrays (tens of MB) alive until a full garbage collection
                del wm.bwm_core.extract_raw
    elif vectorised:
        bits = _imwatermark_decode(method, bgr)
    else:
        from imwatermark import WatermarkDecoder

        bits = WatermarkDecoder("bits", PAYLOAD_BITS).decode(bgr, method)
    return (np.asarray(bits).reshape(-1)[:PAYLOAD_BITS] > 0).astype(np.uint8)


def _blind_object(seed: int):
    password_wm, password_img = _passwords(seed)
    blind_watermark = _blind_watermark()
    with contextlib.redirect_stdout(io.StringIO()):
        return blind_watermark.WaterMark(password_wm=password_wm, password_img=password_img)


def _block_dct(blocks: np.ndarray) -> np.ndarray:
    """OpenCV's 2-D DCT of every block of a ``(n, bh, bw)`` float array, ``(n, bh, bw)``.

    OpenCV's row DCT (``DCT_ROWS``) over the rows, then over the columns, is its 2-D DCT of
    each block bit for bit: the per-block ``cv2.dct(block)`` of the peers' loops, at once.
    """
    n, bh, bw = blocks.shape
    coef = cv2.dct(np.ascontiguousarray(blocks).reshape(-1, bw), flags=cv2.DCT_ROWS)
    coef = np.ascontiguousarray(coef.reshape(n, bh, bw).transpose(0, 2, 1))
    coef = cv2.dct(coef.reshape(-1, bh), flags=cv2.DCT_ROWS).reshape(n, bw, bh)
    return np.ascontiguousarray(coef.transpose(0, 2, 1))


def _blind_block_bits(core: Any, img: np.ndarray) -> np.ndarray:
    """blind-watermark's ``WaterMarkCore.extract_raw`` without its per-block loop.

    Same steps as the package's ``block_get_wm_slow`` on every 4x4 block of the Haar
    approximation band at once: 2-D DCT, keyed shuffle of the 16 coefficients, SVD, then
    the two largest singular values modulo ``d1`` and ``d2``.

    Parameters
    ----------
    core : blind_watermark.bwm_core.WaterMarkCore
        With ``wm_size`` set (as ``extract`` does before calling ``extract_raw``).
    img : (H, W, 3) ndarray
        BGR image, as the package takes it.

    Returns
    -------
    (3, n_blocks) float64 ndarray
        Per channel and block, ``(3 * bit_d1 + bit_d2) / 4`` (``bit_d1`` alone when
        ``d2`` is 0), exactly as the package's loop returns them.
    """
    from blind_watermark.bwm_core import random_strategy1

    if core.fast_mode:
        raise NotImplementedError("blind-watermark's fast mode is not vectorised")
    core.read_img_arr(img=img)
    core.init_block_index()
    bh, bw = (int(v) for v in core.block_shape)
    shuffle = random_strategy1(core.password_img, core.block_num, bh * bw)
    core.idx_shuffle = shuffle
    out = np.zeros((3, core.block_num))
    for channel in range(3):
        # (rows, cols, bh, bw) blocks in block_index order (row-major), as float32
        blocks = np.ascontiguousarray(core.ca_block[channel], dtype=np.float32)
        n = blocks.shape[0] * blocks.shape[1]
        coef = _block_dct(blocks.reshape(n, bh, bw)).reshape(n, bh * bw)
        shuffled = np.take_along_axis(coef, shuffle, axis=1).reshape(n, bh, bw)
        s = np.linalg.svd(shuffled)[1]  # full SVD, like numpy.linalg.svd(block) there
        bits = (s[:, 0] % core.d1 > core.d1 / 2) * 1
        if core.d2:
            bits = (bits * 3 + (s[:, 1] % core.d2 > core.d2 / 2) * 1) / 4
        out[channel] = bits
    return out


def _imwatermark_decode(method: str, bgr: np.ndarray) -> np.ndarray:
    """``WatermarkDecoder("bits", 32).decode(bgr, method)`` with the per-block loop of the
    method's class replaced by :func:`_imwatermark_decode_frame` on this one instance."""
    from imwatermark import WatermarkDecoder
    from imwatermark.dwtDctSvd import EmbedDwtDctSvd
    from imwatermark.maxDct import EmbedMaxDct

    decoder = WatermarkDecoder("bits", PAYLOAD_BITS)
    if bgr.shape[0] * bgr.shape[1] < 256 * 256:  # the decoder's own check and message
        raise RuntimeError("image too small, should be larger than 256x256")
    cls = EmbedMaxDct if method == "dwtDct" else EmbedDwtDctSvd
    core = cls(watermarks=[], wmLen=PAYLOAD_BITS)
    block, wm_len = int(core._block), int(core._wmLen)
    # plain values in the closure, not `core`: no reference cycle keeps the object alive
    core.decode_frame = lambda frame, scale, scores: _imwatermark_decode_frame(
        method, frame, scale, scores, block=block, wm_len=wm_len
    )
    return decoder.reconstruct(core.decode(bgr))


def _imwatermark_decode_frame(
    method: str,
    frame: np.ndarray,
    scale: float,
    scores: list[list[int]],
    *,
    block: int,
    wm_len: int,
) -> list[list[int]]:
    """invisible-watermark's ``decode_frame`` without its per-block loop.

    Every ``block`` x ``block`` block of the band, in the package's row-major order, is
    scored at once as its ``infer_dct_matrix`` (dwtDct: the largest-magnitude coefficient
    but the first, modulo ``scale``) or ``infer_dct_svd`` (dwtDctSvd: the largest singular
    value of the block's 2-D DCT, modulo ``scale``) scores one block; block ``n``'s score is
    appended to ``scores[n % wm_len]``, as there.

    Parameters
    ----------
    method : str
        ``"dwtDct"`` or ``"dwtDctSvd"``.
    frame : (H, W) float64 ndarray
        A Haar approximation band, as the package's ``decode`` passes it.
    scale : float
        The channel's quantisation step.
    scores : list of `wm_len` lists of int
        Scores so far (earlier channels); extended and returned.
    """
    rows, cols = frame.shape[0] // block, frame.shape[1] // block
    blocks = frame[: rows * block, : cols * block].reshape(rows, block, cols, block)
    blocks = np.ascontiguousarray(blocks.transpose(0, 2, 1, 3)).reshape(-1, block, block)
    n = blocks.shape[0]
    if method == "dwtDct":
        flat = blocks.reshape(n, block * block)
        pos = np.argmax(np.abs(flat[:, 1:]), axis=1) + 1
        value = np.abs(flat[np.arange(n), pos])
        got = value % scale > 0.5 * scale
    else:
        s = np.linalg.svd(_block_dct(blocks))[1]  # full SVD, like numpy.linalg.svd(block) there
        got = s[:, 0] % scale > scale * 0.5
    per_block = got.astype(np.int64)
    for bit in range(wm_len):
        scores[bit].extend(per_block[bit::wm_len].tolist())
    return scores
