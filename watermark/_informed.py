"""Informed detection: subtract the registered original and read the chips from the residual.

With the original at hand the host is no longer noise: the original is warped onto the
leak (the registration homography), fitted to it photometrically (a tone curve for
brightness, contrast and gamma, plus the blur or sharpening the leak went through), and
subtracted. What is left is the mark plus the leak's own noise. Every leak pixel is then
mapped back into the original's frame, where the mark's tile grid is known exactly (it
starts at the original's top-left pixel), and its residual is added to the chip it falls
in, weighted by the mark amplitude the original could carry there over the local noise
power (a matched filter). There is no geometry search, so the verdict is corrected only
for the registrations tried and the deliveries in the registry.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ._carrier import TILE_CHIPS, chip_bump, chip_level
from ._color import luma
from ._detect import Detection, detect_chips
from ._embed import amplitude_map
from ._features import Features, local_features, match_features, mirror_matrix
from ._mask import transparent_pixels
from ._params import DEFAULT_PARAMS, CodecParams
from ._register import (
    choose_model,
    local_scale,
    match_original,
    plausible_homography,
    refine_homography,
)

__all__ = [
    "DENSE_FEATURES",
    "INDEX_FEATURES",
    "LEAK_FEATURES",
    "dense_features",
    "index_features",
    "leak_factor",
    "register_features",
    "residual_chips",
    "trace_registered",
]

#: Long side (px) and number of the local features described in a leak.
LEAK_FEATURES = (768, 512)
#: (long side px, number) of the local features an original keeps in the asset index, at
#: each scale it is described at: the small scale serves leaks shrunk to a few hundred px.
INDEX_FEATURES = ((1024, 512), (320, 128))


def index_features(y: np.ndarray) -> Features:
    """The local features of an original's luma `y` kept in the asset index."""
    parts = [local_features(y, max_side=side, n_features=n) for side, n in INDEX_FEATURES]
    return Features(
        np.concatenate([p.points for p in parts]), np.concatenate([p.descriptors for p in parts])
    )


#: Long side (px) and number of the features of a dense description, used when a leak is
#: registered to one known original (named by the user, or by the mark's delivery) and
#: the asset index's few hundred features per original miss it: a corner of a flat cel
#: frame shows little more than a stretch of outline.
DENSE_FEATURES = (2048, 4096)
# Thresholds of the dense description: a low contrast threshold and a high edge threshold
# keep the keypoints along cel outlines that SIFT's defaults drop.
_DENSE_CONTRAST = 0.004
_DENSE_EDGE = 40.0


def dense_features(y: np.ndarray, *, mirrored: bool = False) -> Features:
    """Many local features of a luma image `y`, down to faint corners and outlines (about
    1 s for 1920x1080 on one core; see :data:`DENSE_FEATURES`)."""
    return local_features(
        y,
        max_side=DENSE_FEATURES[0],
        n_features=DENSE_FEATURES[1],
        mirrored=mirrored,
        contrast_threshold=_DENSE_CONTRAST,
        edge_threshold=_DENSE_EDGE,
    )


def register_features(
    leak: Features,
    mirrored: bool,
    original: Features,
    leak_shape: tuple[int, ...],
    original_shape: tuple[int, ...],
) -> tuple[np.ndarray | None, int]:
    """Original -> leak homography from the features of one original and of the leak.

    Parameters
    ----------
    leak : Features
        The leak's features; of its mirror image (in the mirror image's coordinates) when
        `mirrored`.
    mirrored : bool
    original : Features
    leak_shape, original_shape : tuple
        (H, W, ...) of the leak and of the original.

    Returns
    -------
    homography : (3, 3) float64 ndarray or None
        None unless enough matches agree on a plausible homography.
    inliers : int
    """
    qi, ti = match_features(leak.descriptors, original.descriptors)
    h, inliers = choose_model(original.points[ti], leak.points[qi], leak_shape)
    if h is not None and mirrored:
        h = mirror_matrix(int(leak_shape[1])) @ h
    if h is None or not plausible_homography(h, original_shape, leak_shape):
        return None, inliers
    return h, inliers


