"""Periodic host texture: cap the strong, isolated peaks of a frame's local spectra.

Dense hatching, screentones and weaves put a few sinusoids of tens of grey levels into a
leak. The whitening keeps them (they sit in the chips' band), its energy equalisation then
scales the mark down by their energy, and their harmonics fold into the tiles: a frame of
such texture can hide its own mark. A mark makes no such peak: it spreads its energy over
the many frequencies of its tile. Nor does an edge: its spectrum is a ridge through the
origin, not an isolated peak.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.fft
import scipy.ndimage

__all__ = ["BLOCK_PX", "PEAK_GREY", "PEAK_RATIO", "cap_periodic_peaks"]

BLOCK_PX = 128  # local spectrum window, pixels (Hann, hop BLOCK_PX // 2)
# a capped peak stands PEAK_RATIO times above the geometric mean of its NEIGHBOURS x
# NEIGHBOURS bins, and is a sinusoid of at least PEAK_GREY grey levels (0..255) in its
# window. A mark's largest component in a window is 2.4 grey levels (corpus frames and
# generated ones up to 4K), and its spectrum is broadband, not isolated peaks.
PEAK_RATIO = 8.0
PEAK_GREY = 8.0
NEIGHBOURS = 9
PEAK_SPREAD = 5  # a peak is the largest bin of its PEAK_SPREAD x PEAK_SPREAD square
# and PEAK_RATIO times the bins in its direction at these fractions of its frequency
RADII = np.array([0.6, 0.7, 0.8, 1.25, 1.4, 1.6])
# slower content (periods over 32 px) is the host's own shading, which whitening removes
LOWEST_FREQUENCY = 1.0 / 32.0  # cycles per pixel
_CHUNK_VALUES = 1 << 22  # window values transformed at once: bounded memory on 8K frames


def _hann(n: int) -> np.ndarray:
    # periodic Hann: shifted by half its length, copies sum to exactly 1
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


def _capped_spectra(windows: np.ndarray, taper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Capped spectra of the windows that hold a peak, and those windows' indices.

    Parameters
    ----------
    windows : (N, B, B) float32 ndarray
    taper : (B, B) float32 ndarray

    Returns
    -------
    spectra : (M, B, B // 2 + 1) complex64 ndarray
        ``rfft2`` of the tapered windows less their mean, peaks capped.
    held : (M,) intp ndarray, indices into `windows`.
    """
    b = windows.shape[-1]
    spectra = scipy.fft.rfft2(
        (windows - windows.mean(axis=(-2, -1), keepdims=True)) * taper, workers=1
    )
    magnitude = np.abs(spectra)
    fy = scipy.fft.fftfreq(b)[:, None]
    fx = scipy.fft.rfftfreq(b)[None, :]
    fast = fy * fy + fx * fx >= LOWEST_FREQUENCY**2
    # a sinusoid of amplitude a grey levels gives a bin of a * sum(taper) / 2; most
    # windows have no bin that large, and are done
    loud = fast & (magnitude > np.float32(PEAK_GREY * float(taper.sum()) / 2.0))
    held = np.flatnonzero(loud.any(axis=(1, 2)))
    if held.size < len(windows):  # (hatching holds them all: no copy then)
        spectra, magnitude, loud = spectra[held], magnitude[held], loud[held]
    log_mag = np.add(magnitude, np.float32(1e-3))
    np.log(log_mag, out=log_mag)
    # the vertical frequency axis wraps; the half axis mirrors (Hermitian symmetry)
    log_mag = scipy.ndimage.uniform_filter1d(log_mag, NEIGHBOURS, axis=1, mode="wrap")
    log_mag = scipy.ndimage.uniform_filter1d(log_mag, NEIGHBOURS, axis=2, mode="mirror")
    reference = np.exp(log_mag, out=log_mag)
    strong = magnitude > PEAK_RATIO * reference
    # an edge's spectrum is a ridge through the origin, falling off along it: a ridge bin
    # is not the largest of its neighbourhood, a periodic texture's peak is
    win, fy, fx = np.nonzero(loud & strong)
    ny, nx = _square(fy, fx, b, magnitude.shape[2])
    peak = magnitude[win, fy, fx]
    is_peak = peak >= magnitude[win[:, None], ny, nx].max(axis=1)
    # nor stands out from the same direction at other radii, where a ridge (or its
    # ripples) goes on; a periodic peak is alone there
    ry, rx = _radial(fy, fx, b, magnitude.shape[2])
    is_peak &= peak > PEAK_RATIO * magnitude[win[:, None], ry, rx].max(axis=1)
    # the taper spreads each peak over its neighbours (Hann: a main lobe of +-2 bins)
    win, ny, nx = win[is_peak, None], ny[is_peak], nx[is_peak]
    lobe = strong[win, ny, nx]
    win, ny, nx = np.broadcast_to(win, ny.shape)[lobe], ny[lobe], nx[lobe]
    scale = PEAK_RATIO * reference[win, ny, nx] / magnitude[win, ny, nx]
    keep = np.unique(win)
    if keep.size < len(spectra):
        spectra, win = spectra[keep], np.searchsorted(keep, win)
    # only the lobe bins change (a bin of two lobes gets the same factor twice, once)
    spectra[win, ny, nx] *= scale
    return spectra, held[keep]


