"""The scripted scenario behind ``leaktrace demo`` (no typer here: the command prints).

Three vendors each receive marked copies of the bundled sample frames; one vendor's copy
of one frame "leaks" (downscaled to 1/2, JPEG 70, cropped to 80 % of the area) and is
traced back through the registry: the asset index finds the original it shows, the leak is
registered to it and compared with it (informed trace).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from watermark._attacks import crop, jpeg, rescale
from watermark.media import read_image, write_image
from watermark.samples import sample_frames
from watermark.studio import Studio, TraceRecord

__all__ = ["DEMO_VENDORS", "DemoResult", "leak", "run_demo"]

#: Vendors of the demo studio; the second one leaks.
DEMO_VENDORS: tuple[str, ...] = ("Northwind VFX", "Harbor Dubbing", "Kestrel Post")
_CULPRIT = 1
_LEAKED_FRAME = "morevna_sita_1920x1080.png"  # cel: flat fills, the hardest host
_LEAK_SEED = 2024  # fixed, so the demo is reproducible


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What happened in the demo.

    Attributes
    ----------
    deliveries : int
        Marked copies made.
    culprit : str
        Vendor whose copy leaked (the truth).
    leaked_copy : str
        Name of the frame that leaked.
    leak_shape : tuple of int
        (H, W) of the leaked image, in pixels.
    trace : TraceRecord
        Verdict of the trace.
    """

    deliveries: int
    culprit: str
    leaked_copy: str
    leak_shape: tuple[int, int]
    trace: TraceRecord

    @property
    def correct(self) -> bool:
        """True when the trace found a mark and named the culprit."""
        return self.trace.found and self.trace.vendor == self.culprit

    def summary(self) -> list[str]:
        """Human-readable result lines."""
        t = self.trace
        if t.error:
            verdict = f"trace: failed ({t.error})"
        elif t.found:
            how = f"{t.mode} trace" if t.mode else "trace"
            if t.mode == "informed" and t.source:
                how += f" against {Path(t.source).name}"
            verdict = (
                f"trace: vendor {t.vendor}, delivery {t.delivery_id}, "
                f"p-value {t.p_value:.1e}, scale {t.scale:.2f} ({how})"
            )
        else:
            verdict = f"trace: no mark found (p-value {t.p_value:.1e})"
        return [
            f"studio: {len(DEMO_VENDORS)} vendors, {self.deliveries} marked copies",
            f"leak: {self.culprit}'s copy of {self.leaked_copy}, downscaled 1/2, JPEG 70, "
            f"cropped to 80 % ({self.leak_shape[1]}x{self.leak_shape[0]} px)",
            verdict,
            "result: correct, the leak was traced to the right vendor"
            if self.correct
            else f"result: WRONG, the copy came from {self.culprit}",
        ]


def leak(image: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """Simulate a leak: downscale to 1/2, JPEG quality 70, crop to 80 % of the area.

    Parameters
    ----------
    image : (H, W[, C]) uint8 or uint16 ndarray
        RGB(A) order; alpha is dropped by the JPEG step.
    rng : numpy.random.Generator
        Draws the crop offset.

    Returns
    -------
    ndarray
        About ``(0.45 H, 0.45 W[, 3])``, same dtype.

    Examples
    --------
    >>> leak(np.zeros((200, 300, 3), np.uint8), rng=np.random.default_rng(0)).shape
    (89, 134, 3)
    """
    return crop(jpeg(rescale(image, 0.5), 70), 0.8, rng=rng)


def run_demo(workdir: Path, *, log: Callable[[str], None] | None = None) -> DemoResult:
    """Run the demo scenario in ``workdir`` (an empty folder; left for the caller to remove).

    Parameters
    ----------
    workdir : Path
        Scratch folder: the studio, originals, deliveries and the leak go there.
    log : callable, optional
        Receives progress lines.

    Returns
    -------
    DemoResult
    """
    say = log or (lambda line: None)
    originals = workdir / "originals"
    originals.mkdir(parents=True)
    for name, pixels in sample_frames():
        write_image(originals / name, pixels, format="png")
    with Studio.create(workdir / "studio") as studio:
        deliveries = 0
        for index, vendor in enumerate(DEMO_VENDORS):
            studio.add_vendor(vendor)
            records = studio.embed_files([originals], vendor, workdir / "delivered" / f"v{index}")
            deliveries += sum(r.status == "embedded" for r in records)
            say(f"marked {len(records)} frames for {vendor}")
        culprit = DEMO_VENDORS[_CULPRIT]
        copy = workdir / "delivered" / f"v{_CULPRIT}" / _LEAKED_FRAME
        leaked = leak(read_image(copy).pixels, rng=np.random.default_rng(_LEAK_SEED))
        leak_path = workdir / "leak.png"
        write_image(leak_path, leaked, format="png")
        say(f"leaked {culprit}'s copy of {_LEAKED_FRAME}; tracing it")
        (record,) = studio.trace_files([leak_path])
    return DemoResult(
        deliveries=deliveries,
        culprit=culprit,
        leaked_copy=_LEAKED_FRAME,
        leak_shape=(int(leaked.shape[0]), int(leaked.shape[1])),
        trace=record,
    )
