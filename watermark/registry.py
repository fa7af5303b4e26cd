"""The delivery registry: an SQLite file mapping delivery ids to vendor, asset and date.

Every copy handed to a vendor is one *delivery*, identified by a 32-bit payload (the
delivery id embedded in the mark, shown as 8 lowercase hex digits). Payloads are drawn
at random with the OS CSPRNG and kept at Hamming distance >= :data:`MIN_PAYLOAD_DISTANCE`
from every other payload, so that a few bit errors can never turn one vendor's id into
another's.

The database runs in WAL mode with foreign keys on; every write is one
``BEGIN IMMEDIATE`` transaction; the schema version lives in ``PRAGMA user_version`` and
is checked on open. The studio secret is never stored here.
"""

from __future__ import annotations

import json
import operator
import os
import re
import secrets
import sqlite3
import unicodedata
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import numpy as np

from .errors import RegistryError

__all__ = [
    "MIN_PAYLOAD_DISTANCE",
    "PAYLOAD_BITS",
    "SCHEMA_VERSION",
    "Asset",
    "AssetInfo",
    "Delivery",
    "DeliveryRecord",
    "Registry",
    "Vendor",
    "format_delivery_id",
    "parse_delivery_id",
    "validate_vendor_name",
]

#: Version of the schema below, stored in ``PRAGMA user_version``.
SCHEMA_VERSION = 3
#: Width of a delivery id (the codec's payload), in bits.
PAYLOAD_BITS = 32
#: Smallest Hamming distance kept between any two delivery ids.
MIN_PAYLOAD_DISTANCE = 4

# candidates are checked a few at a time: each is checked against every registered
# payload, and at 100,000 deliveries nearly every draw is accepted at once
_CANDIDATE_BATCH = 16
_MAX_CANDIDATES = 65536
_MAX_PAIRS = 1 << 22  # elements of one (candidates x existing) distance block
_VENDOR_NAME = re.compile(r"[\w .\-]{1,64}")
_HEX_ID = re.compile(r"[0-9a-fA-F]{8}")

_SCHEMA = """
CREATE TABLE vendors (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    created_at  TEXT    NOT NULL
);
CREATE TABLE assets (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256         TEXT    NOT NULL UNIQUE CHECK (length(sha256) = 64),
    original_path  TEXT    NOT NULL,
    width          INTEGER NOT NULL CHECK (width > 0),
    height         INTEGER NOT NULL CHECK (height > 0),
    phash          TEXT    NOT NULL CHECK (length(phash) = 16),
    created_at     TEXT    NOT NULL,
    features       BLOB,
    pinned         INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE deliveries (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    payload        INTEGER NOT NULL UNIQUE CHECK (payload BETWEEN 0 AND 4294967295),
    vendor_id      INTEGER NOT NULL REFERENCES vendors (id),
    asset_id       INTEGER NOT NULL REFERENCES assets (id),
    created_at     TEXT    NOT NULL,
    codec_version  TEXT    NOT NULL,
    codec_params   TEXT    NOT NULL,
    output_path    TEXT    NOT NULL
);
CREATE INDEX deliveries_by_asset ON deliveries (asset_id, vendor_id, output_path);
CREATE INDEX deliveries_by_output ON deliveries (output_path);
CREATE TABLE settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
"""

# Version 1 -> 2: the asset index (local features of every original), and assets indexed
# by hand (`leaktrace asset add`, never delivered) that no rollback may remove.
# Version 2 -> 3: the studio's settings, such as the fingerprint of the secret the
# registry's deliveries were marked with.
_MIGRATIONS = {
    1: (
        "ALTER TABLE assets ADD COLUMN features BLOB",
        "ALTER TABLE assets ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0",
    ),
    2: ("CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",),
}

_RECORD_QUERY = """
SELECT d.id, d.payload, d.vendor_id, d.asset_id, d.created_at, d.codec_version,
       d.codec_params, d.output_path,
       v.id, v.name, v.created_at,
       a.id, a.sha256, a.original_path, a.width, a.height, a.phash, a.created_at
FROM deliveries d JOIN vendors v ON v.id = d.vendor_id JOIN assets a ON a.id = d.asset_id
"""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Vendor:
    """A recipient of deliveries (an outsourcing house, a reviewer, a distributor)."""

    id: int
    name: str
    created_at: str


