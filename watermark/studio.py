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

import contextlib
import dataclasses
import itertools
import json
import math
import multiprocessing
import os
import secrets
import shutil
import sqlite3
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import numpy as np

from . import __version__
from ._carrier import chip_level, chip_levels
from ._color import luma
from ._detect import Detection, detect_frame, leak_scale
from ._embed import WEAK_MARGIN, embed_frame
from ._features import Features, local_features
from ._index import AssetIndex
from ._informed import (
    LEAK_FEATURES,
    dense_features,
    index_features,
    register_features,
    trace_registered,
)
from ._keys import key_fingerprint
from ._params import CODEC_VERSION, DEFAULT_PARAMS
from ._phash import perceptual_hash
from ._register import Geometry, describe_homography, describe_tile_axes
from ._temporal import DEFAULT_MAX_FRAMES, seen_windows, trace_frames, window_length
from .clip import (
    VIDEO_EXTENSIONS,
    ClipFrame,
    MediaItem,
    find_media,
    iter_clip_frames,
    mark_sequence,
    probe_clip,
    sequence_digest,
    stage_marked_video,
    video_digest,
)
from .errors import DamagedImageError, LeaktraceError, MediaError, StudioError
from .evidence import DAMAGE_NOTE, ReportContext, evidence_report, trace_summary
from .media import (
    STAGED_NAME,
    LoadedImage,
    discard_file,
    encode_image,
    fsync_folder,
    iter_image_files,
    publish_new_file,
    read_image,
    resolved_path,
    stage_file,
)
from .registry import (
    SCHEMA_VERSION,
    Asset,
    AssetInfo,
    DeliveryRecord,
    Registry,
    Vendor,
    format_delivery_id,
    parse_delivery_id,
)

