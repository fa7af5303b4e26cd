"""The keyed tile: which chips are pilot, which carry which coded bit, and their signs.

A tile is ``TILE_CHIPS x TILE_CHIPS`` chips. Half of the chips (keyed positions) carry a
known pilot, used to find the tile grid and to score hypotheses; the other half carry
the convolutionally coded payload, each coded bit spread over 3-4 keyed chips. Every chip
has a keyed sign, so the whole pattern is a Rademacher sequence to anyone without the key.

The chips live in the approximation band of a ``level``-level periodic DWT: the spatial
carrier is the inverse transform of the chip array with all detail bands zero, which makes
each chip a smooth bump of ``2**level`` pixels. The level follows the frame size
(:func:`chip_level`): 4-px chips on small frames (more chips, at frequencies where the host
is weaker), 8 px at HD (they ride the 8x8 DCT low frequencies JPEG keeps), 16 px at 4K (so a
downscale to HD leaves 8-px chips). A still from 720 px up whose 4-px mark would be weak
may carry 8-px chips instead (:func:`chip_levels`, chosen by
:func:`watermark._embed.embed_frame`); the registry records each delivery's level.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pywt

from ._ecc import CODED_BITS
from ._keys import keyed_generator

__all__ = [
    "LARGER_CHIPS_SIDE",
    "TILE_CHIPS",
    "WAVELET",
    "TileLayout",
    "carrier_tile",
    "chip_bump",
    "chip_level",
    "chip_levels",
    "chip_values",
    "tile_layout",
]

TILE_CHIPS = 32
WAVELET = "bior4.4"  # CDF 9/7: smooth synthesis bumps, least energy above 1/16 cyc/px


@dataclass(frozen=True, slots=True)
class TileLayout:
    """Keyed chip roles of one tile.

    Attributes
    ----------
    pilot : (T, T) bool ndarray
        True where the chip carries the pilot.
    signs : (T, T) float32 ndarray
        Keyed +1/-1 sign of every chip.
    bit_index : (T, T) int32 ndarray
        Coded bit carried by each data chip, -1 on pilot chips.
    """

    pilot: np.ndarray
    signs: np.ndarray
    bit_index: np.ndarray

    @property
    def pilot_chips(self) -> np.ndarray:
        """(T, T) float32: the pilot sign on pilot chips, 0 elsewhere."""
        return np.where(self.pilot, self.signs, 0.0).astype(np.float32)


def chip_level(shape: tuple[int, ...]) -> int:
    """DWT level of the chips for a frame of `shape` (H, W, ...): chips are 2**level px.

    Examples
    --------
    >>> chip_level((512, 768)), chip_level((1080, 1920)), chip_level((2160, 3840))
    (2, 3, 4)
    """
    side = min(shape[0], shape[1])
    return 2 if side < 1000 else 3 if side < 2000 else 4


# Frames with a short side from this many px up to chip_level's 4-px limit may carry 8-px
# chips instead (see watermark._embed.embed_frame): 2.8 tiles of them across 720 px.
LARGER_CHIPS_SIDE = 720


def chip_levels(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Every chip level a still of `shape` (H, W, ...) may be marked with, the size rule's
    (:func:`chip_level`) first.

    Examples
    --------
    >>> chip_levels((512, 768)), chip_levels((720, 1280)), chip_levels((1080, 1920))
    ((2,), (2, 3), (3,))
    """
    level = chip_level(shape)
    if level == 2 and min(shape[0], shape[1]) >= LARGER_CHIPS_SIDE:
        return (2, 3)
    return (level,)


def tile_layout(key: bytes) -> TileLayout:
    """Derive the chip roles for a studio key (deterministic, HMAC-keyed).

    Examples
    --------
    >>> lay = tile_layout(b"k" * 32)
    >>> int(lay.pilot.sum()), int((lay.bit_index >= 0).sum())
    (512, 512)
    """
    n = TILE_CHIPS * TILE_CHIPS
    rng = keyed_generator(key, "tile-layout")
    order = rng.permutation(n)
    pilot = np.zeros(n, dtype=bool)
    pilot[order[: n // 2]] = True
    bit_index = np.full(n, -1, dtype=np.int32)
    data_pos = order[n // 2 :]
    bit_index[data_pos] = np.arange(data_pos.size, dtype=np.int32) % CODED_BITS
    signs = rng.integers(0, 2, size=n).astype(np.float32) * 2.0 - 1.0
    shape = (TILE_CHIPS, TILE_CHIPS)
    return TileLayout(pilot.reshape(shape), signs.reshape(shape), bit_index.reshape(shape))


def chip_values(layout: TileLayout, codeword: np.ndarray) -> np.ndarray:
    """The +/-1 value of every chip for one coded payload.

    Parameters
    ----------
    layout : TileLayout
    codeword : (CODED_BITS,) uint8 ndarray of 0/1

    Returns
    -------
    (T, T) float32 ndarray of +/-1.
    """
    cw = np.asarray(codeword, dtype=np.float32)
    if cw.shape != (CODED_BITS,):
        raise ValueError(f"codeword must have shape ({CODED_BITS},), got {cw.shape}")
    bit_sign = np.where(layout.pilot, 1.0, 2.0 * cw[np.maximum(layout.bit_index, 0)] - 1.0)
    return (layout.signs * bit_sign).astype(np.float32)


def carrier_tile(chips: np.ndarray, level: int) -> np.ndarray:
    """Spatial carrier of one tile: inverse DWT of the chips in the approximation band.

    Parameters
    ----------
    chips : (T, T) float ndarray
        Chip values (the approximation band at `level`).
    level : int
        DWT level, 1 to 5; chips become ``2**level`` px.

    Returns
    -------
    (T * 2**level, T * 2**level) float32 ndarray
        Periodic carrier with unit RMS.
    """
    if not 1 <= level <= 5:
        raise ValueError(f"level must be in [1, 5], got {level}")
    c = np.asarray(chips, dtype=np.float64)
    # zero detail bands passed as None: pywt then skips their filtering (the same tile,
    # in about half the time)
    coeffs: list = [c] + [(None, None, None)] * level
    tile = pywt.waverec2(coeffs, WAVELET, mode="periodization")
    rms = float(np.sqrt(np.mean(tile**2)))
    return (tile / rms).astype(np.float32)


@functools.lru_cache(maxsize=8)
def chip_bump(level: int) -> np.ndarray:
    """One chip's carrier: the tile of a single non-zero chip, chip (0, 0).

    Parameters
    ----------
    level : int
        DWT level, 1 to 5.

    Returns
    -------
    (T * 2**level, T * 2**level) float64 ndarray, read-only
        :func:`carrier_tile` of the chips that are all 0 but chip (0, 0), which is 1.
    """
    chips = np.zeros((TILE_CHIPS, TILE_CHIPS))
    chips[0, 0] = 1.0
    bump = carrier_tile(chips, level).astype(np.float64)
    bump.setflags(write=False)
    return bump
