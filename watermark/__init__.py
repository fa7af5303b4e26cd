"""leaktrace: forensic watermarking and leak tracing of visual assets."""

from ._detect import Detection, detect_frame
from ._embed import EmbedResult, embed_frame

__all__ = ["Detection", "EmbedResult", "detect_frame", "embed_frame"]
__version__ = "0.1.0"