__all__ = [
    "BACKUP_MANIFEST",
    "DEFAULT_HOME",
    "HOME_ENV",
    "JPEG_QUALITY",
    "REGISTRY_NAME",
    "SECRET_BYTES",
    "SECRET_NAME",
    "AssetRecord",
    "EmbedRecord",
    "FrameProgressCallback",
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
#: The manifest :meth:`Studio.backup` writes beside them in a backup.
BACKUP_MANIFEST = "backup.json"
#: Length of the studio secret, in bytes (256 bits).
SECRET_BYTES = 32
#: Quality of JPEG deliveries.
JPEG_QUALITY = 95

#: ``progress(done, total, path)``, called after each file of a batch.
ProgressCallback = Callable[[int, int, Path], None]
#: ``frame_progress(done, total, name)``, called every few frames of a clip (total 0 when
#: unknown).
FrameProgressCallback = Callable[[int, int, str], None]
_FRAME_TICK = 8  # frames between two frame-progress calls while tracing a clip


def _clip_tick(
    frame_progress: FrameProgressCallback | None, name: str
) -> Callable[[int, int], None] | None:
    """`frame_progress` bound to one clip's name (None stays None)."""
    if frame_progress is None:
        return None
    return lambda done, total: frame_progress(done, total, name)


def asset_features(pixels: np.ndarray) -> Features:
    """The local features an original keeps in the asset index."""
    return index_features(luma(pixels))


def _index_row(pixels: np.ndarray, with_features: bool) -> tuple[bytes | None, int]:
    """What the registry keeps of an original besides its hash: its index features (when
    `with_features`, serialised) and its perceptual hash."""
    features = asset_features(pixels).to_bytes() if with_features else None
    return features, perceptual_hash(pixels)


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
        ``"embedded"``, ``"skipped"`` (already delivered by an earlier run) or ``"failed"``;
        from :meth:`Studio.plan_embed`, ``"planned"`` (would be marked) instead of
        ``"embedded"``.
    error : str or None
        One-line reason when failed.
    kind : str
        ``"image"``, ``"video"`` or ``"sequence"``.
    frames : int or None
        Frames marked (clips); None for a still or when skipped or failed. For a clip,
        `psnr_y` is the mean over its frames and `margin` the smallest of the frames
        sampled (one a second).
    """

    input: str
    output: str | None
    vendor: str
    delivery_id: str | None
    psnr_y: float | None
    status: str
    error: str | None = None
    margin: float | None = None
    kind: str = "image"
    frames: int | None = None

    @property
    def weak(self) -> bool:
        """True when the frame is too small, too flat or too close to white or black to be
        traced reliably."""
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
            "kind": self.kind,
            "frames": self.frames,
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
    mode : str or None
        Which decoder answered: ``"informed"`` (registered to an original and compared
        with it) or ``"blind"`` (the leak alone); None when unreadable.
    source : str or None
        The original the leak was registered to (informed mode), found in the asset index
        or given with ``original=``; set even when no mark was found in it.
    geometry : Geometry or None
        How the leak sits on that original (rotation, scale per axis, flip, offset). From
        the registration in informed mode; from the mark's tile grid after a blind verdict
        (the offset then known only modulo the tile, 32 chips).
    coverage : float or None
        Fraction of that original the leak shows.
    n_tests : float or None
        Hypotheses the p-value is corrected for (registrations or geometries, times the
        registered deliveries).
    notes : tuple of str
        What the trace could not use (an original that moved or changed, ...).
    frames : int or None
        Clips: frames pooled for the verdict (the trace stops at the first frame count
        that names a delivery); None for a still.
    seen : tuple of (float, float)
        Clips with a verdict: time ranges, in seconds from the clip's start, whose own
        frames show the verdict's mark (windows of a second or more, p <= 1e-3 each).
    sha256 : str or None
        Hex SHA-256 of the file's bytes (an image sequence: of its frames' digests, as
        the registry records a delivered sequence), naming exactly what was examined;
        None when it could not be read or for pixels traced without a file.
    report : str or None
        The evidence report written for it (:meth:`Studio.trace_files` with
        ``evidence=``), else None.
    size : (int, int) or None
        Width and height of the picture traced (a clip's frames), pixels; None when
        unreadable.
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
    mode: str | None = None
    source: str | None = None
    geometry: Geometry | None = None
    coverage: float | None = None
    n_tests: float | None = None
    notes: tuple[str, ...] = ()
    frames: int | None = None
    seen: tuple[tuple[float, float], ...] = ()
    sha256: str | None = None
    report: str | None = None
    size: tuple[int, int] | None = None

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
            "mode": self.mode,
            "source": self.source,
            "geometry": None if self.geometry is None else self.geometry.to_json(),
            "coverage": _finite(self.coverage),
            "n_tests": _finite(self.n_tests),
            "notes": list(self.notes),
            "error": self.error,
            "frames": self.frames,
            "seen": [[round(a, 3), round(b, 3)] for a, b in self.seen],
            "sha256": self.sha256,
            "report": self.report,
            "size": None if self.size is None else list(self.size),
        }


@dataclass(frozen=True, slots=True)
class AssetRecord:
    """Outcome of indexing one original (:meth:`Studio.add_assets`).

    Attributes
    ----------
    file : str
    asset_id : int or None
        Registry id; None when failed.
    features : int
        Local features stored for it (0 when it was already indexed or failed).
    status : str
        ``"indexed"``, ``"present"`` (already in the index) or ``"failed"``.
    error : str or None
    """

    file: str
    asset_id: int | None
    features: int
    status: str
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "file": self.file,
            "asset_id": self.asset_id,
            "features": self.features,
            "status": self.status,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class _Informed:
    detection: Detection
    source: Asset | None
    source_path: str
    geometry: Geometry
    coverage: float


@dataclass(frozen=True, slots=True)
class _Reference:
    """An original named by the user instead of found in the index."""

    luma: np.ndarray
    sha256: str | None
    path: str
    pixels: np.ndarray | None = None


# Indexed assets one informed trace may register the leak to: one, or a few near-duplicate
# originals (retakes, the frames of a hold or a slow pan), whose features all match. Only
# the mark tells a pan's frames apart, so each is decoded.
_INDEX_MATCHES = 4
# Registrations one informed trace may decode: those assets, each seen directly and
# mirrored. The p-value is always corrected for all of them.
_INDEX_REGISTRATIONS = 2 * _INDEX_MATCHES
_ORIGINAL_REGISTRATIONS = 2  # an original given by hand: direct and mirrored
# A direct registration this well supported (inliers, and share of the leak's features)
# makes the mirrored one pointless: it is skipped (the p-value still counts it).
# A registration found from the mark's delivery is reported only if the residual there
# shows the mark at this false-alarm probability (it is not another test of the verdict)
_LOCATE_P = 1e-4
_SURE_INLIERS = 60
_SURE_SHARE = 0.3
# Said on a blind record whose leak had hatching or screentone cut out before the decode:
# the pixels decoded are not the file's, which an expert reading the evidence should know.
_TEXTURE_CUT_NOTE = (
    "strong periodic texture (hatching or screentone) was cut out of the leak before the "
    "blind decode; the cut does not use the studio key, so the p-value holds as stated"
)


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
        if home.exists() and not home.is_dir():
            raise StudioError(f"{home}: not a folder (a file of that name is there)")
        if secret_path.exists() or registry_path.exists():
            raise StudioError(f"{home}: a studio already exists there")
        key = secrets.token_bytes(SECRET_BYTES)
        try:
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
            _write_secret(secret_path, key)
        except FileExistsError:
            raise StudioError(f"{home}: a studio already exists there") from None
        except OSError as exc:
            raise StudioError(f"{home}: cannot create a studio ({exc.strerror or exc})") from None
        try:
            registry = Registry.create(registry_path)
            registry.set_setting(_KEY_SETTING, key_fingerprint(key))
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
            No studio there, or its secret is unreadable, not 32 bytes, or not the one
            the registry's deliveries were marked with.
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
        registry = Registry.open(home / REGISTRY_NAME)
        try:
            _check_key(registry, key, secret_path)
        except BaseException:
            registry.close()
            raise
        return cls(home, registry, key)

    def status(self) -> dict[str, object]:
        """What the studio holds, as ``leaktrace status --json`` prints it.

        Keys: home, key_fingerprint (:func:`watermark._keys.key_fingerprint`; never the
        key), registry (its path), schema_version, integrity (:meth:`Registry.integrity`),
        vendors, deliveries, assets, indexed_assets (assets with local features for
        informed tracing; None when a damaged registry cannot be counted), secret_mode
        (the secret file's permission bits as octal text, or None off POSIX), leaktrace
        and codec (versions).
        """
        integrity = self.registry.integrity()
        counts: tuple[int | None, ...] = (None, None, None, None)
        try:
            counts = (
                len(self.registry.list_vendors()),
                self.registry.count_deliveries(),
                *self.registry.count_assets(),
            )
        except sqlite3.DatabaseError as exc:  # pages the quick check may not have reached
            if integrity == "ok":
                integrity = f"unreadable ({exc})"
        mode = self._secret_mode()
        return {
            "home": str(self.home),
            "key_fingerprint": key_fingerprint(self._key),
            "registry": str(self.home / REGISTRY_NAME),
            "schema_version": SCHEMA_VERSION,
            "integrity": integrity,
            "vendors": counts[0],
            "deliveries": counts[1],
            "assets": counts[2],
            "indexed_assets": counts[3],
            "secret_mode": None if mode is None else f"{mode:04o}",
            "leaktrace": __version__,
            "codec": CODEC_VERSION,
        }

    def secret_exposure(self) -> int | None:
        """The secret file's permission bits (e.g. ``0o644``) when users other than its
        owner may read or write it, else None (also where the file system has no such bits,
        or the file cannot be examined)."""
        mode = self._secret_mode()
        return mode if mode is not None and mode & 0o077 else None

    def _secret_mode(self) -> int | None:
        """The secret file's permission bits; None off POSIX or when it cannot be examined."""
        if os.name != "posix":
            return None
        try:
            return stat.S_IMODE((self.home / SECRET_NAME).stat().st_mode)
        except OSError:
            return None

    def backup(self, dest: str | os.PathLike[str]) -> dict[str, object]:
        """Copy the studio to a new folder that is itself a studio home.

        The folder holds ``secret.key`` (mode 0600, the folder 0700), one consistent
        snapshot of the registry (:meth:`Registry.copy_to`; safe while other processes
        mark or trace) and ``backup.json``, the manifest below. It is built beside `dest`
        under a hidden name, checked (opened as a studio: the same key fingerprint, an
        intact registry), fsynced and renamed into place, so `dest` appears whole or not
        at all. To restore, use the folder as the studio home (``--home``), or copy its
        ``secret.key`` and ``registry.sqlite`` into one. Whoever holds a backup holds the
        secret: keep it as private as the studio.

        Parameters
        ----------
        dest : path-like
            The backup folder; must not exist (missing folders above it are created).

        Returns
        -------
        dict
            backup (`dest` as given), then the manifest: created_at (UTC), source (this
            home, absolute), key_fingerprint, schema_version, vendors, deliveries, assets,
            indexed_assets (counted in the copy), registry_sha256 (of the copy's file),
            leaktrace and codec (versions).

        Raises
        ------
        StudioError
            `dest` exists or cannot be created, or the copy fails its check.
        """
        dest = Path(dest)
        if dest.exists() or dest.is_symlink():
            raise StudioError(f"{dest}: already exists; a backup goes to a new folder")
        created = _missing_folders([dest])
        stage: Path | None = None
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            stage = Path(
                tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
            )
            _write_secret(stage / SECRET_NAME, self._key)
            self.registry.copy_to(stage / REGISTRY_NAME)
            with Studio.open(stage) as copy:
                status = copy.status()
            if status["key_fingerprint"] != key_fingerprint(self._key):
                raise StudioError(f"{dest}: the copied secret does not match the studio's")
            if status["integrity"] != "ok":
                raise StudioError(
                    f"{dest}: the registry's copy fails its integrity check "
                    f"({status['integrity']}); run `leaktrace status` on the studio"
                )
            manifest: dict[str, object] = {
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "source": str(self.home.absolute()),
                **{
                    k: status[k]
                    for k in (
                        "key_fingerprint",
                        "schema_version",
                        "vendors",
                        "deliveries",
                        "assets",
                        "indexed_assets",
                    )
                },
                "registry_sha256": video_digest(stage / REGISTRY_NAME),
                "leaktrace": __version__,
                "codec": CODEC_VERSION,
            }
            with open(stage / BACKUP_MANIFEST, "x", encoding="utf-8") as handle:
                json.dump(manifest, handle, indent=2)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            fsync_folder(stage)
            os.rename(stage, dest)  # a folder that appeared meanwhile and holds files: refused
            stage = None
            fsync_folder(dest.parent)
        except OSError as exc:
            raise StudioError(f"{dest}: cannot write the backup ({exc.strerror or exc})") from None
        finally:
            if stage is not None:
                shutil.rmtree(stage, ignore_errors=True)
                _remove_empty_folders(created)
        return {"backup": str(dest), **manifest}

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

    def list_assets(self) -> list[tuple[Asset, bool, int]]:
        """Every original the registry knows, oldest first, with whether it is indexed for
        informed tracing and how many deliveries were made of it (see
        :meth:`Registry.list_assets`)."""
        return self.registry.list_assets()

    def list_deliveries(
        self, vendor: str | None = None, *, last: int | None = None
    ) -> list[DeliveryRecord]:
        """Every delivery, oldest first; only `vendor`'s, and only the `last` most recent,
        when given (see :meth:`Registry.list_deliveries`)."""
        return self.registry.list_deliveries(vendor, last=last)

    def iter_deliveries(
        self, vendor: str | None = None, *, last: int | None = None
    ) -> Iterator[DeliveryRecord]:
        """:meth:`list_deliveries` a few hundred at a time, for large registries (see
        :meth:`Registry.iter_deliveries`: consume it while the studio is open)."""
        return self.registry.iter_deliveries(vendor, last=last)

    def get_delivery(self, delivery_id: str) -> DeliveryRecord:
        """The delivery with this id (8 hex digits, as trace reports it).

        Raises
        ------
        StudioError
            `delivery_id` is not 8 hex digits, or no delivery has it.
        """
        try:
            payload = parse_delivery_id(delivery_id)
        except ValueError as exc:
            raise StudioError(str(exc)) from None
        record = self.registry.lookup(payload)
        if record is None:
            raise StudioError(f"no delivery {delivery_id.lower()} in this studio")
        return record

    # -- embedding

    def embed_files(
        self,
        inputs: Iterable[str | os.PathLike[str]],
        vendor: str,
        out_dir: str | os.PathLike[str],
        *,
        strength: float = 1.0,
        progress: ProgressCallback | None = None,
        codec: str | None = None,
        crf: int | None = None,
        preset: str | None = None,
        workers: int = 1,
        sequences: bool = True,
        frame_progress: FrameProgressCallback | None = None,
    ) -> list[EmbedRecord]:
        """Mark files for one vendor: one delivery per still, video file or sequence.

        Parameters
        ----------
        inputs : iterable of path-like
            Files and folders (walked recursively, see :func:`watermark.clip.find_media`):
            stills, video files, and numbered image sequences. Never modified.
        vendor : str
            A registered vendor.
        out_dir : path-like
            Output folder, created if missing (and the folders this call created are
            removed again if it leaves them empty). Each output is
            ``out_dir / <path relative to its input folder>`` (a file input:
            ``out_dir / <name>``), in the input's format (stills: JPEG at quality 95;
            sequence frames keep their names, format and bit depth; videos their
            container and codec family, see :func:`watermark.clip.mark_video`).
        strength : float, optional
            Mark strength passed to the codec.
        progress : callable, optional
            ``progress(done, total, path)`` after each input.
        codec, crf, preset : optional
            Video re-encoding overrides (see :func:`watermark.clip.mark_video`).
        workers : int, optional
            Threads marking the frames of a clip. Above 1, a still's index row (local
            features and perceptual hash) is computed in a second thread while this one
            marks and encodes it; files and registry rows are the same as with 1.
        sequences : bool, optional
            Group numbered image files into sequences (False: every file is a still).
        frame_progress : callable, optional
            ``frame_progress(done, total, name)`` every few frames of a clip.

        Returns
        -------
        list of EmbedRecord
            One per input, in order. An input that fails gets ``status="failed"``
            and leaves no output, temporary file or registry row; the others go on.
            An input already delivered to this vendor at this output by an earlier run
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
        items, outputs = _embed_targets(inputs, out_root, sequences)
        # folders this batch creates are taken away again if it leaves them empty (every
        # input in them failed): a refused batch leaves nothing behind
        new_folders = _missing_folders([out_root / "probe", *(o for outs in outputs for o in outs)])
        records: list[EmbedRecord] = []
        options = {"codec": codec, "crf": crf, "preset": preset, "workers": workers}
        # with workers, a still's index features (SIFT, as long as the marking and encoding
        # together) are computed in a second thread while this one marks it
        index_pool = ThreadPoolExecutor(1, "leaktrace-index") if workers > 1 else None
        try:
            _prepare_out_dir(out_root)
            _remove_stale_stages(outputs, time.time())
            for index, (item, outs) in enumerate(zip(items, outputs, strict=True)):
                if item.kind == "image":
                    records.append(
                        self._embed_one(item.path, outs[0], vendor_row, strength, index_pool)
                    )
                else:
                    tick = _clip_tick(frame_progress, item.name)
                    records.append(
                        self._embed_clip(item, outs, vendor_row, strength, options, tick)
                    )
                if progress is not None:
                    progress(index + 1, len(items), item.path)
        finally:
            if index_pool is not None:
                index_pool.shutdown(cancel_futures=True)
            _remove_empty_folders(new_folders)
        return records

    def plan_embed(
        self,
        inputs: Iterable[str | os.PathLike[str]],
        vendor: str,
        out_dir: str | os.PathLike[str],
        *,
        sequences: bool = True,
    ) -> list[EmbedRecord]:
        """What :meth:`embed_files` would do, without marking, writing or registering.

        Each input is found, hashed (not decoded) and looked up, as a batch would:
        ``"planned"`` (with the delivery id a crashed run committed, if any), ``"skipped"``
        (already delivered there) or ``"failed"`` (its output exists and is not this
        delivery, or it cannot be read). A file that cannot be decoded still shows as
        planned: only marking decodes it.

        Raises
        ------
        RegistryError, StudioError
            As :meth:`embed_files`, before anything else: unknown vendor, no inputs, two
            inputs for one output, an output over an input.
        """
        vendor_row = self.registry.get_vendor(vendor)
        items, outputs = _embed_targets(inputs, Path(out_dir), sequences)
        return [
            self._plan_one(item, outs, vendor_row)
            for item, outs in zip(items, outputs, strict=True)
        ]

    def _plan_one(self, item: MediaItem, outs: tuple[Path, ...], vendor: Vendor) -> EmbedRecord:
        """One input's fate in a batch, from its hash and the registry."""
        sequence = item.kind == "sequence"
        out_name = str(outs[0].parent / Path(item.name).name) if sequence else str(outs[0])
        try:
            if sequence:
                sha = sequence_digest(video_digest(p) for p in item.frames)
            else:
                sha = video_digest(item.path)  # the SHA-256 of the file's bytes
            output_key = str(Path(out_name).resolve())
            previous = self.registry.find_delivery(sha, vendor.name, output_key)
            done = self._delivered_already(outs, previous, output_key)
        except LeaktraceError as exc:
            return EmbedRecord(
                item.name, out_name, vendor.name, None, None, "failed", str(exc), kind=item.kind
            )
        delivery_id = None if previous is None else previous.delivery.delivery_id
        status = "skipped" if done else "planned"
        return EmbedRecord(
            item.name, out_name, vendor.name, delivery_id, None, status, kind=item.kind
        )

    def _delivered_already(
        self, outs: tuple[Path, ...], previous: DeliveryRecord | None, output_key: str
    ) -> bool:
        """Whether an item's outputs on disk are its delivery from an earlier run (skip it);
        raise StudioError when one is there and is not (never overwritten)."""
        present = [o for o in outs if os.path.lexists(o)]  # a dangling link too
        if present and previous is None:
            raise StudioError(
                _occupied_message(present[0], self.registry.deliveries_at(output_key))
            )
        return previous is not None and len(present) == len(outs)

    def _embed_clip(
        self,
        item: MediaItem,
        outs: tuple[Path, ...],
        vendor: Vendor,
        strength: float,
        options: dict[str, object],
        tick: Callable[[int, int], None] | None,
    ) -> EmbedRecord:
        """Mark one video or sequence; every expected failure becomes a ``"failed"`` record."""
        if item.kind == "sequence":
            out_name = str(outs[0].parent / Path(item.name).name)
        else:
            out_name = str(outs[0])

        def failed(message: str) -> EmbedRecord:
            return EmbedRecord(
                item.name, out_name, vendor.name, None, None, "failed", message, kind=item.kind
            )

        try:
            info = probe_clip(item)
            if item.kind == "sequence":
                sha = sequence_digest(video_digest(p) for p in item.frames)
                output_key = str(Path(out_name).resolve())
            else:
                sha = video_digest(item.path)
                output_key = str(outs[0].resolve())
            previous = self.registry.find_delivery(sha, vendor.name, output_key)
            if self._delivered_already(outs, previous, output_key):
                assert previous is not None
                return EmbedRecord(
                    item.name,
                    out_name,
                    vendor.name,
                    previous.delivery.delivery_id,
                    None,
                    "skipped",
                    kind=item.kind,
                )
            try:
                outs[0].parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StudioError(
                    f"{outs[0].parent}: cannot create folder ({exc.strerror or exc})"
                ) from None
            payload = previous.delivery.payload if previous else self.registry.new_payload()
            if item.kind == "sequence":
                report, staged, _ = mark_sequence(
                    item,
                    outs,
                    self._key,
                    payload,
                    strength=strength,
                    workers=int(options["workers"]),  # type: ignore[call-overload]
                    jpeg_quality=JPEG_QUALITY,
                    progress=tick,
                )
            else:
                report, tmp = stage_marked_video(
                    item.path,
                    outs[0],
                    self._key,
                    payload,
                    strength=strength,
                    progress=tick,
                    **options,  # type: ignore[arg-type]
                )
                staged = [tmp]
            head = iter_clip_frames(item, max_frames=1)
            try:
                first = next(head).pixels
            finally:
                head.close()
            asset = AssetInfo(
                sha256=sha,
                original_path=str(
                    (item.path if item.kind == "video" else Path(item.name)).resolve()
                ),
                width=info.width,
                height=info.height,
                phash=perceptual_hash(first),
                features=None,  # clips are traced blind (pooled); the index holds stills
            )
            try:
                if previous is None:
                    self.registry.add_delivery(
                        payload,
                        vendor=vendor.name,
                        asset=asset,
                        codec_version=CODEC_VERSION,
                        codec_params={
                            "strength": strength,
                            "chip_level": chip_level((info.height, info.width)),
                            "video_codec": report.codec,
                            **DEFAULT_PARAMS.to_dict(),
                        },
                        output_path=output_key,
                    )
            except BaseException:
                for tmp in staged:
                    discard_file(tmp)
                raise
            published: list[Path] = []
            try:
                for n, (tmp, out) in enumerate(zip(staged, outs, strict=True)):
                    try:
                        _publish_output(tmp, out)
                    except BaseException:
                        for rest in staged[n + 1 :]:
                            discard_file(rest)
                        raise
                    published.append(out)
            except MediaError:
                if previous is None:  # a delivery that never was: no frame of it stays
                    for out in published:
                        out.unlink(missing_ok=True)
                    self.registry.delete_delivery(payload)
                raise
        except LeaktraceError as exc:
            return failed(str(exc))
        except (ValueError, TypeError) as exc:
            return failed(f"{item.name}: {exc}")
        return EmbedRecord(
            item.name,
            out_name,
            vendor.name,
            format_delivery_id(payload),
            _finite(report.psnr_y),
            "embedded",
            margin=report.margin,
            kind=item.kind,
            frames=report.frames,
        )

    def _embed_one(
        self,
        path: Path,
        out: Path,
        vendor: Vendor,
        strength: float,
        index_pool: ThreadPoolExecutor | None = None,
    ) -> EmbedRecord:
        """Mark one file; every expected failure becomes a ``"failed"`` record. With
        `index_pool`, the original's index row is computed there meanwhile."""
        try:
            image = read_image(path, markable=True)
            output_key = str(out.resolve())
            previous = self.registry.find_delivery(image.sha256, vendor.name, output_key)
            if self._delivered_already((out,), previous, output_key):
                assert previous is not None
                return EmbedRecord(
                    str(path),
                    str(out),
                    vendor.name,
                    previous.delivery.delivery_id,
                    None,
                    "skipped",
                )
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StudioError(
                    f"{out.parent}: cannot create folder ({exc.strerror or exc})"
                ) from None
            index_row: Future[tuple[bytes | None, int]] | None = None
            if index_pool is not None and previous is None:
                wanted = not self.registry.has_features(image.sha256)
                index_row = index_pool.submit(_index_row, image.pixels, wanted)
            # A delivery committed by a run that crashed before the rename keeps its id.
            payload = previous.delivery.payload if previous else self.registry.new_payload()
            result = embed_frame(image.pixels, self._key, payload, strength=strength)
            data = encode_image(
                result.image,
                format=image.format,
                jpeg_quality=JPEG_QUALITY,
                metadata=image.metadata,
                jpeg_sampling=image.jpeg_sampling,
            )
            tmp = stage_file(out, data)
            try:
                if previous is None:
                    self.registry.add_delivery(
                        payload,
                        vendor=vendor.name,
                        asset=self._asset_info(
                            image, path, None if index_row is None else index_row.result()
                        ),
                        codec_version=CODEC_VERSION,
                        codec_params={
                            "strength": strength,
                            "chip_level": result.level,
                            **DEFAULT_PARAMS.to_dict(),
                        },
                        output_path=output_key,
                    )
            except BaseException:
                discard_file(tmp)
                raise
            try:
                _publish_output(tmp, out)
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
            _finite(result.psnr_y),
            "embedded",
            margin=result.margin,
        )

    # -- tracing

    def _asset_info(
        self, image: LoadedImage, path: Path, row: tuple[bytes | None, int] | None = None
    ) -> AssetInfo:
        """Registry row of an original, with its index features unless already indexed;
        `row` is :func:`_index_row`'s result when it was computed already."""
        if row is None:
            row = _index_row(image.pixels, not self.registry.has_features(image.sha256))
        features, phash = row
        return AssetInfo(
            sha256=image.sha256,
            original_path=str(path.resolve()),
            width=image.shape[1],
            height=image.shape[0],
            phash=phash,
            features=features,
        )

    # -- the asset index

    def add_assets(
        self,
        inputs: Iterable[str | os.PathLike[str]],
        *,
        progress: ProgressCallback | None = None,
    ) -> list[AssetRecord]:
        """Index originals that were delivered outside leaktrace (or never delivered).

        A leak of an indexed original is then registered to it and compared with it: an
        unmarked original is recognised as such ("no vendor"), not guessed at blind.

        Parameters
        ----------
        inputs : iterable of path-like
            Files and folders (walked recursively). Never modified.
        progress : callable, optional
            ``progress(done, total, path)`` after each file.

        Returns
        -------
        list of AssetRecord
            One per file; unreadable files are ``"failed"`` and the others go on.

        Raises
        ------
        StudioError
            No input files.
        """
        pairs = iter_image_files(inputs)
        if not pairs:
            raise StudioError("no image files in the inputs")
        records: list[AssetRecord] = []
        for done, (path, _) in enumerate(pairs, start=1):
            try:
                image = read_image(path, single=True)
                present = self.registry.has_features(image.sha256)
                info = self._asset_info(image, path)
                asset = self.registry.add_asset(info, pinned=True)
                n = (
                    0
                    if present or info.features is None
                    else len(Features.from_bytes(info.features))
                )
                records.append(
                    AssetRecord(str(path), asset.id, n, "present" if present else "indexed")
                )
            except LeaktraceError as exc:
                records.append(AssetRecord(str(path), None, 0, "failed", str(exc)))
            except (ValueError, TypeError) as exc:
                records.append(AssetRecord(str(path), None, 0, "failed", f"{path}: {exc}"))
            if progress is not None:
                progress(done, len(pairs), path)
        return records

    def load_index(self) -> AssetIndex:
        """The asset index, read from the registry."""
        return AssetIndex.build(
            (asset_id, (h, w), Features.from_bytes(blob))
            for asset_id, h, w, blob in self.registry.indexed_assets()
        )

    # -- tracing

    def trace_files(
        self,
        inputs: Iterable[str | os.PathLike[str]],
        *,
        original: str | os.PathLike[str] | None = None,
        informed: bool = True,
        p_threshold: float = 1e-6,
        progress: ProgressCallback | None = None,
        max_frames: int = DEFAULT_MAX_FRAMES,
        frame_progress: FrameProgressCallback | None = None,
        damaged: bool = False,
        evidence: str | os.PathLike[str] | None = None,
        workers: int = 1,
    ) -> list[TraceRecord]:
        """Look for registered marks in suspect files, stills and clips.

        Each leak is first matched against the asset index (or against `original`),
        registered to the original it shows and compared with it (informed mode); when
        no original is recognised, or no mark is found that way, the leak is decoded
        blind. Both tests are counted in the p-value (it is doubled when both could run).

        Parameters
        ----------
        inputs : iterable of path-like
            Files and folders (walked recursively). Opened read-only.
        original : path-like, optional
            The original the leaks come from, instead of looking it up in the index.
        informed : bool, optional
            False: blind decoding only.
        p_threshold : float, optional
            Accusation threshold on the false-alarm probability.
        progress : callable, optional
            ``progress(done, total, path)`` after each file.
        max_frames : int, optional
            Frames of a clip (video file or image sequence) pooled at most. A clip is
            traced blind by pooling its frames (:func:`watermark._temporal.trace_frames`),
            stopping at the first look that names a delivery; then the windows of the
            clip that show that mark are listed (``seen``).
        frame_progress : callable, optional
            ``frame_progress(done, total, name)`` every few frames a clip's trace has
            read (both passes: pooling, then the windows of ``seen``).
        damaged : bool, optional
            Trace what libjpeg recovers of a damaged JPEG still (cut short, or with
            corrupt data) instead of refusing it; its record says so in ``notes`` (see
            :func:`watermark.media.read_image`). The lost blocks are flat grey filler or
            garbled blocks, neither of which holds a mark, so the p-value keeps its
            meaning. Other damaged files are refused either way.
        evidence : path-like, optional
            Folder (created if missing; checked writable before any trace) to write one
            Markdown evidence report into per file examined, as soon as it is traced
            (:func:`watermark.evidence.evidence_report`):
            ``<name>.<first 12 hex of its SHA-256>.<UTC time>.md``, never over an existing
            file; its path is the record's ``report``.
        workers : int, optional
            Processes tracing files side by side (1: this one). Each opens the studio and
            loads the index once, then traces whole files; the records are the same as with
            1 and come back in order (reports and progress are this process's). Worth it
            for batches of several files; a clip's per-frame progress is not reported then.
            The processes are spawned, so a script calling this with workers > 1 needs the
            usual ``if __name__ == "__main__":`` guard.

        Returns
        -------
        list of TraceRecord
            One per file or sequence, in order; one that cannot be read gets ``error``
            set and ``found=False``, and the others are still traced.

        Raises
        ------
        StudioError
            No input files, or a bad `max_frames`, `workers` or `p_threshold`.
        MediaError
            `original` cannot be read.
        """
        items = find_media(inputs)
        if not items:
            raise StudioError("no image, video or sequence files in the inputs")
        if max_frames < 1:
            raise StudioError(f"max_frames must be >= 1, got {max_frames}")
        if workers < 1:
            raise StudioError(f"workers must be >= 1, got {workers}")
        _check_threshold(p_threshold, StudioError)
        reference = None
        if original is not None:
            loaded = read_image(original, single=True)
            reference = _Reference(
                luma(loaded.pixels), loaded.sha256, str(loaded.path), loaded.pixels
            )
        report_dir = None if evidence is None else Path(evidence)
        new_folders = [] if report_dir is None else _missing_folders([report_dir / "probe"])
        try:
            if report_dir is not None:
                _prepare_out_dir(report_dir)
            job = _TraceJob(
                str(self.home),
                informed,
                None if original is None else str(original),
                p_threshold,
                max_frames,
                damaged,
            )
            records: list[TraceRecord] = []
            for done, (item, record) in enumerate(
                self._traced(items, job, reference, workers, frame_progress), start=1
            ):
                if report_dir is not None and record.error is None:
                    # stamped when this file's trace is done, not when the batch began
                    traced_at = datetime.now(UTC).isoformat(timespec="seconds")
                    path = self._write_evidence(record, item, report_dir, traced_at, p_threshold)
                    record = dataclasses.replace(record, report=str(path))
                records.append(record)
                if progress is not None:
                    progress(done, len(items), item.path)
        finally:
            _remove_empty_folders(new_folders)
        return records

    def _traced(
        self,
        items: list[MediaItem],
        job: _TraceJob,
        reference: _Reference | None,
        workers: int,
        frame_progress: FrameProgressCallback | None,
    ) -> Iterator[tuple[MediaItem, TraceRecord]]:
        """Each item with its record, in order: traced here, or by `workers` processes."""
        if workers > 1 and len(items) > 1:
            # spawned, not forked: the parent may run threads (a progress bar) whose locks
            # a fork would copy held
            context = multiprocessing.get_context("spawn")
            pool = ProcessPoolExecutor(
                min(workers, len(items)),
                mp_context=context,
                initializer=_start_trace_worker,
                initargs=(job,),
            )
            try:
                yield from zip(items, pool.map(_trace_in_worker, items), strict=True)
            finally:  # stopped early (an error, Ctrl-C): the files not begun are dropped
                pool.shutdown(wait=True, cancel_futures=True)
            return
        informed = job.informed and reference is None
        index = self.load_index() if informed else AssetIndex.build(())
        candidates = self.registry.all_payloads()
        for item in items:
            tick = _clip_tick(frame_progress, item.name)
            yield item, self._trace_item(item, job, candidates, index, reference, tick)

    def _trace_item(
        self,
        item: MediaItem,
        job: _TraceJob,
        candidates: np.ndarray,
        index: AssetIndex,
        reference: _Reference | None,
        tick: Callable[[int, int], None] | None = None,
    ) -> TraceRecord:
        """Trace one still or clip; a read failure becomes a record with ``error`` set."""
        if item.kind == "image":
            return self._trace_one(
                item.path, candidates, job.p_threshold, index, reference, job.damaged
            )
        return self._trace_clip(item, candidates, job.p_threshold, job.max_frames, tick)

    def _write_evidence(
        self,
        record: TraceRecord,
        item: MediaItem,
        folder: Path,
        traced_at: str,
        p_threshold: float,
    ) -> Path:
        """Write `record`'s evidence report into `folder` (atomically, never over a file)."""
        delivery = None
        if record.found and record.delivery_id is not None:
            delivery = self.registry.lookup(parse_delivery_id(record.delivery_id))
        size = None
        if item.kind != "sequence":
            with contextlib.suppress(OSError):
                size = item.path.stat().st_size
        context = dataclasses.replace(
            self._report_context(traced_at, p_threshold),
            file_bytes=size,
            location=str(Path(item.name).resolve()),
        )
        # a file name that is not UTF-8 is written with its odd bytes escaped
        text = evidence_report(record, delivery, context).encode(errors="backslashreplace")
        stem = f"{Path(item.name).name}.{(record.sha256 or 'unhashed')[:12]}.{_stamp(traced_at)}"
        return _write_new_file(folder, stem, text)

    def write_trace_summary(
        self,
        records: Sequence[TraceRecord],
        folder: str | os.PathLike[str],
        *,
        p_threshold: float = 1e-6,
    ) -> Path:
        """Write the Markdown index of a batch of trace records into `folder`, beside
        their evidence reports (:func:`watermark.evidence.trace_summary`):
        ``summary.<UTC time>.md``, never over an existing file.

        Raises
        ------
        StudioError
            The folder cannot be created or written.
        """
        folder = Path(folder)
        new_folders = _missing_folders([folder / "probe"])
        try:
            _prepare_out_dir(folder)
            now = datetime.now(UTC).isoformat(timespec="seconds")
            context = self._report_context(now, p_threshold)
            text = trace_summary(records, context).encode(errors="backslashreplace")
            return _write_new_file(folder, f"summary.{_stamp(now)}", text)
        finally:
            _remove_empty_folders(new_folders)

    def _report_context(self, traced_at: str, p_threshold: float) -> ReportContext:
        return ReportContext(
            traced_at=traced_at,
            software=f"leaktrace {__version__}, codec {CODEC_VERSION}",
            studio=str(self.home),
            p_threshold=p_threshold,
            key_fingerprint=key_fingerprint(self._key),
        )

    def _trace_clip(
        self,
        item: MediaItem,
        candidates: np.ndarray,
        p_threshold: float,
        max_frames: int,
        tick: Callable[[int, int], None] | None = None,
    ) -> TraceRecord:
        """Trace a video or sequence by pooling its frames; errors become a record."""
        shape: list[tuple[int, int]] = []
        total = [0]

        def pixels(frames: Iterable[ClipFrame], times: list[float] | None) -> Iterator[np.ndarray]:
            n = 0
            for n, f in enumerate(frames, start=1):
                if not shape:
                    shape.append(f.pixels.shape[:2])
                if times is not None:
                    times.append(f.time)
                if tick is not None and n % _FRAME_TICK == 0:
                    tick(n, total[0])
                yield f.pixels
            if tick is not None:
                tick(n, n)

        try:
            info = probe_clip(item)
            total[0] = min(info.frames or max_frames, max_frames)
            frames = iter_clip_frames(item, max_frames=max_frames)
            try:
                clip = trace_frames(
                    pixels(frames, None),
                    self._key,
                    candidates=candidates,
                    p_threshold=p_threshold,
                    max_frames=max_frames,
                )
            finally:
                frames.close()
            detection = dataclasses.replace(
                clip.detection, p_value=clip.p_value, p_mark=clip.p_mark, n_tests=clip.n_tests
            )
            notes = [
                f"clip traced blind on its first {clip.frames_used} frame(s) pooled "
                f"({clip.looks} looks x {clip.pools} pools counted in the p-value, this "
                f"look holding {clip.share:.3g} of its false-alarm budget)"
            ]
            seen: tuple[tuple[float, float], ...] = ()
            if clip.found and clip.payload is not None:
                span = min(info.frames or clip.frames_used, max_frames)
                times: list[float] = []
                ranges = seen_windows(
                    pixels(iter_clip_frames(item, max_frames=max_frames), times),
                    self._key,
                    clip.payload,
                    window=window_length(span, info.fps),
                    max_frames=max_frames,
                )
                step = 1.0 / info.fps if info.fps > 0 else 0.0
                seen = tuple((times[a], times[b] + step) for a, b in ranges)
            record = self._record(
                item.name, detection, 1, None, notes, blind=True, leak_shape=shape[0]
            )
            sha = (
                video_digest(item.path)
                if item.kind == "video"
                else sequence_digest(video_digest(p) for p in item.frames)
            )
            return dataclasses.replace(
                record,
                frames=clip.frames_used,
                seen=seen,
                sha256=sha,
                size=(shape[0][1], shape[0][0]),
            )
        except LeaktraceError as exc:
            return TraceRecord(item.name, False, None, None, None, None, None, None, str(exc))
        except (ValueError, TypeError) as exc:
            return TraceRecord(
                item.name, False, None, None, None, None, None, None, f"{item.name}: {exc}"
            )

    def trace_image(
        self,
        pixels: np.ndarray,
        *,
        name: str = "<array>",
        original: np.ndarray | None = None,
        informed: bool = True,
        index: AssetIndex | None = None,
        p_threshold: float = 1e-6,
    ) -> TraceRecord:
        """Trace one leaked image held in memory (see :meth:`trace_files`).

        Parameters
        ----------
        pixels : (H, W[, C]) ndarray
            The leak, RGB(A) order, uint8 / uint16 / float32 in [0, 1].
        name : str
            What to call it in the record.
        original : ndarray, optional
            The studio original it comes from, instead of looking it up in the index.
        informed : bool
            False: blind decoding only.
        index : AssetIndex, optional
            The asset index (:meth:`load_index`), to trace many images without reloading.
        p_threshold : float
            Accusation threshold on the false-alarm probability.

        Raises
        ------
        TypeError, ValueError
            `pixels` or `original` is not an image array, or `p_threshold` is not in
            (0, 1).
        """
        _check_threshold(p_threshold, ValueError)
        reference = None
        if original is not None:
            arr = np.asarray(original)
            reference = _Reference(luma(arr), None, "<original>", arr)
        if index is None:
            index = self.load_index() if informed and reference is None else AssetIndex.build(())
        candidates = self.registry.all_payloads()
        notes: list[str] = []
        return self._trace_pixels(pixels, name, candidates, p_threshold, index, reference, notes)

    def _trace_one(
        self,
        path: Path,
        candidates: np.ndarray,
        p_threshold: float,
        index: AssetIndex,
        reference: _Reference | None,
        damaged: bool = False,
    ) -> TraceRecord:
        """Trace one file; a read failure becomes a record with ``error`` set."""
        notes: list[str] = []
        try:
            image = read_image(path, damaged=damaged)
            if image.damage:
                notes.append(
                    f"{DAMAGE_NOTE} (the decoder reports: {image.damage}); "
                    "what it recovered was traced"
                )
            if image.pictures > 1:
                notes.append(f"only the first of the file's {image.pictures} pictures was traced")
            record = self._trace_pixels(
                image.pixels, str(path), candidates, p_threshold, index, reference, notes
            )
            height, width = image.shape
            return dataclasses.replace(record, sha256=image.sha256, size=(width, height))
        except DamagedImageError as exc:  # refused, but what survives can be traced
            message = f"{exc}; --damaged-ok traces the part that decodes"
            return TraceRecord(str(path), False, None, None, None, None, None, None, message)
        except LeaktraceError as exc:
            return TraceRecord(str(path), False, None, None, None, None, None, None, str(exc))
        except (ValueError, TypeError) as exc:
            return TraceRecord(
                str(path), False, None, None, None, None, None, None, f"{path}: {exc}"
            )

    def _trace_pixels(
        self,
        pixels: np.ndarray,
        name: str,
        candidates: np.ndarray,
        p_threshold: float,
        index: AssetIndex,
        reference: _Reference | None,
        notes: list[str],
    ) -> TraceRecord:
        """Informed trace (when an original can be found), else blind; one record."""
        modes = 2 if (reference is not None or len(index)) else 1
        threshold = p_threshold / modes
        informed = None
        leak_y = luma(pixels) if modes == 2 else None
        # originals read in this trace, by asset id (None: unavailable, already noted)
        originals: dict[int, tuple[np.ndarray, np.ndarray] | None] = {}
        if leak_y is not None:
            informed = self._trace_informed(
                leak_y, index, reference, candidates, threshold, notes, originals
            )
            if informed is None and reference is not None:
                notes.append(
                    f"the original given ({reference.path}) could not be registered to the "
                    "leak (too few consistent feature matches): not used; decoded blind"
                )
            if informed is not None and informed.detection.found:
                if reference is None:
                    informed = self._relocate(
                        leak_y, informed, candidates, threshold, notes, originals
                    )
                else:
                    self._note_other_original(informed.detection, reference, notes)
                return self._record(name, informed.detection, modes, informed, notes)
        detection = detect_frame(pixels, self._key, candidates=candidates, p_threshold=threshold)
        if not detection.found and informed is not None:
            # the leak is a known original without a mark of ours: that is the answer
            return self._record(name, informed.detection, modes, informed, notes)
        if detection.found and leak_y is not None and reference is None:
            informed = self._locate_source(
                leak_y, detection, informed, candidates, threshold, notes, originals
            )
        return self._record(
            name, detection, modes, informed, notes, blind=True, leak_shape=pixels.shape[:2]
        )

    def _relocate(
        self,
        leak_y: np.ndarray,
        informed: _Informed,
        candidates: np.ndarray,
        p_threshold: float,
        notes: list[str],
        originals: dict[int, tuple[np.ndarray, np.ndarray] | None],
    ) -> _Informed:
        """An informed verdict reached through a near-duplicate of its delivery's original
        (a retake, a retouched version: the mark reads through either) is reported where
        it lies in the delivery's own original. The verdict stays the one reached."""
        payload = informed.detection.payload
        match = None if payload is None else self.registry.lookup(int(payload))
        if match is None or informed.source is None or informed.source.id == match.asset.id:
            return informed
        located = self._locate_source(
            leak_y,
            informed.detection,
            None,
            candidates,
            p_threshold,
            notes,
            originals,
            reason=(
                f"the leak was first registered to a near-duplicate original, "
                f"{informed.source.original_path or informed.source.sha256}"
            ),
        )
        if located is None:
            return informed
        return dataclasses.replace(located, detection=informed.detection)

    def _note_other_original(
        self, detection: Detection, reference: _Reference, notes: list[str]
    ) -> None:
        """Say so when the mark read through an original given by hand names a delivery of
        another original (a near-duplicate: a retake, a retouched version)."""
        payload = detection.payload
        match = None if payload is None else self.registry.lookup(int(payload))
        if match is None or reference.sha256 in (None, match.asset.sha256):
            return
        notes.append(
            "the mark names a delivery of another original, "
            f"{match.asset.original_path or match.asset.sha256}, not the one given"
        )

    def _locate_source(
        self,
        leak_y: np.ndarray,
        detection: Detection,
        informed: _Informed | None,
        candidates: np.ndarray,
        p_threshold: float,
        notes: list[str],
        originals: dict[int, tuple[np.ndarray, np.ndarray] | None],
        *,
        reason: str = "the asset index did not recognise the leak",
    ) -> _Informed | None:
        """Where in its original a leak lies that the mark, not the registration, traced.

        The mark names the delivery, hence the asset; its original is described densely
        and registered to the leak for the geometry and the coverage, kept only when the
        residual at that registration shows the mark. The verdict stays the one reached
        (this registration is not another test of the decision); `reason` says why the
        source was looked for this way.
        """
        match = (
            self.registry.lookup(int(detection.payload)) if detection.payload is not None else None
        )
        if match is None:
            return None
        asset = match.asset
        if informed is not None and informed.source is not None and informed.source.id == asset.id:
            return informed
        if not asset.original_path or _is_clip_path(asset.original_path):
            return None  # a frame of a delivered clip: the verdict names the clip
        if asset.id not in originals:
            originals[asset.id] = self._load_original(asset, notes)
        loaded = originals[asset.id]
        if loaded is None:
            return None
        orig_y, orig_pixels = loaded
        orig_dense = dense_features(orig_y)
        for mirrored in (False, True):
            h, _ = register_features(
                dense_features(leak_y, mirrored=mirrored),
                mirrored,
                orig_dense,
                leak_y.shape,
                orig_y.shape,
            )
            if h is None:
                continue
            located, h, coverage = trace_registered(
                leak_y,
                orig_y,
                h,
                self._key,
                candidates=candidates,
                p_threshold=p_threshold,
                original=orig_pixels,
                level=_delivery_level(match),
            )
            if located.p_mark > _LOCATE_P:
                # the mark is not where this registration puts it: a wrong registration
                continue
            notes.append(
                f"source located from the mark's delivery ({reason}); "
                f"informed statistic there {located.score:.1f}"
            )
            return _Informed(
                located, asset, asset.original_path, describe_homography(h, leak_y.shape), coverage
            )
        notes.append("the leak could not be registered to the original of the mark's delivery")
        return None

    def _record(
        self,
        name: str,
        detection: Detection,
        modes: int,
        informed: _Informed | None,
        notes: list[str],
        *,
        blind: bool = False,
        leak_shape: tuple[int, ...] = (),
    ) -> TraceRecord:
        """The record of a decision; p-values are corrected for the `modes` tried. A blind
        verdict without a registration reports the geometry of the mark's tile grid."""
        p = min(1.0, modes * float(detection.p_value))
        p_mark = min(1.0, modes * float(detection.p_mark))
        if blind and detection.texture_cut:
            notes = [*notes, _TEXTURE_CUT_NOTE]
        context = {
            "mode": "blind" if blind else "informed",
            "source": None if informed is None else informed.source_path,
            "geometry": None if informed is None else informed.geometry,
            "coverage": None if informed is None else informed.coverage,
            "n_tests": float(detection.n_tests) * modes,
            "notes": tuple(notes),
        }
        match = None
        if detection.found and detection.payload is not None:
            match = self.registry.lookup(int(detection.payload))
        if match is None:
            return TraceRecord(
                name,
                False,
                None,
                None,
                None,
                p,
                float(detection.score),
                None,
                mark_p_value=p_mark,
                **context,
            )
        if blind:
            # the codec finds the chip size in the leak; the original's size gives the scale
            level = _delivery_level(match)
            original_shape = (match.asset.height, match.asset.width)
            scale = leak_scale(detection.chip_px, original_shape, level=level)
            if context["geometry"] is None and detection.axes is not None and leak_shape:
                context["geometry"] = describe_tile_axes(
                    detection.axes, detection.offset, float(2**level), leak_shape
                )
        else:
            scale = None if informed is None else informed.geometry.scale_x
        return TraceRecord(
            file=name,
            found=True,
            vendor=match.vendor.name,
            delivery_id=match.delivery.delivery_id,
            asset=match.asset.original_path or match.asset.sha256,
            p_value=p,
            score=float(detection.score),
            scale=scale,
            mark_p_value=p_mark,
            **context,
        )

    def _trace_informed(
        self,
        leak_y: np.ndarray,
        index: AssetIndex,
        reference: _Reference | None,
        candidates: np.ndarray,
        p_threshold: float,
        notes: list[str],
        originals: dict[int, tuple[np.ndarray, np.ndarray] | None],
    ) -> _Informed | None:
        """Register the leak to its original(s) and decide from the residual.

        Returns the most significant registration tried, or None when the leak shows no
        known original.
        """
        best: _Informed | None = None
        n_tests = _ORIGINAL_REGISTRATIONS if reference is not None else _INDEX_REGISTRATIONS
        ref_features = ref_dense = None
        if reference is not None:
            ref_y = reference.luma
            ref_features = index_features(ref_y)
            ref_asset = (
                None if reference.sha256 is None else self.registry.find_asset(reference.sha256)
            )
        direct_inliers, n_direct = 0, 0
        for mirrored in (False, True):
            if mirrored and direct_inliers >= max(_SURE_INLIERS, _SURE_SHARE * n_direct):
                break  # the leak plainly shows the original unflipped
            view = local_features(
                leak_y, max_side=LEAK_FEATURES[0], n_features=LEAK_FEATURES[1], mirrored=mirrored
            )
            n_direct = n_direct or len(view)
            # (original luma, pixels, homography, asset, path, leak features to refine with)
            tries: list[
                tuple[np.ndarray, np.ndarray | None, np.ndarray, Asset | None, str, Features | None]
            ] = []
            if reference is not None and ref_features is not None:
                refine_with: Features | None = view
                h, inliers = register_features(
                    view, mirrored, ref_features, leak_y.shape, ref_y.shape
                )
                if h is None:
                    # the original's few hundred features miss the leak (a corner of a flat
                    # cel frame): describe both densely. Still one registration per mode.
                    if ref_dense is None:
                        ref_dense = dense_features(ref_y)
                    refine_with = None
                    h, inliers = register_features(
                        dense_features(leak_y, mirrored=mirrored),
                        mirrored,
                        ref_dense,
                        leak_y.shape,
                        ref_y.shape,
                    )
                if h is not None:
                    tries.append(
                        (ref_y, reference.pixels, h, ref_asset, reference.path, refine_with)
                    )
                    direct_inliers = max(direct_inliers, inliers)
            else:
                matches = index.lookup([(view, mirrored)], leak_y.shape, max_matches=_INDEX_MATCHES)
                for m in matches:
                    asset = self.registry.get_asset(m.asset_id)
                    if m.asset_id not in originals:
                        originals[m.asset_id] = self._load_original(asset, notes)
                    loaded = originals[m.asset_id]
                    if loaded is not None:
                        tries.append((*loaded, m.homography, asset, asset.original_path, view))
                        direct_inliers = max(direct_inliers, m.inliers)
            for orig_y, orig_pixels, h, asset, source_path, refine_with in tries:
                # each chip level the original's deliveries carry is one more test of this
                # registration: its p-value is corrected for them
                levels = self._delivery_levels(asset, orig_y.shape)
                for level in levels:
                    detection, used, coverage = trace_registered(
                        leak_y,
                        orig_y,
                        h,
                        self._key,
                        candidates=candidates,
                        n_tests=n_tests * len(levels),
                        p_threshold=p_threshold,
                        features=None if refine_with is None else (refine_with, mirrored),
                        original=orig_pixels,
                        level=level,
                    )
                    outcome = _Informed(
                        detection,
                        asset,
                        source_path,
                        describe_homography(used, leak_y.shape),
                        coverage,
                    )
                    if best is None or detection.p_value < best.detection.p_value:
                        best = outcome
                    if detection.found:
                        return best
        return best

    def _delivery_levels(self, asset: Asset | None, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Chip levels of the deliveries of `asset`, the size rule's first. An original
        not in the registry may be the source of any delivery of its size: every level a
        still of `shape` may carry. One never delivered: the size rule's."""
        if asset is None:
            return chip_levels(shape)
        first = chip_level(shape)
        levels = {_delivery_level(r) for r in self.registry.deliveries_of(asset.id)} or {first}
        return tuple(sorted(levels, key=lambda lv: (lv != first, lv)))

    def _load_original(
        self, asset: Asset, notes: list[str]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(luma, pixels) of an indexed original, or None (with a note) if it moved or
        changed."""
        try:
            image = read_image(asset.original_path)
        except MediaError as exc:
            notes.append(f"original of asset {asset.id} unavailable: {exc}")
            return None
        if image.sha256 != asset.sha256:
            notes.append(f"{asset.original_path}: changed since it was registered; not used")
            return None
        return luma(image.pixels), image.pixels


def _delivery_level(record: DeliveryRecord) -> int:
    """Chip level a delivery was marked with: recorded in its codec parameters, or the
    size rule's (:func:`watermark._carrier.chip_level`) for a delivery that predates it."""
    try:
        level = json.loads(record.delivery.codec_params).get("chip_level")
    except (ValueError, AttributeError):  # not JSON, or not an object
        level = None
    if isinstance(level, int) and not isinstance(level, bool) and 1 <= level <= 5:
        return level
    return chip_level((record.asset.height, record.asset.width))


def _is_clip_path(path: str) -> bool:
    """True for the original path of a delivered video or sequence (``stem.####.ext``)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS or "#" in Path(path).name


def _occupied_message(out: Path, holders: list[DeliveryRecord]) -> str:
    """Why an existing output file is left alone."""
    if holders:
        last = holders[-1]
        owner = f"it holds delivery {last.delivery.delivery_id} for vendor {last.vendor.name!r}"
    else:
        owner = "it is not a delivery of this file to this vendor"
    return f"{out}: already exists and {owner}; not overwritten (choose another --out)"


def _embed_targets(
    inputs: Iterable[str | os.PathLike[str]], out_root: Path, sequences: bool
) -> tuple[list[MediaItem], list[tuple[Path, ...]]]:
    """The media of a batch and each one's output files, checked: no two inputs for one
    output, no output over an input."""
    items = find_media(inputs, exclude=out_root, sequences=sequences)
    if not items:
        raise StudioError("no image, video or sequence files in the inputs")
    outputs = [
        item.output_frames(out_root) if item.kind == "sequence" else (out_root / item.rel,)
        for item in items
    ]
    input_keys = {resolved_path(p) for item in items for p in (item.frames or (item.path,))}
    owners: dict[Path, list[str]] = {}
    for item, outs in zip(items, outputs, strict=True):
        for out in outs:
            owners.setdefault(resolved_path(out), []).append(item.name)
    for key, names in owners.items():
        if len(names) > 1:
            raise StudioError(f"{key}: several inputs map to this output ({', '.join(names)})")
        if key in input_keys:
            raise StudioError(
                f"{key}: output of {names[0]} would overwrite an input file; choose another --out"
            )
    return items, outputs


# os.link's errors on a file system without hard links (FAT, some network shares)


@dataclass(frozen=True, slots=True)
class _TraceJob:
    """What a trace worker process needs to trace files as the parent would."""

    home: str
    informed: bool
    original: str | None
    p_threshold: float
    max_frames: int
    damaged: bool


# A trace worker process's studio, index, reference and candidates, set once by
# _start_trace_worker (the pool's initializer) in that process only.
_worker: tuple[Studio, AssetIndex, _Reference | None, np.ndarray, _TraceJob] | None = None


def _start_trace_worker(job: _TraceJob) -> None:
    global _worker
    studio = Studio.open(job.home)
    reference = None
    if job.original is not None:
        loaded = read_image(job.original, single=True)
        reference = _Reference(luma(loaded.pixels), loaded.sha256, str(loaded.path), loaded.pixels)
    informed = job.informed and reference is None
    index = studio.load_index() if informed else AssetIndex.build(())
    _worker = (studio, index, reference, studio.registry.all_payloads(), job)


def _trace_in_worker(item: MediaItem) -> TraceRecord:
    assert _worker is not None, "a trace worker runs _start_trace_worker first"
    studio, index, reference, candidates, job = _worker
    return studio._trace_item(item, job, candidates, index, reference)


def _stamp(iso_utc: str) -> str:
    """``2026-12-07T17:30:46+00:00`` -> ``20261207T173046Z``, for file names."""
    return iso_utc.replace("-", "").replace(":", "").replace("+0000", "Z")


def _write_new_file(folder: Path, stem: str, data: bytes) -> Path:
    """Write ``folder/<stem>.md`` (``<stem>.2.md``, ... when taken) atomically, never over
    an existing file; its path."""
    for n in itertools.count(1):
        path = folder / (f"{stem}.md" if n == 1 else f"{stem}.{n}.md")
        try:
            if publish_new_file(stage_file(path, data), path):
                return path
        except MediaError as exc:
            raise StudioError(str(exc)) from None
    raise AssertionError("unreachable")


def _publish_output(tmp: Path, out: Path) -> None:
    """Put a marked file in place; refused (MediaError) when something took `out` since it
    was checked: another process writing the same output, which is never overwritten."""
    if not publish_new_file(tmp, out):
        raise MediaError(
            f"{out}: already exists (written meanwhile by another process); not overwritten"
        )


def _check_threshold(p_threshold: float, error: type[Exception]) -> None:
    """Raise `error` unless 0 < p_threshold < 1 (the informed and blind decoders each get
    half of it, so their own checks would let values up to 2 through)."""
    if not 0.0 < float(p_threshold) < 1.0:
        raise error(f"p_threshold must be in (0, 1), got {p_threshold}")


_KEY_SETTING = "key_fingerprint"  # the registry's record of its studio's secret


def _check_key(registry: Registry, key: bytes, secret_path: Path) -> None:
    """Refuse a secret that is not the one the registry's deliveries were marked with.

    A studio home whose secret.key was swapped (another studio's, a backup's of another
    home, a fresh `init`'s) would otherwise trace every leak of its own deliveries as
    "no mark found", without a word. A registry made before the fingerprint was recorded
    takes this secret's. A registry too damaged to read the setting is left to the
    command's own checks (``status`` reports it).
    """
    fingerprint = key_fingerprint(key)
    try:
        recorded = registry.get_setting(_KEY_SETTING)
        if recorded is None:
            registry.set_setting(_KEY_SETTING, fingerprint)
            return
    except sqlite3.DatabaseError:
        return
    if recorded != fingerprint:
        raise StudioError(
            f"{secret_path}: not this studio's secret (fingerprint {fingerprint}; the "
            f"registry's deliveries were marked with {recorded}): restore the studio's own "
            "secret.key, or every trace would find no mark"
        )


def _write_secret(path: Path, key: bytes) -> None:
    """Write the studio secret to a new file, mode 0600 whatever the umask, fsynced
    (FileExistsError when `path` exists: a secret is never replaced)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(key)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _remove_stale_stages(outputs: Iterable[tuple[Path, ...]], before: float) -> None:
    """Remove the staged copies of these outputs that a killed run left behind.

    A run killed between staging a marked file (``.<name>.<12 hex>.tmp``) and putting it in
    place leaves a complete marked copy whose delivery may never have been registered; it
    must not ship with the folder. Only files older than `before` (this batch's start) go,
    each output folder read once.
    """
    wanted: dict[Path, set[str]] = {}
    for outs in outputs:
        for out in outs:
            wanted.setdefault(out.parent, set()).add(out.name)
    for folder, names in wanted.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:  # not there yet: nothing was staged in it
            continue
        for entry in entries:
            m = STAGED_NAME.fullmatch(entry.name)
            if m is None or m["name"] not in names:
                continue
            with contextlib.suppress(OSError):  # gone already, or not ours to remove
                if entry.stat(follow_symlinks=False).st_mtime < before:
                    os.unlink(entry.path)


def _missing_folders(paths: Iterable[Path]) -> list[Path]:
    """The folders above `paths` that do not exist yet, deepest first."""
    missing: set[Path] = set()
    for path in paths:
        folder = path.parent
        while folder not in missing and folder != folder.parent and not folder.exists():
            missing.add(folder)
            folder = folder.parent
    return sorted(missing, key=lambda f: len(f.parts), reverse=True)


def _remove_empty_folders(folders: Iterable[Path]) -> None:
    """Remove each of `folders` that is empty, in order (deepest first); the others stay."""
    for folder in folders:
        with contextlib.suppress(OSError):  # not empty, already gone, or not ours
            folder.rmdir()


def _prepare_out_dir(out_dir: Path) -> None:
    """Create the output folder and prove it writable, or raise StudioError."""
    if out_dir.exists() and not out_dir.is_dir():
        raise StudioError(f"{out_dir}: not a folder (a file of that name is there)")
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
