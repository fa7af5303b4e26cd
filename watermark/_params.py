"""Codec defaults and bounds, in one frozen table (library defaults, CLI and registry)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["CODEC_VERSION", "CodecParams", "DEFAULT_PARAMS"]

CODEC_VERSION = "lt1"


@dataclass(frozen=True, slots=True)
class CodecParams:
    """Embedding strength and masking.

    Attributes
    ----------
    target_psnr : float
        Luma PSNR the mark aims at, in dB (strength 1).
    flat_rms : float
        Largest mark RMS allowed in flat regions, in grey levels (0..255 scale).
    floor, knee, ceiling : float
        Masking model, see :func:`watermark._mask.masking_map`.
    """

    target_psnr: float = 43.0
    flat_rms: float = 1.6
    floor: float = 0.25
    knee: float = 4.0
    ceiling: float = 3.0

    def to_dict(self) -> dict[str, float]:
        """Plain dict, for the registry."""
        return asdict(self)


DEFAULT_PARAMS = CodecParams()
