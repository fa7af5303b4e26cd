"""A studio: the secret key and the delivery registry in one home folder, and batch jobs.

A studio home holds ``secret.key`` (256 random bits, mode 0600, never stored in the
database) and ``registry.sqlite``. :meth:`Studio.embed_files` marks a batch of files for
one vendor and :meth:`Studio.trace_files` finds which delivery a leaked file comes from.

Crash safety of a batch: each marked file is written to a temporary file in its target
folder, the delivery is committed, and only then is the file renamed into place. A crash
can leave a committed delivery without its file (the batch, run again, re-marks it with
the same delivery id) but never a delivered file without its delivery.
"""

from __future__ import annotations

import math
import os
import secrets
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from ._detect import detect_frame, leak_scale
from ._embed import WEAK_MARGIN, embed_frame
from ._params import CODEC_VERSION, DEFAULT_PARAMS
from ._phash import perceptual_hash
from .errors import LeaktraceError, MediaError, StudioError
from .media import (
    discard_file,
    encode_image,
    iter_image_files,
    publish_file,
    read_image,
    stage_file,
)
from .registry import AssetInfo, DeliveryRecord, Registry, Vendor, format_delivery_id

__all__ = [
    "DEFAULT_HOME",
    "HOME_ENV",
    "JPEG_QUALITY",
    "REGISTRY_NAME",
    "SECRET_BYTES",
    "SECRET_NAME",
    "EmbedRecord",
    "ProgressCallback",
    "Studio",
    "TraceRecord",
    "resolve_home",
]

#: Environment variable naming the studio home when ``--home`` is not given.
HOME_ENV = "LEAKTRACE_HOME"
#: Studio home used when neither ``--home`` nor :data:`HOME_ENV` is set.
DEFAULT_HOME = Path(".leaktrace")
#: File names inside a studio home.
SECRET_NAME = "secret.key"
REGISTRY_NAME = "registry.sqlite"
#: Length of the studio secret, in bytes (256 bits).
SECRET_BYTES = 32
#: Quality of JPEG deliveries.
JPEG_QUALITY = 95