def _tapered_back(spectra: np.ndarray, windows: np.ndarray, taper: np.ndarray) -> np.ndarray:
    """The tapered windows whose spectra (less their mean) were capped, (N, B, B) float32."""
    b = windows.shape[-1]
    means = windows.mean(axis=(1, 2), keepdims=True)
    return scipy.fft.irfft2(spectra, s=(b, b), workers=1) + means * taper


def _square(fy: np.ndarray, fx: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, ...]:
    """Indices of the PEAK_SPREAD x PEAK_SPREAD bins around each (fy, fx) of a half
    spectrum with `rows` x `cols` bins, (K, PEAK_SPREAD**2) each: the vertical frequency
    wraps, the half axis is clipped at its ends."""
    r = np.arange(PEAK_SPREAD) - PEAK_SPREAD // 2
    dy, dx = (a.ravel() for a in np.meshgrid(r, r, indexing="ij"))
    return (fy[:, None] + dy) % rows, np.clip(fx[:, None] + dx, 0, cols - 1)


def _radial(fy: np.ndarray, fx: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, ...]:
    """Indices of the bins at RADII times each (fy, fx)'s frequency, same direction,
    (K, len(RADII)) each, in a half spectrum of `rows` x `cols` bins."""
    signed = np.where(fy > rows // 2, fy - rows, fy)
    ry = np.rint(signed[:, None] * RADII).astype(np.intp) % rows
    rx = np.clip(np.rint(fx[:, None] * RADII).astype(np.intp), 0, cols - 1)
    return ry, rx


def _window_rows(
    padded: np.ndarray, step: int, size: int, max_rows: int | None = None
) -> Iterator[tuple[int, int, np.ndarray]]:
    """The `size`-square windows of `padded` at a `step` grid, a few rows at a time (at
    most `max_rows`): (first row, rows, (rows * cols, size, size) float32 windows)."""
    view = np.lib.stride_tricks.sliding_window_view(padded, (size, size))[::step, ::step]
    n_rows, n_cols = view.shape[:2]
    chunk = max(1, _CHUNK_VALUES // (n_cols * size * size))
    if max_rows is not None:
        chunk = min(chunk, max_rows)
    for top in range(0, n_rows, chunk):
        part = view[top : top + chunk]
        yield top, part.shape[0], part.reshape(-1, size, size)


def cap_periodic_peaks(y: np.ndarray) -> np.ndarray:
    """Take strong periodic texture (hatching, screentones, weaves) out of a leak's luma.

    In each half-overlapping, Hann-tapered 128 px window's spectrum, a peak (the largest
    bin of its 5x5 square, over 8 times the geometric mean of its 9x9 neighbours and 8
    times the bins of its direction at 0.6 to 1.6 times its frequency, a sinusoid of over 8
    grey levels, a period under 32 px) is cut, with the bins of its main lobe, to 8 times
    that mean; the windows are added back. A leak without such a peak is returned as is
    (the same array), so only texture of that kind changes what the detector sees.
    Decided without the key.

    Parameters
    ----------
    y : (H, W) float32 ndarray
        Luma, 0..255.

    Returns
    -------
    (H, W) float32 ndarray
        `y` itself when no peak was found, else a new array.
    """
    b, hop = BLOCK_PX, BLOCK_PX // 2
    h, w = y.shape
    if min(h, w) < b:
        return y
    # a margin of one hop on every side, so that two windows cover every pixel per axis
    rows, cols = -(-h // hop) + 1, -(-w // hop) + 1  # windows per axis
    pad = ((hop, (rows + 1) * hop - h - hop), (hop, (cols + 1) * hop - w - hop))
    padded = np.pad(y.astype(np.float32, copy=False), pad, mode="reflect")
    taper = _hann(b)[:, None] * _hann(b)[None, :]
    # first the non-overlapping quarter of the windows, a row at a time: most leaks stop
    # here, and a frame of hatching is known for one from its first row
    rows_of_windows = _window_rows(padded, b, b, max_rows=1)
    if not any(_capped_spectra(w, taper)[1].size for _, _, w in rows_of_windows):
        return y
    out = np.zeros(((rows + 1) * hop, (cols + 1) * hop), np.float32)
    quads = out.reshape(rows + 1, hop, cols + 1, hop)
    for top, n, windows in _window_rows(padded, hop, b):
        spectra, held = _capped_spectra(windows, taper)
        if held.size == len(windows):  # (dense hatching: every window, no copies)
            back = _tapered_back(spectra, windows, taper)
        else:
            back = windows * taper
            if held.size:
                back[held] = _tapered_back(spectra, windows[held], taper)
        back = back.reshape(n, cols, 2, hop, 2, hop)
        for qy in (0, 1):
            for qx in (0, 1):
                quads[top + qy : top + qy + n, :, qx : qx + cols, :] += back[
                    :, :, qy, :, qx, :
                ].transpose(0, 2, 1, 3)
    return out[hop : hop + h, hop : hop + w]