@dataclass(frozen=True, slots=True)
class AssetInfo:
    """What the registry needs to know about an original, before it has a row.

    Attributes
    ----------
    sha256 : str
        Hex SHA-256 of the original file's bytes.
    original_path : str
        Where the original was read from (informative).
    width, height : int
        Size in pixels.
    phash : int
        64-bit perceptual hash (:func:`watermark._phash.perceptual_hash`).
    features : bytes or None
        Its local features for the asset index (:meth:`watermark._features.Features.to_bytes`).
    """

    sha256: str
    original_path: str
    width: int
    height: int
    phash: int
    features: bytes | None = None


@dataclass(frozen=True, slots=True)
class Asset:
    """An original frame or image, identified by the SHA-256 of its file."""

    id: int
    sha256: str
    original_path: str
    width: int
    height: int
    phash: str
    created_at: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """One marked copy of one asset handed to one vendor."""

    id: int
    payload: int
    vendor_id: int
    asset_id: int
    created_at: str
    codec_version: str
    codec_params: str
    output_path: str

    @property
    def delivery_id(self) -> str:
        """The payload as shown to users: 8 lowercase hex digits."""
        return format_delivery_id(self.payload)


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A delivery with its vendor and asset, as returned by look-ups."""

    delivery: Delivery
    vendor: Vendor
    asset: Asset

    def to_json(self) -> dict[str, object]:
        """The record as ``leaktrace delivery list --json`` prints it.

        Keys: delivery_id, vendor, asset (the original's path when delivered),
        asset_sha256, width, height (px), delivered_at (UTC, ISO-8601), output (where the
        marked copy was written), codec_version, codec_params (an object; the stored text
        if it is not JSON).
        """
        try:
            params: object = json.loads(self.delivery.codec_params)
        except ValueError:
            params = self.delivery.codec_params
        return {
            "delivery_id": self.delivery.delivery_id,
            "vendor": self.vendor.name,
            "asset": self.asset.original_path,
            "asset_sha256": self.asset.sha256,
            "width": self.asset.width,
            "height": self.asset.height,
            "delivered_at": self.delivery.created_at,
            "output": self.delivery.output_path,
            "codec_version": self.delivery.codec_version,
            "codec_params": params,
        }


def format_delivery_id(payload: int) -> str:
    """Display form of a payload: 8 lowercase hex digits.

    Raises
    ------
    ValueError
        ``payload`` outside ``[0, 2**32)``.

    Examples
    --------
    >>> format_delivery_id(48879)
    '0000beef'
    """
    if not 0 <= payload < 2**PAYLOAD_BITS:
        raise ValueError(f"payload must be in [0, 2**{PAYLOAD_BITS}); got {payload}")
    return f"{payload:08x}"


def parse_delivery_id(text: str) -> int:
    """Inverse of :func:`format_delivery_id` (case-insensitive).

    Raises
    ------
    ValueError
        ``text`` is not exactly 8 hex digits.

    Examples
    --------
    >>> parse_delivery_id("0000BEEF")
    48879
    """
    if not _HEX_ID.fullmatch(text):
        raise ValueError(f"a delivery id is 8 hex digits; got {text!r}")
    return int(text, 16)


def validate_vendor_name(name: str) -> str:
    """Return ``name`` if it is a valid vendor name.

    A name has 1 to 64 characters among letters, digits, space, ``.``, ``_`` and
    ``-``, with no leading or trailing space. Names compare case-insensitively.

    Raises
    ------
    RegistryError
        The name is invalid; the message says why.

    Examples
    --------
    >>> validate_vendor_name("Acme VFX")
    'Acme VFX'
    """
    if not _VENDOR_NAME.fullmatch(name) or name != name.strip():
        raise RegistryError(
            f"invalid vendor name {name!r}: use 1-64 letters, digits, spaces, '.', '_' or '-', "
            "without leading or trailing spaces"
        )
    return name


def _is_text(path: str) -> bool:
    """True when a path can be stored as text: not a file name whose bytes are not UTF-8
    (Python holds them as surrogates; SQLite text is UTF-8)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text_path(path: str) -> None:
    """Raise RegistryError when a path cannot be stored as text (:func:`_is_text`)."""
    if not _is_text(path):
        shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise RegistryError(
            f"{shown}: the file name is not valid UTF-8, which the registry records paths "
            "in; rename the file"
        ) from None


def _name_key(name: str) -> str:
    """What vendor names are compared by: Unicode case folding of the NFC form."""
    return unicodedata.normalize("NFC", name).casefold()


def _sort_key(name: str) -> tuple[str, str]:
    """Order of vendor lists: letters without their accents first, then as compared."""
    bare = "".join(c for c in unicodedata.normalize("NFD", name) if not unicodedata.combining(c))
    return bare.casefold(), _name_key(name)


def _now() -> str:
    """Current UTC time, ISO-8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _record(row: tuple) -> DeliveryRecord:
    return DeliveryRecord(
        delivery=Delivery(*row[0:8]), vendor=Vendor(*row[8:11]), asset=Asset(*row[11:18])
    )


def _records(cursor: sqlite3.Cursor) -> Iterator[DeliveryRecord]:
    """The rows of a :data:`_RECORD_QUERY` cursor as records, fetched 500 at a time."""
    while rows := cursor.fetchmany(500):
        yield from (_record(row) for row in rows)


def _far_mask(candidates: np.ndarray, existing: np.ndarray, min_distance: int) -> np.ndarray:
    """Boolean mask of ``candidates`` at Hamming distance >= ``min_distance`` from all
    of ``existing`` (both uint64 arrays), computed in memory-bounded blocks."""
    ok = np.ones(candidates.shape, dtype=bool)
    if existing.size == 0:
        return ok
    step = max(1, _MAX_PAIRS // existing.size)
    for start in range(0, candidates.size, step):  # blocks of candidates, not pixels
        block = candidates[start : start + step, None] ^ existing[None, :]
        ok[start : start + step] = np.bitwise_count(block).min(axis=1) >= min_distance
    return ok


# --------------------------------------------------------------------------- registry


class Registry:
    """An open delivery registry (use :meth:`open` or :meth:`create`; a context manager).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d, Registry.create(Path(d) / "r.sqlite") as reg:
    ...     reg.add_vendor("Acme").name
    'Acme'
    """

    __slots__ = ("_conn", "path")

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    # -- life cycle

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> Registry:
        """Create a new, empty registry file.

        Raises
        ------
        RegistryError
            The file already exists or cannot be created.
        """
        path = Path(path)
        if path.exists():
            raise RegistryError(f"{path}: a registry already exists there")
        conn = cls._connect(path, "rwc")
        registry = cls(conn, path)
        try:
            with registry._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            raise
        return registry

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Registry:
        """Open an existing registry and check its schema version.

        Raises
        ------
        RegistryError
            Missing file, not an SQLite database, or a schema version this code does
            not read.
        """
        path = Path(path)
        if not path.is_file():
            raise RegistryError(f"{path}: no registry there")
        conn = cls._connect(path, "rw")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise RegistryError(f"{path}: not a leaktrace registry ({exc})") from None
        if version in _MIGRATIONS:
            try:
                cls._migrate(conn, version)
            except sqlite3.Error as exc:
                conn.close()
                raise RegistryError(f"{path}: cannot upgrade the registry ({exc})") from None
            version = SCHEMA_VERSION
        if version != SCHEMA_VERSION:
            conn.close()
            raise RegistryError(
                f"{path}: registry schema version {version}, this leaktrace reads "
                f"version {SCHEMA_VERSION}"
            )
        return cls(conn, path)

    @staticmethod
    def _migrate(conn: sqlite3.Connection, version: int) -> None:
        """Upgrade an older schema in place, in one transaction."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            while version in _MIGRATIONS:
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                version += 1
            conn.execute(f"PRAGMA user_version = {version}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @staticmethod
    def _connect(path: Path, mode: str) -> sqlite3.Connection:
        uri = f"file:{quote(str(path.absolute()))}?mode={mode}"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise RegistryError(f"{path}: cannot open registry ({exc})") from None
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.DatabaseError as exc:
            conn.close()
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_CANTOPEN:
                # The file itself opened: what SQLite could not open is the -wal / -shm
                # pair it keeps beside a WAL database, which a read-only folder or file
                # system refuses (even to readers). The file is a registry all the same.
                raise RegistryError(
                    f"{path}: cannot open the registry ({exc}): SQLite must create its "
                    f"-wal and -shm files in {path.parent}, which is read-only or not "
                    "writable by this user (every command needs write access there, "
                    "tracing too)"
                ) from None
            raise RegistryError(f"{path}: not a leaktrace registry ({exc})") from None
        return conn

    def close(self) -> None:
        """Close the database connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({str(self.path)!r})"

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise RegistryError(f"{self.path}: cannot write ({exc})") from None
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._conn.execute("ROLLBACK")
            raise RegistryError(f"{self.path}: cannot commit ({exc})") from None

    # -- vendors

    def add_vendor(self, name: str) -> Vendor:
        """Register a vendor.

        Raises
        ------
        RegistryError
            Invalid name (see :func:`validate_vendor_name`), or a vendor of that name
            (case-insensitively) already exists.
        """
        validate_vendor_name(name)
        created = _now()
        try:
            with self._transaction() as conn:
                # SQLite's NOCASE folds ASCII only: "Émile" and "émile" are one vendor too
                taken = [n for (n,) in conn.execute("SELECT name FROM vendors")]
                same = [n for n in taken if _name_key(n) == _name_key(name)]
                if same:
                    raise RegistryError(f"vendor {name!r} already exists (as {same[0]!r})")
                cur = conn.execute(
                    "INSERT INTO vendors (name, created_at) VALUES (?, ?)", (name, created)
                )
        except sqlite3.IntegrityError:
            raise RegistryError(f"vendor {name!r} already exists") from None
        return Vendor(id=int(cur.lastrowid or 0), name=name, created_at=created)

    def list_vendors(self) -> list[Vendor]:
        """All vendors, sorted by name (case-insensitively, accented letters beside their
        base letters)."""
        rows = self._conn.execute("SELECT id, name, created_at FROM vendors").fetchall()
        return sorted((Vendor(*row) for row in rows), key=lambda v: _sort_key(v.name))

    def delivery_counts(self) -> dict[str, int]:
        """Deliveries made to each vendor, by vendor name (0 for a vendor with none)."""
        rows = self._conn.execute(
            "SELECT v.name, count(d.id) FROM vendors v LEFT JOIN deliveries d "
            "ON d.vendor_id = v.id GROUP BY v.id"
        ).fetchall()
        return {name: int(n) for name, n in rows}

    def get_vendor(self, name: str) -> Vendor:
        """The vendor called ``name`` (case-insensitive).

        Raises
        ------
        RegistryError
            No such vendor.
        """
        row = self._conn.execute(
            "SELECT id, name, created_at FROM vendors WHERE name = ?", (name,)
        ).fetchone()
        if row is None:  # letters beyond ASCII, which NOCASE does not fold
            key = _name_key(name)
            row = next(
                (
                    r
                    for r in self._conn.execute("SELECT id, name, created_at FROM vendors")
                    if _name_key(r[1]) == key
                ),
                None,
            )
        if row is None:
            raise RegistryError(f"unknown vendor {name!r} (add it with `leaktrace vendor add`)")
        return Vendor(*row)

    # -- assets

    @staticmethod
    def _upsert_asset(conn: sqlite3.Connection, info: AssetInfo, *, pinned: bool = False) -> Asset:
        if not 0 <= info.phash < 2**64:
            raise ValueError(f"phash must be in [0, 2**64); got {info.phash}")
        _check_text_path(info.original_path)
        conn.execute(
            "INSERT INTO assets (sha256, original_path, width, height, phash, created_at, "
            "features, pinned) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sha256) DO UPDATE "
            "SET features = coalesce(assets.features, excluded.features), "
            "pinned = max(assets.pinned, excluded.pinned)",
            (
                info.sha256,
                info.original_path,
                info.width,
                info.height,
                f"{info.phash:016x}",
                _now(),
                info.features,
                int(pinned),
            ),
        )
        row = conn.execute(
            "SELECT id, sha256, original_path, width, height, phash, created_at "
            "FROM assets WHERE sha256 = ?",
            (info.sha256,),
        ).fetchone()
        return Asset(*row)

    def add_asset(self, info: AssetInfo, *, pinned: bool = False) -> Asset:
        """Insert an asset, or return the existing row with the same SHA-256.

        Features are stored if the row had none. A `pinned` asset (indexed by hand,
        ``leaktrace asset add``) stays even when no delivery uses it.

        Raises
        ------
        ValueError
            ``info.phash`` outside ``[0, 2**64)``.
        RegistryError
            The row violates the schema (bad hash length, non-positive size).
        """
        try:
            with self._transaction() as conn:
                return self._upsert_asset(conn, info, pinned=pinned)
        except sqlite3.IntegrityError as exc:
            raise RegistryError(f"invalid asset {info.original_path!r}: {exc}") from None

    def find_asset(self, sha256: str) -> Asset | None:
        """The asset whose original file has this SHA-256, or None."""
        row = self._conn.execute(
            "SELECT id, sha256, original_path, width, height, phash, created_at "
            "FROM assets WHERE sha256 = ?",
            (sha256,),
        ).fetchone()
        return None if row is None else Asset(*row)

    def get_asset(self, asset_id: int) -> Asset:
        """The asset with this id.

        Raises
        ------
        RegistryError
            No such asset.
        """
        row = self._conn.execute(
            "SELECT id, sha256, original_path, width, height, phash, created_at "
            "FROM assets WHERE id = ?",
            (int(asset_id),),
        ).fetchone()
        if row is None:
            raise RegistryError(f"no asset {asset_id}")
        return Asset(*row)

    def has_features(self, sha256: str) -> bool:
        """True when the asset with this SHA-256 is in the index."""
        row = self._conn.execute(
            "SELECT features IS NOT NULL FROM assets WHERE sha256 = ?", (sha256,)
        ).fetchone()
        return bool(row and row[0])

    def indexed_assets(self) -> Iterator[tuple[int, int, int, bytes]]:
        """``(asset_id, height, width, features)`` of every indexed asset, by id."""
        yield from self._conn.execute(
            "SELECT id, height, width, features FROM assets WHERE features IS NOT NULL ORDER BY id"
        )

    def list_assets(self) -> list[tuple[Asset, bool, int]]:
        """Every asset, oldest first, with whether it is in the index (has local features)
        and how many deliveries were made of it."""
        rows = self._conn.execute(
            "SELECT a.id, a.sha256, a.original_path, a.width, a.height, a.phash, a.created_at, "
            "a.features IS NOT NULL, (SELECT count(*) FROM deliveries d WHERE d.asset_id = a.id) "
            "FROM assets a ORDER BY a.id"
        ).fetchall()
        return [(Asset(*row[:7]), bool(row[7]), int(row[8])) for row in rows]

    def count_assets(self) -> tuple[int, int]:
        """(assets, assets in the index)."""
        row = self._conn.execute("SELECT count(*), count(features) FROM assets").fetchone()
        return int(row[0]), int(row[1])

    def deliveries_of(self, asset_id: int) -> list[DeliveryRecord]:
        """Every delivery of one asset (oldest first)."""
        rows = self._conn.execute(
            _RECORD_QUERY + "WHERE d.asset_id = ? ORDER BY d.id", (int(asset_id),)
        ).fetchall()
        return [_record(row) for row in rows]

    # -- deliveries

    def all_payloads(self) -> np.ndarray:
        """Every delivery payload, as a ``(N,)`` uint64 array in creation order."""
        rows = self._conn.execute("SELECT payload FROM deliveries ORDER BY id").fetchall()
        return np.array([row[0] for row in rows], dtype=np.uint64)

    def new_payload(self) -> int:
        """Draw a fresh payload far from every existing one.

        Candidates come from the OS CSPRNG (:mod:`secrets`); a candidate is accepted
        when its Hamming distance to every registered payload is at least
        :data:`MIN_PAYLOAD_DISTANCE`. The draw does not reserve the value:
        :meth:`add_delivery` checks the distance again inside its transaction.

        Returns
        -------
        int
            A payload in ``[0, 2**32)``.

        Raises
        ------
        RegistryError
            No acceptable value among 65536 candidates: the id space is crowded.

        Notes
        -----
        A payload excludes ``sum_{k<4} C(32, k)`` = 5,489 values (about 2**-19.6 of the
        space): at 100,000 deliveries about 13 % of the space is excluded and a draw
        still succeeds at once. The codec does not rely on this distance for safety (a
        verdict must beat every other registered delivery in a pair test); it keeps
        deliveries separable at lower signal levels.
        """
        existing = self.all_payloads()
        for _ in range(_MAX_CANDIDATES // _CANDIDATE_BATCH):
            raw = np.frombuffer(secrets.token_bytes(4 * _CANDIDATE_BATCH), dtype="<u4")
            candidates = raw.astype(np.uint64)
            ok = _far_mask(candidates, existing, MIN_PAYLOAD_DISTANCE)
            if ok.any():
                return int(candidates[int(np.argmax(ok))])
        raise RegistryError(
            f"{self.path}: no free delivery id at Hamming distance >= {MIN_PAYLOAD_DISTANCE} "
            f"from the {existing.size} registered ones"
        )

    def add_delivery(
        self,
        payload: int,
        *,
        vendor: str,
        asset: AssetInfo,
        codec_version: str,
        codec_params: Mapping[str, object],
        output_path: str,
    ) -> DeliveryRecord:
        """Record a delivery (and its asset, if new) in one transaction.

        Parameters
        ----------
        payload : int
            Delivery id from :meth:`new_payload`.
        vendor : str
            Name of an existing vendor.
        asset : AssetInfo
            The original; inserted unless its SHA-256 is already registered.
        codec_version : str
            Version of the codec that embedded the mark.
        codec_params : mapping
            Embedding options (stored as sorted JSON).
        output_path : str
            Where the marked copy is written.

        Returns
        -------
        DeliveryRecord

        Raises
        ------
        ValueError
            ``payload`` outside ``[0, 2**32)``.
        RegistryError
            Unknown vendor, a payload already used or closer than
            :data:`MIN_PAYLOAD_DISTANCE` bits to another, or a schema violation.
            Nothing is written.
        """
        payload = operator.index(payload)  # a numpy integer too (SQLite would bind its bytes)
        format_delivery_id(payload)  # range check
        _check_text_path(output_path)
        params = json.dumps(dict(codec_params), sort_keys=True)
        try:
            with self._transaction() as conn:
                vendor_row = self.get_vendor(vendor)
                existing = self.all_payloads()
                if not _far_mask(np.array([payload], np.uint64), existing, MIN_PAYLOAD_DISTANCE)[0]:
                    raise RegistryError(
                        f"delivery id {payload:08x} is closer than {MIN_PAYLOAD_DISTANCE} bits "
                        "to a registered one"
                    )
                asset_row = self._upsert_asset(conn, asset)
                cur = conn.execute(
                    "INSERT INTO deliveries (payload, vendor_id, asset_id, created_at, "
                    "codec_version, codec_params, output_path) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        payload,
                        vendor_row.id,
                        asset_row.id,
                        _now(),
                        codec_version,
                        params,
                        output_path,
                    ),
                )
                row = conn.execute(_RECORD_QUERY + "WHERE d.id = ?", (cur.lastrowid,)).fetchone()
        except sqlite3.IntegrityError as exc:
            raise RegistryError(f"cannot record delivery {payload:08x}: {exc}") from None
        return _record(row)

    def delete_delivery(self, payload: int) -> None:
        """Remove a delivery (and its asset when no other delivery uses it).

        Used to roll back a delivery whose file could not be put in place.

        Raises
        ------
        RegistryError
            No delivery has this payload.
        """
        payload = operator.index(payload)
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT asset_id FROM deliveries WHERE payload = ?", (payload,)
            ).fetchone()
            if row is None:
                raise RegistryError(f"no delivery {payload:08x} to delete")
            conn.execute("DELETE FROM deliveries WHERE payload = ?", (payload,))
            conn.execute(
                "DELETE FROM assets WHERE id = ? AND pinned = 0 AND NOT EXISTS "
                "(SELECT 1 FROM deliveries WHERE asset_id = ?)",
                (row[0], row[0]),
            )

    def lookup(self, payload: int) -> DeliveryRecord | None:
        """The delivery with this payload, with its vendor and asset, or None."""
        row = self._conn.execute(_RECORD_QUERY + "WHERE d.payload = ?", (int(payload),)).fetchone()
        return None if row is None else _record(row)

    def find_delivery(
        self, asset_sha256: str, vendor: str, output_path: str
    ) -> DeliveryRecord | None:
        """The delivery of this asset to this vendor at this output path, or None.

        Lets an interrupted batch resume without marking a file twice.
        """
        if not _is_text(output_path):
            return None  # never stored (see add_delivery)
        row = self._conn.execute(
            _RECORD_QUERY + "WHERE a.sha256 = ? AND v.name = ? AND d.output_path = ?",
            (asset_sha256, vendor, output_path),
        ).fetchone()
        return None if row is None else _record(row)

    def deliveries_at(self, output_path: str) -> list[DeliveryRecord]:
        """Every delivery recorded as written to ``output_path`` (oldest first)."""
        if not _is_text(output_path):
            return []  # never stored (see add_delivery)
        rows = self._conn.execute(
            _RECORD_QUERY + "WHERE d.output_path = ? ORDER BY d.id", (output_path,)
        ).fetchall()
        return [_record(row) for row in rows]

    def get_setting(self, name: str) -> str | None:
        """The studio setting `name` (e.g. ``"key_fingerprint"``), or None when unset."""
        row = self._conn.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, name: str, value: str) -> None:
        """Record the studio setting `name` (replacing its value)."""
        with self._transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO settings (name, value) VALUES (?, ?)", (name, value)
            )

    def list_deliveries(
        self, vendor: str | None = None, *, last: int | None = None
    ) -> list[DeliveryRecord]:
        """Every delivery with its vendor and asset, oldest first; only `vendor`'s when given,
        only the `last` (>= 1) most recent of them when given.

        Raises
        ------
        RegistryError
            `vendor` is given and not registered.
        ValueError
            `last` is below 1.
        """
        return list(self.iter_deliveries(vendor, last=last))

    def iter_deliveries(
        self, vendor: str | None = None, *, last: int | None = None
    ) -> Iterator[DeliveryRecord]:
        """:meth:`list_deliveries` a few hundred rows at a time: a registry of hundreds of
        thousands of deliveries is listed without holding them all. The vendor is checked
        at the call; consume the iterator while the registry is open.

        Raises
        ------
        RegistryError
            `vendor` is given and not registered.
        ValueError
            `last` is below 1.
        """
        if last is not None and (isinstance(last, bool) or last < 1):
            raise ValueError(f"last must be an int of at least 1; got {last!r}")
        params: tuple[int, ...] = ()
        ids = "SELECT id FROM deliveries "
        if vendor is not None:
            params = (self.get_vendor(vendor).id,)
            ids += "WHERE vendor_id = ? "
        if last is not None:  # the newest `last`, still listed oldest first
            ids += "ORDER BY id DESC LIMIT ?"
            params = (*params, min(int(last), 2**62))  # SQLite integers are 64-bit
        query = _RECORD_QUERY + ("" if not params else f"WHERE d.id IN ({ids}) ") + "ORDER BY d.id"
        return _records(self._conn.execute(query, params))

    def integrity(self) -> str:
        """SQLite's quick check of the database file and its foreign keys: ``"ok"``, or
        the first problems found, joined with "; "."""
        try:
            problems = [row[0] for row in self._conn.execute("PRAGMA quick_check(5)")]
            orphans = self._conn.execute("PRAGMA foreign_key_check").fetchmany(5)
        except sqlite3.DatabaseError as exc:
            return f"unreadable ({exc})"
        problems = [p for p in problems if p != "ok"]
        problems += [
            f"row {rowid} of {table} points at a missing {parent} row"
            for table, rowid, parent, _ in orphans
        ]
        return "; ".join(problems) or "ok"

    def count_deliveries(self) -> int:
        """Number of deliveries recorded."""
        return int(self._conn.execute("SELECT count(*) FROM deliveries").fetchone()[0])

    # -- backup

    def copy_to(self, path: str | os.PathLike[str]) -> None:
        """Write a consistent copy of the registry to a new file, fsynced.

        SQLite's online backup copies one snapshot of the database: writes that other
        processes commit meanwhile are either all in the copy or not at all, and a
        transaction still open elsewhere is not (a plain file copy of a WAL database
        can catch half of one, or miss what is still in its ``-wal`` file). The copy is
        one self-contained file.

        Raises
        ------
        RegistryError
            `path` exists, or the copy cannot be written.
        """
        path = Path(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise RegistryError(f"{path}: cannot create ({exc.strerror or exc})") from None
        os.close(fd)
        try:
            target = sqlite3.connect(path, isolation_level=None)
            try:
                self._conn.backup(target)
                # one file: no -wal beside it to lose (a copy is moved around as it is)
                target.execute("PRAGMA journal_mode = DELETE")
            finally:
                target.close()
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        except (sqlite3.Error, OSError) as exc:
            for suffix in ("", "-journal", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            raise RegistryError(f"{path}: cannot copy the registry ({exc})") from None
