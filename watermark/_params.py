"""Codec defaults and bounds, in one frozen table (library defaults, CLI and registry)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["CODEC_VERSION", "DEFAULT_PARAMS", "CodecParams"]

CODEC_VERSION = "lt1"


@dataclass(frozen=True, slots=True)
class CodecParams:
    """Embedding strength and masking, in grey levels of the 0..255 scale.

    Attributes
    ----------
    target_psnr : float
        Luma PSNR the mark aims at, in dB (strength 1); frames too flat to carry that much
        invisibly come out above it.
    flat_rms : float
        Mark RMS in flat regions, in grey levels: set by visibility on flat cel fills.
    knee : float
        Local activity (grey levels per pixel) that adds one gain unit of amplitude.
    ceiling_rms : float
        Largest mark RMS anywhere, in grey levels.
    min_ssim : float
        Luma SSIM (:func:`watermark._metrics.ssim_y`) the mark may bring a frame down to,
        predicted before marking (:mod:`watermark._ssim_budget`): a frame predicted below
        it has the mark's largest amplitudes capped, never under `flat_rms`. The
        prediction is at most 0.001 above the SSIM measured after marking, so frames come
        out at 0.98 or more; 0 turns the cap off.
    black_fade : float
        Grey level, in [0, 8], below which the mark fades toward black on flat pixels:
        a pixel of luma ``Y`` and activity ``a`` (grey levels per pixel) keeps
        ``min(1, (Y + a + 0.5) / black_fade)`` of its amplitude
        (:func:`watermark._mask.black_fade`). SSIM's luminance term counts a mark on
        near-black fills (letterbox bars, fades) heavily, while dark texture and ink
        lines keep all of it; 0 turns the fade off.
    """

    target_psnr: float = 43.0
    flat_rms: float = 1.0
    knee: float = 4.0
    ceiling_rms: float = 6.0
    min_ssim: float = 0.981
    black_fade: float = 8.0

    def to_dict(self) -> dict[str, float]:
        """Plain dict, for the registry."""
        return asdict(self)


DEFAULT_PARAMS = CodecParams()
