"""leaktrace: forensic watermarking and leak tracing of visual assets.

The pure core works on numpy arrays and a key (bytes); files and the studio registry live in
:mod:`watermark.media`, :mod:`watermark.registry` and :mod:`watermark.studio`.
"""

from ._attacks import ATTACKS, FOUNDATION_ATTACKS, Attack, apply_attack, attack_names
from ._detect import DEFAULT_CHIP_SIZES, Detection, detect_frame, leak_scale
from ._embed import EmbedResult, embed_frame, mark_pattern
from ._metrics import luma, psnr_y, ssim_y
from ._params import CODEC_VERSION, DEFAULT_PARAMS, CodecParams
from ._stats import false_alarm_probability, z_threshold
from ._temporal import ClipDetection, mark_frames, trace_frames
from .errors import DamagedImageError, LeaktraceError, MediaError, RegistryError, StudioError

__all__ = [
    "ATTACKS",
    "CODEC_VERSION",
    "DEFAULT_CHIP_SIZES",
    "DEFAULT_PARAMS",
    "FOUNDATION_ATTACKS",
    "Attack",
    "ClipDetection",
    "CodecParams",
    "DamagedImageError",
    "Detection",
    "EmbedResult",
    "LeaktraceError",
    "MediaError",
    "RegistryError",
    "StudioError",
    "apply_attack",
    "attack_names",
    "detect_frame",
    "embed_frame",
    "false_alarm_probability",
    "leak_scale",
    "luma",
    "mark_frames",
    "mark_pattern",
    "psnr_y",
    "ssim_y",
    "trace_frames",
    "z_threshold",
]
__version__ = "0.1.0"