def leak_factor(shape: tuple[int, ...]) -> float:
    """Resize factor at which a leak of `shape` is described (<= 1)."""
    return min(1.0, LEAK_FEATURES[0] / max(shape[0], shape[1]))


# Extra blur (leak pixels) the leak may have gone through, tried when fitting the host.
_BLUR_SIGMAS = (0.0, 0.7, 1.2, 1.8, 2.6, 3.6)
_TONE_BINS = 64
_CLIP = 4.0  # normalised residuals beyond this many local standard deviations are clipped
_OUTLIER = 6.0  # smoothed residuals this many robust deviations out are occluders
_OUTLIER_WINDOW = 8.0  # px, Gaussian sigma of that smoothing
# ... and never below this many grey levels: compression ringing along a cel outline is
# not an occluder (and is where a heavily compressed cel frame keeps its mark)
_OUTLIER_FLOOR = 8.0
_NOISE_FLOOR = 0.25  # grey levels^2 added to the local noise power (quantisation)
_INVERSE = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
_PROBE = 256  # px, side of the leak windows where registrations and blurs are compared
_N_PROBES = 4
_REPLICA_PROBE = 256  # px, side of the window where a JPEG replica's quality is chosen


def _bin_index(src: np.ndarray) -> np.ndarray:
    return np.clip(src * (_TONE_BINS / 256.0), 0, _TONE_BINS - 1).astype(np.int32).ravel()