#: ``progress(done, total, path)``, called after each file of a batch.
ProgressCallback = Callable[[int, int, Path], None]


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The studio home: ``home`` if given, else ``$LEAKTRACE_HOME``, else ``./.leaktrace``.

    Examples
    --------
    >>> resolve_home("/srv/studio")
    PosixPath('/srv/studio')
    """
    if home is not None:
        return Path(home)
    env = os.environ.get(HOME_ENV, "")
    return Path(env) if env else DEFAULT_HOME


def _finite(value: float | None) -> float | None:
    """JSON-safe float: None for None, inf and nan."""
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True, slots=True)
class EmbedRecord:
    """Outcome of marking one file.

    Attributes
    ----------
    input : str
        The original file.
    output : str or None
        The marked copy (None when the output path could not be worked out).
    vendor : str
        Vendor name as registered.
    delivery_id : str or None
        8 hex digits; None when the file failed.
    psnr_y : float or None
        Luma PSNR of the mark in dB (None when skipped, failed or infinite).
    margin : float or None
        How much mark survives an ordinary leak of this frame, relative to what a verdict
        needs (see :class:`watermark.EmbedResult`); None when skipped or failed.
    status : str
        ``"embedded"``, ``"skipped"`` (already delivered by an earlier run) or ``"failed"``.
    error : str or None
        One-line reason when failed.
    """

    input: str
    output: str | None
    vendor: str
    delivery_id: str | None
    psnr_y: float | None
    status: str
    error: str | None = None
    margin: float | None = None

    @property
    def weak(self) -> bool:
        """True when the frame is too small or too flat to be traced reliably."""
        return self.margin is not None and self.margin < WEAK_MARGIN

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (non-finite floats become None)."""
        return {
            "input": self.input,
            "output": self.output,
            "vendor": self.vendor,
            "delivery_id": self.delivery_id,
            "psnr_y": _finite(self.psnr_y),
            "margin": _finite(self.margin),
            "weak": self.weak,
            "status": self.status,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """Verdict on one suspect file.

    Attributes
    ----------
    file : str
        The file examined.
    found : bool
        True when a registered mark was detected below the false-alarm threshold.
    vendor : str or None
        Vendor of the matching delivery.
    delivery_id : str or None
        8 hex digits of the detected payload.
    asset : str or None
        Original path of the delivered asset (its SHA-256 if no path is known).
    p_value : float or None
        False-alarm probability of the verdict: the chance that an unmarked image, or one
        carrying another delivery's mark, scores this high (None when unreadable).
    score : float or None
        Detection statistic (z-score).
    mark_p_value : float or None
        The chance that an image without this studio's mark scores this high: small when
        a studio mark is present even if no delivery could be named.
    scale : float or None
        Scale of the suspect relative to the delivered copy.
    error : str or None
        One-line reason the file could not be examined.
    """

    file: str
    found: bool
    vendor: str | None
    delivery_id: str | None
    asset: str | None
    p_value: float | None
    score: float | None
    scale: float | None
    error: str | None = None
    mark_p_value: float | None = None

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (non-finite floats become None)."""
        return {
            "file": self.file,
            "found": self.found,
            "vendor": self.vendor,
            "delivery_id": self.delivery_id,
            "asset": self.asset,
            "p_value": _finite(self.p_value),
            "score": _finite(self.score),
            "scale": _finite(self.scale),
            "mark_p_value": _finite(self.mark_p_value),
            "error": self.error,
        }


class Studio:
    """An open studio: its secret key and its registry (a context manager).

    Use :meth:`create` or :meth:`open`; the key is never shown by ``repr``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d, Studio.create(Path(d) / "s") as studio:
    ...     studio.add_vendor("Acme").name
    'Acme'
    """

    __slots__ = ("_key", "home", "registry")

    def __init__(self, home: Path, registry: Registry, key: bytes) -> None:
        self.home = home
        self.registry = registry
        self._key = key

    # -- life cycle

    @classmethod
    def create(cls, home: str | os.PathLike[str]) -> Studio:
        """Create a studio: the home folder, a fresh secret (mode 0600) and a registry.

        Raises
        ------
        StudioError
            A studio already exists there, or the folder / secret cannot be created.
        RegistryError
            The registry cannot be created (the secret is then removed).
        """
        home = Path(home)
        secret_path, registry_path = home / SECRET_NAME, home / REGISTRY_NAME
        if secret_path.exists() or registry_path.exists():
            raise StudioError(f"{home}: a studio already exists there")
        try:
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise StudioError(f"{home}: a studio already exists there") from None
        except OSError as exc:
            raise StudioError(f"{home}: cannot create a studio ({exc.strerror or exc})") from None
        key = secrets.token_bytes(SECRET_BYTES)
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(key)
                handle.flush()
                os.fsync(handle.fileno())
            registry = Registry.create(registry_path)
        except BaseException as exc:
            secret_path.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise StudioError(
                    f"{home}: cannot create a studio ({exc.strerror or exc})"
                ) from None
            raise
        return cls(home, registry, key)

    @classmethod
    def open(cls, home: str | os.PathLike[str]) -> Studio:
        """Open an existing studio.

        Raises
        ------
        StudioError
            No studio there, or its secret is unreadable or not 32 bytes.
        RegistryError
            The registry is missing, corrupt or of another schema version.
        """
        home = Path(home)
        secret_path = home / SECRET_NAME
        if not secret_path.exists():
            raise StudioError(
                f"{home}: no studio here (run `leaktrace init`, or pass --home / set {HOME_ENV})"
            )
        try:
            key = secret_path.read_bytes()
        except OSError as exc:
            raise StudioError(
                f"{secret_path}: cannot read the secret ({exc.strerror or exc})"
            ) from None
        if len(key) != SECRET_BYTES:
            raise StudioError(
                f"{secret_path}: corrupt secret ({len(key)} bytes, expected {SECRET_BYTES})"
            )
        return cls(home, Registry.open(home / REGISTRY_NAME), key)

    def close(self) -> None:
        """Close the registry."""
        self.registry.close()

    def __enter__(self) -> Studio:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Studio({str(self.home)!r})"

    # -- vendors

    def add_vendor(self, name: str) -> Vendor:
        """Register a vendor (see :meth:`Registry.add_vendor`)."""
        return self.registry.add_vendor(name)

    def list_vendors(self) -> list[Vendor]:
        """All vendors, sorted by name."""
        return self.registry.list_vendors()

    # -- embedding

    def embed_files(
        self,
        inputs: Iterable[str | os.PathLike[str]],
        vendor: str,
        out_dir: str | os.PathLike[str],
        *,
        strength: float = 1.0,
        progress: ProgressCallback | None = None,
    ) -> list[EmbedRecord]:
        """Mark files for one vendor, one delivery per file.

        Parameters
        ----------
        inputs : iterable of path-like
            Files and folders (walked recursively, see
            :func:`~watermark.media.iter_image_files`). Never modified.
        vendor : str
            A registered vendor.
        out_dir : path-like
            Output folder, created if missing. Each output is
            ``out_dir / <path relative to its input folder>`` (a file input:
            ``out_dir / <name>``), in the input's format (JPEG at quality 95).
        strength : float, optional
            Mark strength passed to the codec.
        progress : callable, optional
            ``progress(done, total, path)`` after each file.

        Returns
        -------
        list of EmbedRecord
            One per input file, in order. A file that fails gets ``status="failed"``
            and leaves no output, temporary file or registry row; the others go on.
            A file already delivered to this vendor at this output by an earlier run
            is ``"skipped"``. An existing output that is not that delivery is never
            overwritten (``"failed"``).

        Raises
        ------
        RegistryError
            Unknown vendor (checked before anything is written).
        StudioError
            No input files, two inputs mapping to one output, an output path that is
            an input file, or an output folder that cannot be created or written.
        """
        vendor_row = self.registry.get_vendor(vendor)
        out_root = Path(out_dir)
        pairs = iter_image_files(inputs, exclude=out_root)
        if not pairs:
            raise StudioError("no image files in the inputs")
        outputs = [out_root / rel for _, rel in pairs]
        input_keys = {path.resolve() for path, _ in pairs}
        output_keys = [out.resolve() for out in outputs]
        clashes = [key for key, count in Counter(output_keys).items() if count > 1]
        if clashes:
            sources = [
                str(p) for (p, _), key in zip(pairs, output_keys, strict=True) if key == clashes[0]
            ]
            raise StudioError(
                f"{clashes[0]}: several inputs map to this output ({', '.join(sources)})"
            )
        for (path, _), key in zip(pairs, output_keys, strict=True):
            if key in input_keys:
                raise StudioError(
                    f"{key}: output of {path} would overwrite an input file; choose another --out"
                )
        _prepare_out_dir(out_root)

        records: list[EmbedRecord] = []
        for index, ((path, _), out) in enumerate(zip(pairs, outputs, strict=True)):
            records.append(self._embed_one(path, out, vendor_row, strength))
            if progress is not None:
                progress(index + 1, len(pairs), path)
        return records

    def _embed_one(self, path: Path, out: Path, vendor: Vendor, strength: float) -> EmbedRecord:
        """Mark one file; every expected failure becomes a ``"failed"`` record."""
        try:
            image = read_image(path)
            output_key = str(out.resolve())
            previous = self.registry.find_delivery(image.sha256, vendor.name, output_key)
            if out.exists():
                if previous is not None:
                    return EmbedRecord(
                        str(path),
                        str(out),
                        vendor.name,
                        previous.delivery.delivery_id,
                        None,
                        "skipped",
                    )
                raise StudioError(_occupied_message(out, self.registry.deliveries_at(output_key)))
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StudioError(
                    f"{out.parent}: cannot create folder ({exc.strerror or exc})"
                ) from None
            # A delivery committed by a run that crashed before the rename keeps its id.
            payload = previous.delivery.payload if previous else self.registry.new_payload()
            result = embed_frame(image.pixels, self._key, payload, strength=strength)
            data = encode_image(result.image, format=image.format, jpeg_quality=JPEG_QUALITY)
            tmp = stage_file(out, data)
            try:
                if previous is None:
                    self.registry.add_delivery(
                        payload,
                        vendor=vendor.name,
                        asset=AssetInfo(
                            sha256=image.sha256,
                            original_path=str(path.resolve()),
                            width=image.shape[1],
                            height=image.shape[0],
                            phash=perceptual_hash(image.pixels),
                        ),
                        codec_version=CODEC_VERSION,
                        codec_params={"strength": strength, **DEFAULT_PARAMS.to_dict()},
                        output_path=output_key,
                    )
            except BaseException:
                discard_file(tmp)
                raise
            try:
                publish_file(tmp, out)
            except MediaError:
                if previous is None:
                    self.registry.delete_delivery(payload)
                raise
            except BaseException:
                discard_file(tmp)
                raise
        except LeaktraceError as exc:
            return EmbedRecord(str(path), str(out), vendor.name, None, None, "failed", str(exc))
        except (ValueError, TypeError) as exc:  # the codec refused this image
            message = f"{path}: {exc}"
            return EmbedRecord(str(path), str(out), vendor.name, None, None, "failed", message)
        return EmbedRecord(
            str(path),
            str(out),
            vendor.name,
            format_delivery_id(payload),
            result.psnr_y,
            "embedded",
            margin=result.margin,
        )

    # -- tracing

    def trace_files(
        self,
        inputs: Iterable[str | os.PathLike[str]],
        *,
        p_threshold: float = 1e-6,
        progress: ProgressCallback | None = None,
    ) -> list[TraceRecord]:
        """Look for registered marks in suspect files.

        Parameters
        ----------
        inputs : iterable of path-like
            Files and folders (walked recursively). Opened read-only.
        p_threshold : float, optional
            Accusation threshold on the false-alarm probability.
        progress : callable, optional
            ``progress(done, total, path)`` after each file.

        Returns
        -------
        list of TraceRecord
            One per file, in order; a file that cannot be read gets ``error`` set and
            ``found=False``, and the others are still traced.

        Raises
        ------
        StudioError
            No input files.
        """
        pairs = iter_image_files(inputs)
        if not pairs:
            raise StudioError("no image files in the inputs")
        candidates = self.registry.all_payloads()
        records: list[TraceRecord] = []
        for index, (path, _) in enumerate(pairs):
            records.append(self._trace_one(path, candidates, p_threshold))
            if progress is not None:
                progress(index + 1, len(pairs), path)
        return records

    def _trace_one(self, path: Path, candidates: np.ndarray, p_threshold: float) -> TraceRecord:
        """Trace one file; a read failure becomes a record with ``error`` set."""
        try:
            image = read_image(path)
            detection = detect_frame(
                image.pixels, self._key, candidates=candidates, p_threshold=p_threshold
            )
        except LeaktraceError as exc:
            return TraceRecord(str(path), False, None, None, None, None, None, None, str(exc))
        except (ValueError, TypeError) as exc:
            return TraceRecord(
                str(path), False, None, None, None, None, None, None, f"{path}: {exc}"
            )
        # A verdict names a registered delivery; an empty registry can accuse nobody.
        match = None
        if detection.found and detection.payload is not None and candidates.size:
            match = self.registry.lookup(int(detection.payload))
        if match is None:
            return TraceRecord(
                str(path),
                False,
                None,
                None,
                None,
                float(detection.p_value),
                float(detection.score),
                None,
                mark_p_value=float(detection.p_mark),
            )
        return TraceRecord(
            file=str(path),
            found=True,
            vendor=match.vendor.name,
            delivery_id=match.delivery.delivery_id,
            asset=match.asset.original_path or match.asset.sha256,
            p_value=float(detection.p_value),
            score=float(detection.score),
            # the codec finds the chip size in the leak; the original's size gives the scale
            scale=leak_scale(detection.chip_px, (match.asset.height, match.asset.width)),
            mark_p_value=float(detection.p_mark),
        )


def _occupied_message(out: Path, holders: list[DeliveryRecord]) -> str:
    """Why an existing output file is left alone."""
    if holders:
        last = holders[-1]
        owner = f"it holds delivery {last.delivery.delivery_id} for vendor {last.vendor.name!r}"
    else:
        owner = "it is not a delivery of this file to this vendor"
    return f"{out}: already exists and {owner}; not overwritten (choose another --out)"


def _prepare_out_dir(out_dir: Path) -> None:
    """Create the output folder and prove it writable, or raise StudioError."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StudioError(
            f"{out_dir}: cannot create output folder ({exc.strerror or exc})"
        ) from None
    try:
        discard_file(stage_file(out_dir / "probe", b""))
    except MediaError:
        raise StudioError(f"{out_dir}: output folder is not writable") from None