def _tone_curve(
    src: np.ndarray, dst: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Knots (x, y) of the weighted mean of `dst` per bin of `src` (0..255)."""
    bins = _bin_index(src)
    w = weight.ravel()
    count = np.bincount(bins, weights=w, minlength=_TONE_BINS)
    used = count > 0
    mean_src = np.bincount(bins, weights=w * src.ravel(), minlength=_TONE_BINS)
    total = np.bincount(bins, weights=w * dst.ravel(), minlength=_TONE_BINS)
    c = np.maximum(count[used], 1e-9)
    return mean_src[used] / c, total[used] / c


def _robust_tone_curve(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots (x, y) of the median of `dst` per bin of `src`: occluders do not bend it.

    Medians come from a (bins x 256 grey levels) histogram, so the cost is linear.
    """
    bins = _bin_index(src)
    levels = np.clip(dst.ravel(), 0, 255).astype(np.int32)
    hist = np.bincount(bins * 256 + levels, minlength=_TONE_BINS * 256).reshape(_TONE_BINS, 256)
    counts = hist.sum(axis=1)
    used = counts > 0
    below = np.cumsum(hist[used], axis=1)
    med = np.argmax(below >= (counts[used, None] + 1) // 2, axis=1).astype(np.float64)
    x = np.bincount(bins, weights=src.ravel(), minlength=_TONE_BINS)[used] / counts[used]
    return x, med


def _curve(src: np.ndarray, knots: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    xs, ys = knots
    if xs.size == 0:
        return src.copy()
    return np.interp(src, xs, ys).astype(np.float32)


@dataclass(frozen=True, slots=True)
class _HostModel:
    """How the host appears in the leak, fitted on a probe window: blur and tone curve."""

    sigma: float  # extra Gaussian blur, leak pixels
    knots: tuple[np.ndarray, np.ndarray]  # robust tone curve
    level: float  # mean absolute residual on the windows, grey levels
    spread: float  # residual standard deviation from its lower quartile (occluders ignored)


def _fit_blur(
    leak: np.ndarray, host: np.ndarray, valid: np.ndarray, shapes: list[tuple[int, int]]
) -> _HostModel | None:
    """Blur and tone curve that best turn `host` into `leak` (robust: medians).

    The three arrays are flattened windows of the given `shapes`, concatenated.
    """
    keep = valid > 0
    if np.count_nonzero(keep) < 64:
        return None
    leak_k = leak[keep]
    sizes = [a * b for a, b in shapes]
    pieces = np.split(host, np.cumsum(sizes)[:-1])
    best: _HostModel | None = None
    for sigma in _BLUR_SIGMAS:
        if sigma > 0:
            blurred = [
                cv2.GaussianBlur(p.reshape(s), (0, 0), sigma).ravel()
                for p, s in zip(pieces, shapes, strict=True)
            ]
            b_k = np.concatenate(blurred)[keep]
        else:
            b_k = host[keep]
        knots = _robust_tone_curve(b_k, leak_k)
        abs_r = np.abs(leak_k - _curve(b_k, knots))
        err = float(np.mean(abs_r))
        if best is not None and err >= best.level:
            break  # the error is unimodal in the blur: past the best one it only grows
        # |r| has its lower quartile at 0.3186 sigma for Gaussian r: robust to occluders
        # covering up to three quarters of the windows
        spread = float(np.percentile(abs_r, 25)) / 0.3186
        best = _HostModel(sigma, knots, err, spread)
    return best


def _fit_host(
    leak: np.ndarray, host: np.ndarray, valid: np.ndarray, model: _HostModel
) -> np.ndarray:
    """The host as it appears in the leak: `model`'s blur, then tone curve and sharpening
    refitted on the whole leak without its occluders.

    Parameters
    ----------
    leak, host : (H, W) float32 ndarrays
        Leak luma and the original's luma warped onto it.
    valid : (H, W) float32 ndarray of 0/1
        Pixels to fit on; occluded pixels are set to 0 in place.
    model : _HostModel
        Blur and robust tone curve from the probe window.

    Returns
    -------
    (H, W) float32 ndarray to subtract from `leak`.
    """
    b = cv2.GaussianBlur(host, (0, 0), model.sigma) if model.sigma else host
    # the tone curve, robustly, over the whole leak (the windows may miss some colours)
    step = max(1, int(np.sqrt(leak.size / 200_000)))
    keep = valid[::step, ::step] > 0
    knots = _robust_tone_curve(b[::step, ::step][keep], leak[::step, ::step][keep])
    # occluders (logos, player bars, a hand) are outliers of the fit: drop them and refit;
    # smoothed over a wide window: a misregistered outline is thin and keeps its mark,
    # an occluder is a region
    fit = _curve(b, knots)
    spread = model.spread + 0.5
    smooth = functools.partial(cv2.GaussianBlur, ksize=(0, 0), sigmaX=_OUTLIER_WINDOW)
    outlier = smooth(np.abs(leak - fit)) > max(_OUTLIER * spread, _OUTLIER_FLOOR)
    # an opaque occluder over texture also shows as the leak no longer following the host
    mean_f, mean_l = smooth(fit), smooth(leak)
    var_f = smooth(fit * fit) - mean_f * mean_f
    var_l = smooth(leak * leak) - mean_l * mean_l
    cov = smooth(fit * leak) - mean_f * mean_l
    textured = var_f > (_OUTLIER * spread) ** 2
    outlier |= textured & (cov < 0.5 * np.sqrt(np.maximum(var_f * var_l, 0.0)))
    if np.any(outlier):
        outlier = cv2.dilate(outlier.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        valid[outlier] = 0.0
    fitted = _curve(b, _tone_curve(b, leak, valid))
    # sharpening (unsharp mask) adds a multiple of the host's detail band: fit that multiple
    detail = b - cv2.GaussianBlur(b, (0, 0), 1.0)
    r = leak - fitted
    den = float(np.sum(valid * detail * detail))
    beta = float(np.sum(valid * detail * r)) / den if den > 0 else 0.0
    return fitted + np.float32(beta) * detail


def _correlate(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Periodic cross-correlation ``c[s] = sum_x a[x] b[x - s]`` of two (P, P) arrays."""
    return np.fft.irfft2(np.fft.rfft2(a) * np.conj(np.fft.rfft2(b)), s=a.shape)


def _leak_to_original(shape: tuple[int, int], h_inv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Original-frame coordinates (x, y) of every leak pixel, float32 (H, W) each."""
    lh, lw = shape
    m = h_inv.astype(np.float32)
    xs = np.arange(lw, dtype=np.float32)
    ys = np.arange(lh, dtype=np.float32)[:, None]
    inv_den = 1.0 / (m[2, 0] * xs + m[2, 1] * ys + m[2, 2])
    x = (m[0, 0] * xs + m[0, 1] * ys + m[0, 2]) * inv_den
    y = (m[1, 0] * xs + m[1, 1] * ys + m[1, 2]) * inv_den
    return x, y


def shown_fraction(
    h: np.ndarray, leak_shape: tuple[int, ...], original_shape: tuple[int, ...]
) -> float | None:
    """Fraction of the original's area inside the leak's frame, occluded or not.

    The leak's outline (its pixels' outer edges) is mapped into the original and clipped
    to the original's; a whole frame, however scaled, gives 1.0.

    Parameters
    ----------
    h : (3, 3) float ndarray
        Original -> leak homography.
    leak_shape, original_shape : tuple
        (H, W, ...) of each.

    Returns
    -------
    float in [0, 1], or None when the outline does not map to a bounded shape (a
    registration that puts part of the leak beyond the original's horizon).
    """
    lh, lw = leak_shape[:2]
    oh, ow = original_shape[:2]
    h_inv = np.linalg.inv(np.asarray(h, np.float64))
    edges = np.array(
        [[-0.5, -0.5, 1.0], [lw - 0.5, -0.5, 1.0], [lw - 0.5, lh - 0.5, 1.0], [-0.5, lh - 0.5, 1.0]]
    )
    mapped = edges @ h_inv.T
    w = mapped[:, 2]
    if not (np.all(w > 0) or np.all(w < 0)):
        return None
    outline = (mapped[:, :2] / w[:, None]).astype(np.float32)
    frame = np.array(
        [[-0.5, -0.5], [ow - 0.5, -0.5], [ow - 0.5, oh - 0.5], [-0.5, oh - 0.5]], np.float32
    )
    # both outlines in the hull's own order: a mirrored registration reverses the leak's
    area, _ = cv2.intersectConvexConvex(cv2.convexHull(outline), cv2.convexHull(frame))
    return float(min(1.0, max(0.0, area / (float(ow) * float(oh)))))


def _warp_host(
    original_y: np.ndarray, h: np.ndarray, window: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The original warped onto a window (x0, y0, w, h) of the leak, and where it lands.

    Returns
    -------
    host : (h, w) float32 ndarray
    inside : (h, w) float32 ndarray of 0/1, eroded by 2 px (no interpolated border).
    """
    x0, y0, w, hh = window
    oh, ow = original_y.shape
    shift = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
    h_inv = np.linalg.inv(shift @ h)
    scale = local_scale(h, ((ow - 1) / 2.0, (oh - 1) / 2.0))
    # anti-alias before a downscaling warp, as any resize of the leak would have
    src = original_y if scale >= 0.8 else cv2.GaussianBlur(original_y, (0, 0), 0.45 / scale)
    host = cv2.warpPerspective(src, h_inv, (w, hh), flags=_INVERSE, borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.warpPerspective(
        np.full((oh, ow), 255, np.uint8),
        h_inv,
        (w, hh),
        flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
    )
    inside = cv2.erode(inside, np.ones((5, 5), np.uint8))
    return host, (inside > 0).astype(np.float32)


def _probe_windows(
    leak_shape: tuple[int, int], original_shape: tuple[int, int], h: np.ndarray
) -> list[tuple[int, int, int, int]]:
    """Candidate windows (x0, y0, w, h) of _PROBE x _PROBE leak pixels on a 3 x 3 grid over
    the original's footprint in the leak (the caller keeps those with the most host
    structure: a flat fill tells neither blur nor registration apart)."""
    lh, lw = leak_shape
    oh, ow = original_shape
    corners = np.array([[[0.0, 0.0]], [[ow - 1.0, 0.0]], [[ow - 1.0, oh - 1.0]], [[0.0, oh - 1.0]]])
    quad = cv2.perspectiveTransform(corners, h).reshape(-1, 2)
    x_lo, y_lo = np.clip(quad.min(axis=0), 0, [lw - 1, lh - 1])
    x_hi, y_hi = np.clip(quad.max(axis=0), 0, [lw - 1, lh - 1])
    w, hh = min(lw, _PROBE), min(lh, _PROBE)
    windows = set()
    for fx in (1 / 6, 0.5, 5 / 6):
        for fy in (1 / 6, 0.5, 5 / 6):
            cx, cy = x_lo + fx * (x_hi - x_lo), y_lo + fy * (y_hi - y_lo)
            x0 = int(np.clip(round(cx - w / 2), 0, lw - w))
            y0 = int(np.clip(round(cy - hh / 2), 0, lh - hh))
            windows.add((x0, y0, w, hh))
    return sorted(windows)


@dataclass(frozen=True, slots=True)
class _Residual:
    r: np.ndarray  # (h, w) float32, high-passed leak minus fitted host, 0 outside `valid`
    valid: np.ndarray  # (h, w) float32 0/1
    scale: float  # leak pixels per original pixel
    n_inside: float  # leak pixels inside the original, occluded or not


def _level(r: np.ndarray, valid: np.ndarray) -> float:
    """RMS residual over valid pixels, grey levels (the energy, not a median: on a cel
    frame most residuals are near 0 whatever the fit; the edges tell fits apart)."""
    n = float(np.count_nonzero(valid))
    mask = (valid > 0).astype(np.uint8)
    return float(cv2.norm(r, cv2.NORM_L2, mask=mask)) / np.sqrt(n) if n else np.inf


def _integer_offset(
    h: np.ndarray, shape: tuple[int, ...], tol: float = 0.05
) -> tuple[int, int] | None:
    """(x0, y0) when `h` is, to within `tol` px anywhere on a leak of `shape`, a translation
    by whole pixels (the leak is an unscaled crop, x_leak = x_orig - x0), else None."""
    m = h / h[2, 2]
    lh, lw = shape[:2]
    corners = np.array([[0.0, 0.0], [lw - 1.0, 0.0], [0.0, lh - 1.0], [lw - 1.0, lh - 1.0]])
    inv = np.linalg.inv(m)
    at = cv2.perspectiveTransform(corners[None], inv)[0]  # original points on the corners
    shift = np.rint(np.median(at - corners, axis=0))
    if np.abs(at - corners - shift).max() > tol:
        return None
    return int(shift[0]), int(shift[1])


def _as_uint8(pixels: np.ndarray) -> np.ndarray:
    """RGB (alpha dropped) or grey uint8 copy of an image array, for a JPEG encoder."""
    img = pixels[..., :3] if pixels.ndim == 3 else pixels
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return np.clip(np.rint(img / 257.0), 0, 255).astype(np.uint8)
    return np.clip(np.rint(img.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


# Still-image codecs a leak may have been saved with, tried for the replica: (extension,
# OpenCV quality flag). WebP (VP8) codes 16x16 macroblocks; JPEG 8x8 blocks.
_REPLICA_CODECS = ((".jpg", cv2.IMWRITE_JPEG_QUALITY), (".webp", cv2.IMWRITE_WEBP_QUALITY))
_SNAP_PX = 1.0  # a registration this close to a whole-pixel shift also tries the shift
_REPLICA_FINALISTS = 3
_REPLICA_GRID = 16  # px: the probe window starts on both codecs' block grids


def _codec_replica(
    leak_y: np.ndarray, original_y: np.ndarray, h: np.ndarray, original: np.ndarray | None
) -> np.ndarray | None:
    """The original's luma as the leak's JPEG or WebP compression would have left it, if
    the leak is an unscaled crop of it (compressed on the leak's own block grid); else None.

    Subtracting this instead of the original removes the host's own quantisation noise,
    which at low qualities is far larger than what is left of the mark: what remains is
    how the mark moved coefficients across quantisation steps. The colour original is
    compressed when given (the leak's luma then carries the same colour rounding), else its
    luma. The codec and quality (1 to 100) are the ones whose replica is closest to the
    leak on the most structured probe window; the choice sees only the host.
    """
    offset = _integer_offset(h, leak_y.shape)
    lh, lw = leak_y.shape
    oh, ow = original_y.shape
    if offset is None or min(lh, lw) < 64:
        return None
    x0, y0 = offset
    if x0 < 0 or y0 < 0 or x0 + lw > ow or y0 + lh > oh:
        return None
    if original is not None and original.shape[:2] == original_y.shape:
        src = _as_uint8(original[y0 : y0 + lh, x0 : x0 + lw])
    else:
        src = np.clip(np.rint(original_y[y0 : y0 + lh, x0 : x0 + lw]), 0, 255).astype(np.uint8)

    def replica(img: np.ndarray, codec: int, quality: int) -> np.ndarray:
        ext, flag = _REPLICA_CODECS[codec]
        bgr = img if img.ndim == 2 else np.ascontiguousarray(img[..., ::-1])
        _, buf = cv2.imencode(ext, bgr, [flag, quality])
        dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        return (
            dec.astype(np.float32) if dec.ndim == 2 else luma(np.ascontiguousarray(dec[..., ::-1]))
        )

    g = _REPLICA_GRID
    side = min(_REPLICA_PROBE, lh - lh % g, lw - lw % g)
    if side < g:
        return None
    starts = [
        (((lh - side) * fy) // 2, ((lw - side) * fx) // 2)  # 0, half and all of the slack
        for fy in (0, 1, 2)
        for fx in (0, 1, 2)
    ]
    host_y = original_y[y0 : y0 + lh, x0 : x0 + lw]
    ty, tx = max(
        starts, key=lambda t: float(np.var(host_y[t[0] : t[0] + side, t[1] : t[1] + side]))
    )
    ty, tx = ty // g * g, tx // g * g
    probe_src = np.ascontiguousarray(src[ty : ty + side, tx : tx + side])
    probe_leak = leak_y[ty : ty + side, tx : tx + side]

    def error(setting: tuple[int, int]) -> float:
        return float(np.mean((probe_leak - replica(probe_src, *setting)) ** 2))

    ranked: list[tuple[float, tuple[int, int]]] = []
    for codec in range(len(_REPLICA_CODECS)):
        coarse = min(((codec, q) for q in range(10, 101, 5)), key=error)
        near = range(max(1, coarse[1] - 4), min(100, coarse[1] + 4) + 1)
        ranked.extend((error((codec, q)), (codec, q)) for q in near)
    ranked.sort()
    # WebP picks its quantisers per segment of the picture it is given, so the probe only
    # shortlists: the few best settings are compared on the whole crop
    best, best_error = None, np.inf
    for _, setting in ranked[:_REPLICA_FINALISTS]:
        candidate = replica(src, *setting)
        err = float(np.mean((leak_y - candidate) ** 2))
        if err < best_error:
            best, best_error = candidate, err
    return best


def _residual(
    leak_y: np.ndarray,
    original_y: np.ndarray,
    h: np.ndarray,
    model: _HostModel,
    level: int,
    original: np.ndarray | None = None,
) -> _Residual | None:
    lh, lw = leak_y.shape
    oh, ow = original_y.shape
    host, valid = _warp_host(original_y, h, (0, 0, lw, lh))
    n_inside = float(valid.sum())
    if n_inside < 64:
        return None
    scale = local_scale(h, ((ow - 1) / 2.0, (oh - 1) / 2.0))
    r = (leak_y - _fit_host(leak_y, host, valid, model)) * valid
    replica = _codec_replica(leak_y, original_y, h, original)
    if replica is not None and _level(leak_y - replica, valid) < _level(r, valid):
        r = (leak_y - replica) * valid
    chip_px = float(2**level)
    # the chips sit in a band around 1/(2 chip) cycles per pixel: what is smoother than a
    # few chips (a tone misfit, the flat inside of an occluder) is not mark
    r -= cv2.GaussianBlur(r, (0, 0), max(1.0, chip_px * scale))
    r *= valid
    return _Residual(r, valid, scale, n_inside)


def residual_chips(
    leak_y: np.ndarray,
    original_y: np.ndarray,
    homographies: Sequence[np.ndarray],
    *,
    params: CodecParams = DEFAULT_PARAMS,
    original: np.ndarray | None = None,
    level: int | None = None,
) -> tuple[np.ndarray, float, int]:
    """Chip estimates of the mark in a leak, from the residual against its original.

    Parameters
    ----------
    leak_y : (h, w) float32 ndarray
        Leak luma, 0..255.
    original_y : (H, W) float32 ndarray
        Luma of the unmarked original, 0..255.
    homographies : sequence of (3, 3) float64 ndarrays
        Candidate original -> leak registrations; the one that leaves the smallest
        residual is used (a choice that never looks at the mark).
    params : CodecParams
        The masking the mark was embedded with (sets the matched filter's weights).
    original : (H, W[, C]) ndarray, optional
        The original's pixels (RGB(A) or grey, any dtype): its JPEG replica is then
        compressed in colour, as a leak would have been.
    level : int, optional
        Chip level of the delivery sought (chips of ``2**level`` px in the original);
        None: :func:`watermark._carrier.chip_level` of the original's size.

    Returns
    -------
    chips : (T, T) float64 ndarray
        Chip estimates in tile order, unit noise variance each (approximately).
    coverage : float
        Fraction of the original's area the leak shows, in [0, 1].
    used : int
        Index of the homography used (-1 when the leak shows none of the original).
    """
    t = TILE_CHIPS
    level = chip_level(original_y.shape) if level is None else int(level)
    # compare the registrations (and find the leak's blur) on one probe window: the
    # choice looks at the host fit only, never at the mark
    candidates = _probe_windows(leak_y.shape, original_y.shape, homographies[0])
    structure = []
    for win in candidates:
        host_w, valid_w = _warp_host(original_y, homographies[0], win)
        keep = valid_w > 0
        structure.append(float(np.var(host_w[keep])) if np.count_nonzero(keep) > 64 else -1.0)
    # the four windows with the most host structure (an occluder rarely covers all four)
    windows = [candidates[i] for i in np.argsort(structure)[::-1][:_N_PROBES]]
    leak_w = np.concatenate([leak_y[y : y + hh, x : x + w].ravel() for x, y, w, hh in windows])
    model, used = None, -1
    for i, h in enumerate(homographies):
        parts = [_warp_host(original_y, h, win) for win in windows]
        host_w = np.concatenate([p[0].ravel() for p in parts])
        valid_w = np.concatenate([p[1].ravel() for p in parts])
        fit = _fit_blur(leak_w, host_w, valid_w, [p[0].shape for p in parts])
        if fit is not None and (model is None or fit.level < model.level):
            model, used = fit, i
    best = (
        None
        if model is None
        else _residual(leak_y, original_y, homographies[used], model, level, original)
    )
    if best is None:
        return np.zeros((t, t)), 0.0, -1
    h = homographies[used]
    lh, lw = leak_y.shape
    oh, ow = original_y.shape
    h_inv = np.linalg.inv(h)
    clear = None
    if original is not None and original.shape[:2] == original_y.shape:
        clear = transparent_pixels(original)
    amp_o = amplitude_map(original_y, params, level=level, clear=clear)
    amp = cv2.warpPerspective(
        amp_o, h_inv, (lw, lh), flags=_INVERSE, borderMode=cv2.BORDER_REPLICATE
    )
    chip_px = float(2**level)
    r, valid, scale = best.r, best.valid, best.scale
    window = max(2.0, 2.0 * chip_px * scale)
    power = cv2.GaussianBlur(r * r, (0, 0), window) + np.float32(_NOISE_FLOOR)
    sd = np.sqrt(power)
    u = np.clip(r / sd, -_CLIP, _CLIP)
    num = (amp * u / sd) * valid
    den = (amp * amp / power) * valid

    # Back-project every leak pixel into the original's tile (the mark repeats every
    # T chips from the original's top-left pixel), then correlate the folded tile with
    # the carrier's own bump: the matched filter of the smooth DWT chips, and continuous
    # in the homography (no chip-boundary rounding).
    tile_px = t << level
    x, y = _leak_to_original((lh, lw), h_inv)
    xi = np.rint(x).astype(np.int32) % tile_px
    yi = np.rint(y).astype(np.int32) % tile_px
    cell = (yi * tile_px + xi).ravel()
    folded = np.bincount(cell, weights=num.ravel(), minlength=tile_px * tile_px)
    folded_power = np.bincount(cell, weights=den.ravel(), minlength=tile_px * tile_px)
    bump = chip_bump(level)
    step = 1 << level
    sums = _correlate(folded.reshape(tile_px, tile_px), bump)[::step, ::step]
    power_sums = _correlate(folded_power.reshape(tile_px, tile_px), bump * bump)[::step, ::step]
    chips = np.where(power_sums > 0, sums / np.sqrt(np.maximum(power_sums, 1e-12)), 0.0)
    coverage = shown_fraction(h, leak_y.shape, original_y.shape)
    if coverage is None:  # counted instead: the warp's interior, less its 2-px rim
        coverage = min(1.0, best.n_inside / max(scale * scale, 1e-12) / (oh * ow))
    return chips, coverage, used


def trace_registered(
    leak_y: np.ndarray,
    original_y: np.ndarray,
    h: np.ndarray,
    key: bytes,
    *,
    candidates: np.ndarray | None,
    n_tests: float = 1.0,
    p_threshold: float = 1e-6,
    params: CodecParams = DEFAULT_PARAMS,
    features: tuple[Features, bool] | None = None,
    refine: bool = True,
    original: np.ndarray | None = None,
    level: int | None = None,
) -> tuple[Detection, np.ndarray, float]:
    """Refine a registration, read the chips from the residual and decide.

    Parameters
    ----------
    leak_y, original_y : (h, w), (H, W) float32 ndarrays
        Luma, 0..255.
    h : (3, 3) float64 ndarray
        Original -> leak homography (from matched features).
    key : bytes
        Studio secret.
    candidates : (N,) integer ndarray or None
        Registered delivery ids, see :func:`watermark._detect.detect_chips`.
    n_tests : float
        Registrations tried in this trace; the p-value is corrected for them.
    p_threshold : float
        Accusation threshold on the false-alarm probability.
    params : CodecParams
        Embedding parameters of the deliveries.
    features : (Features, bool), optional
        The leak's features (and whether they describe its mirror image): the part of the
        original the leak shows is described again and matched for a finer homography.
    refine : bool
        Also try the homography refined by ECC; the one leaving the smaller residual is
        used.
    original : ndarray, optional
        The original's pixels, see :func:`residual_chips`.
    level : int, optional
        Chip level of the deliveries sought, see :func:`residual_chips`.

    Returns
    -------
    detection : Detection
        ``chip_px`` is the chip size sought, in the original's pixels; ``offset`` is
        (0, 0): the tile grid is the original's.
    homography : (3, 3) float64 ndarray
        The registration used.
    coverage : float
        Fraction of the original the leak shows.
    """
    if features is not None:
        fine, _ = match_original(
            features[0],
            features[1],
            leak_y.shape,
            original_y,
            h,
            leak_factor=leak_factor(leak_y.shape),
        )
        # the coarse registration stays a candidate: a few dozen matches on a flat frame
        # can fit a homography a degree off, which ECC then cannot pull back
        options = [h] if fine is None else [fine, h]
    else:
        options = [h]
    if refine:
        # the finer registration first; the coarse one only when ECC fails on it
        for start in list(options):
            refined, rho = refine_homography(leak_y, original_y, start)
            if rho > 0:
                options.append(refined)
                break
    # an unscaled crop registers a fraction of a pixel off a whole-pixel shift (a full
    # frame comes out 2e-4 off in scale): the exact shift is one more candidate, chosen
    # only if it fits the host better, and it lets the codec replica be used
    for option in list(options):
        near = _integer_offset(option, leak_y.shape, tol=_SNAP_PX)
        if near is not None:
            snapped = np.array([[1.0, 0.0, -near[0]], [0.0, 1.0, -near[1]], [0.0, 0.0, 1.0]])
            if not any(np.allclose(snapped, o / o[2, 2]) for o in options):
                options.append(snapped)
            break
    level = chip_level(original_y.shape) if level is None else int(level)
    chips, coverage, used = residual_chips(
        leak_y, original_y, options, params=params, original=original, level=level
    )
    h = options[max(used, 0)]
    chip_px = float(2**level)
    detection = detect_chips(
        chips,
        key,
        candidates=candidates,
        n_tests=n_tests,
        p_threshold=p_threshold,
        chip_px=chip_px,
    )
    return detection, h, coverage
