"""Tests of watermark.registry: schema, vendors, assets, deliveries and payload spacing."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from watermark import registry as registry_module
from watermark.errors import RegistryError
from watermark.registry import (
    MIN_PAYLOAD_DISTANCE,
    SCHEMA_VERSION,
    AssetInfo,
    Registry,
    format_delivery_id,
    parse_delivery_id,
    validate_vendor_name,
)


def asset(n: int = 0) -> AssetInfo:
    return AssetInfo(
        sha256=f"{n:064x}", original_path=f"/shots/{n}.png", width=64, height=48, phash=0xABC
    )


def add(reg: Registry, payload: int, *, vendor: str = "Acme", n: int = 0, out: str = "/out/a.png"):
    return reg.add_delivery(
        payload,
        vendor=vendor,
        asset=asset(n),
        codec_version="test",
        codec_params={"strength": 1.0},
        output_path=out,
    )


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    with Registry.create(tmp_path / "registry.sqlite") as registry:
        registry.add_vendor("Acme")
        yield registry


def test_create_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with Registry.create(path) as reg:
        reg.add_vendor("Acme")
    with Registry.open(path) as reg:
        assert [v.name for v in reg.list_vendors()] == ["Acme"]
        assert reg._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert reg._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert reg._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert "r.sqlite" in repr(reg)


def test_create_refuses_existing(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    Registry.create(path).close()
    with pytest.raises(RegistryError, match="already exists"):
        Registry.create(path)


def test_create_in_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="cannot open registry"):
        Registry.create(tmp_path / "no" / "such" / "r.sqlite")


def test_create_failure_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_SCHEMA", "CREATE TABLE broken (")
    path = tmp_path / "r.sqlite"
    with pytest.raises(sqlite3.OperationalError):
        Registry.create(path)
    assert list(tmp_path.iterdir()) == []


def test_open_refusals(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no registry there"):
        Registry.open(tmp_path / "missing.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RegistryError, match="not a leaktrace registry"):
        Registry.open(junk)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("PRAGMA user_version = 99").connection.close()
    with pytest.raises(RegistryError, match="schema version 99"):
        Registry.open(other)


def test_vendors(reg: Registry) -> None:
    reg.add_vendor("bluebird Post")
    reg.add_vendor("Zeta_2.0-x")
    assert [v.name for v in reg.list_vendors()] == ["Acme", "bluebird Post", "Zeta_2.0-x"]
    assert reg.get_vendor("acme").name == "Acme"
    with pytest.raises(RegistryError, match="already exists"):
        reg.add_vendor("ACME")
    with pytest.raises(RegistryError, match="unknown vendor 'Nobody'"):
        reg.get_vendor("Nobody")


@pytest.mark.parametrize("name", ["", " Acme", "Acme ", "a/b", "x" * 65, "semi;colon", "new\nline"])
def test_bad_vendor_names(reg: Registry, name: str) -> None:
    with pytest.raises(RegistryError, match="invalid vendor name"):
        reg.add_vendor(name)


def test_vendor_name_rules() -> None:
    assert validate_vendor_name("x" * 64) == "x" * 64
    assert validate_vendor_name("Studio Ghibli-2_b.v") == "Studio Ghibli-2_b.v"


def test_delivery_ids() -> None:
    assert format_delivery_id(0) == "00000000"
    assert format_delivery_id(2**32 - 1) == "ffffffff"
    assert parse_delivery_id(format_delivery_id(123456789)) == 123456789
    with pytest.raises(ValueError, match="payload must be"):
        format_delivery_id(2**32)
    with pytest.raises(ValueError, match="8 hex digits"):
        parse_delivery_id("xyz")


def test_add_and_lookup_delivery(reg: Registry) -> None:
    record = add(reg, 0x12345678)
    assert record.delivery.delivery_id == "12345678"
    assert record.vendor.name == "Acme"
    assert record.asset.sha256 == asset().sha256 and record.asset.phash == "0000000000000abc"
    assert json.loads(record.delivery.codec_params) == {"strength": 1.0}
    assert record.delivery.created_at.endswith("+00:00")
    assert reg.lookup(0x12345678) == record
    assert reg.lookup(0x0BADF00D) is None
    assert reg.find_delivery(asset().sha256, "acme", "/out/a.png") == record
    assert reg.find_delivery(asset().sha256, "Acme", "/out/b.png") is None
    assert reg.deliveries_at("/out/a.png") == [record]
    payloads = reg.all_payloads()
    assert payloads.dtype == np.uint64 and payloads.tolist() == [0x12345678]
    assert reg.count_deliveries() == 1


def test_list_deliveries_oldest_first_and_by_vendor(reg: Registry) -> None:
    assert reg.list_deliveries() == []
    reg.add_vendor("Bluebird")
    first = add(reg, 0x00000000, n=1)
    second = add(reg, 0x0F0F0F0F, vendor="Bluebird", n=1, out="/out/b.png")
    third = add(reg, 0xF0F0F0F0, n=2, out="/out/c.png")
    assert reg.list_deliveries() == [first, second, third]
    assert reg.list_deliveries("acme") == [first, third]  # names compare without case
    assert reg.list_deliveries("Bluebird") == [second]
    with pytest.raises(RegistryError, match="unknown vendor 'Nobody'"):
        reg.list_deliveries("Nobody")
    # the streamed listing: the same records, and the vendor checked at the call
    assert list(reg.iter_deliveries()) == [first, second, third]
    assert list(reg.iter_deliveries("ACME")) == [first, third]
    with pytest.raises(RegistryError, match="unknown vendor 'Nobody'"):
        reg.iter_deliveries("Nobody")
    # the most recent few, still oldest first, of all vendors or of one
    assert reg.list_deliveries(last=2) == [second, third]
    assert reg.list_deliveries(last=5) == [first, second, third]
    assert list(reg.iter_deliveries("acme", last=1)) == [third]
    assert reg.list_deliveries("Bluebird", last=1) == [second]
    assert reg.list_deliveries(last=2**70) == [first, second, third]
    for bad in (0, True):
        with pytest.raises(ValueError, match="last must be an int of at least 1"):
            reg.list_deliveries(last=bad)
    document = third.to_json()
    assert document == {
        "delivery_id": "f0f0f0f0",
        "vendor": "Acme",
        "asset": "/shots/2.png",
        "asset_sha256": asset(2).sha256,
        "width": 64,
        "height": 48,
        "delivered_at": third.delivery.created_at,
        "output": "/out/c.png",
        "codec_version": "test",
        "codec_params": {"strength": 1.0},
    }
    assert json.loads(json.dumps(document)) == document


def test_add_delivery_refusals(reg: Registry) -> None:
    add(reg, 0)
    with pytest.raises(RegistryError, match="closer than"):
        add(reg, 0b111, out="/out/b.png")  # 3 bits from 0
    with pytest.raises(RegistryError, match="closer than"):
        add(reg, 0, out="/out/c.png")
    with pytest.raises(RegistryError, match="unknown vendor"):
        add(reg, 0xFF00FF00, vendor="Nobody")
    with pytest.raises(ValueError, match="payload must be"):
        add(reg, -1)
    bad = AssetInfo(sha256="short", original_path="x", width=1, height=1, phash=0)
    with pytest.raises(RegistryError, match="cannot record delivery"):
        reg.add_delivery(
            0xFF00FF00,
            vendor="Acme",
            asset=bad,
            codec_version="t",
            codec_params={},
            output_path="o",
        )
    assert reg.count_deliveries() == 1
    assert reg._conn.execute("SELECT count(*) FROM assets").fetchone()[0] == 1
    add(reg, 0xF, out="/out/d.png")  # exactly MIN_PAYLOAD_DISTANCE bits away
    assert MIN_PAYLOAD_DISTANCE == 4


def test_assets_upsert(reg: Registry) -> None:
    first = reg.add_asset(asset(1))
    again = reg.add_asset(AssetInfo(asset(1).sha256, "/elsewhere.png", 64, 48, 1))
    assert again == first
    with pytest.raises(ValueError, match="phash"):
        reg.add_asset(AssetInfo(asset(2).sha256, "x", 1, 1, 2**64))
    with pytest.raises(RegistryError, match="invalid asset"):
        reg.add_asset(AssetInfo(asset(2).sha256, "x", 0, 1, 0))


def test_delete_delivery(reg: Registry) -> None:
    add(reg, 0x11111111, n=1)
    add(reg, 0x22222222, n=1, out="/out/b.png")
    reg.delete_delivery(0x11111111)
    assert reg.lookup(0x11111111) is None
    assert reg._conn.execute("SELECT count(*) FROM assets").fetchone()[0] == 1  # still used
    reg.delete_delivery(0x22222222)
    assert reg._conn.execute("SELECT count(*) FROM assets").fetchone()[0] == 0
    with pytest.raises(RegistryError, match="no delivery"):
        reg.delete_delivery(0x22222222)


def test_new_payloads_are_far_apart(reg: Registry) -> None:
    for i in range(40):
        payload = reg.new_payload()
        assert 0 <= payload < 2**32
        add(reg, payload, n=i, out=f"/out/{i}.png")
    payloads = reg.all_payloads()
    distances = np.bitwise_count(payloads[:, None] ^ payloads[None, :])
    np.fill_diagonal(distances, 64)
    assert distances.min() >= MIN_PAYLOAD_DISTANCE


def test_new_payload_gives_up_when_crowded(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    add(reg, 0)
    monkeypatch.setattr(registry_module, "MIN_PAYLOAD_DISTANCE", 33)  # impossible
    monkeypatch.setattr(registry_module, "_MAX_CANDIDATES", 2 * registry_module._CANDIDATE_BATCH)
    with pytest.raises(RegistryError, match="no free delivery id"):
        reg.new_payload()


def test_new_payload_checks_a_few_candidates(
    reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # each candidate is compared with every registered payload: at 100,000 deliveries
    # checking 1024 per draw (nearly all accepted) cost 0.14 s of every delivery
    add(reg, 0)
    checked: list[int] = []
    far_mask = registry_module._far_mask

    def spy(candidates: np.ndarray, existing: np.ndarray, min_distance: int) -> np.ndarray:
        checked.append(candidates.size)
        return far_mask(candidates, existing, min_distance)

    monkeypatch.setattr(registry_module, "_far_mask", spy)
    reg.new_payload()
    assert 0 < sum(checked) <= 64


def test_far_mask_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    existing = np.arange(0, 5000, dtype=np.uint64) << np.uint64(20)
    candidates = np.array([0, 0xFFFFFFFF, 1 << 20 | 1], dtype=np.uint64)
    monkeypatch.setattr(registry_module, "_MAX_PAIRS", 5000)  # one candidate per block
    mask = registry_module._far_mask(candidates, existing, 8)
    assert mask.tolist() == [False, True, False]
    assert registry_module._far_mask(candidates, existing[:0], 8).all()


def test_write_lock_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    Registry.create(path).close()
    with Registry.open(path) as first, Registry.open(path) as second:
        first._conn.execute("PRAGMA busy_timeout = 0")
        second._conn.execute("PRAGMA busy_timeout = 0")
        first._conn.execute("BEGIN IMMEDIATE")
        with pytest.raises(RegistryError, match="cannot write"):
            second.add_vendor("Acme")
        first._conn.execute("ROLLBACK")


def test_commit_failure_is_reported(reg: Registry) -> None:
    class FailingCommit:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def execute(self, sql: str, *args: object) -> object:
            if sql == "COMMIT":
                raise sqlite3.OperationalError("disk I/O error")
            return self.conn.execute(sql, *args)

    reg._conn = FailingCommit(reg._conn)  # type: ignore[assignment]
    with pytest.raises(RegistryError, match="cannot commit"):
        reg.add_vendor("Bluebird")
    reg._conn = reg._conn.conn
    assert [v.name for v in reg.list_vendors()] == ["Acme"]


def test_vendor_names_fold_case_beyond_ascii(reg: Registry) -> None:
    reg.add_vendor("Émile VFX")
    for same in ("émile vfx", "ÉMILE VFX", "E\u0301mile VFX".replace("E\u0301", "\u00c9")):
        with pytest.raises(RegistryError, match="already exists"):
            reg.add_vendor(same)
    assert reg.get_vendor("émile vfx").name == "Émile VFX"
    reg.add_vendor("Straße")
    assert reg.get_vendor("STRASSE").name == "Straße"  # full case folding
    assert [v.name for v in reg.list_vendors()] == ["Acme", "Émile VFX", "Straße"]


def test_numpy_payloads_are_recorded(reg: Registry) -> None:
    info = AssetInfo(sha256="c" * 64, original_path="a.png", width=8, height=8, phash=1)
    for n, payload in enumerate((np.uint64(0x12345678), np.int64(0x0F0F0F0F), np.uint32(7))):
        record = reg.add_delivery(
            payload,
            vendor="Acme",
            asset=info,
            codec_version="lt1",
            codec_params={},
            output_path=f"/o{n}.png",
        )
        assert record.delivery.payload == int(payload)
    reg.delete_delivery(np.uint32(7))
    assert reg.lookup(7) is None
    with pytest.raises(TypeError):
        reg.add_delivery(
            1.0,
            vendor="Acme",
            asset=info,
            codec_version="lt1",
            codec_params={},
            output_path="/f.png",
        )


def test_a_folder_sqlite_cannot_write_in_is_named_not_called_a_bad_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A studio on a read-only mount: the file opens, but SQLite cannot create the -wal /
    # -shm files a WAL database needs beside it, and says "unable to open database file"
    # (SQLITE_CANTOPEN) on the first statement. The registry is fine; the folder is not.
    path = tmp_path / "r.sqlite"
    Registry.create(path).close()

    class ReadOnlyFolder(sqlite3.Connection):
        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if sql.startswith("PRAGMA journal_mode"):
                exc = sqlite3.OperationalError("unable to open database file")
                exc.sqlite_errorcode = sqlite3.SQLITE_CANTOPEN  # type: ignore[attr-defined]
                raise exc
            return super().execute(sql, *args)

    real_connect = sqlite3.connect
    monkeypatch.setattr(
        registry_module.sqlite3,
        "connect",
        lambda *a, **k: real_connect(*a, factory=ReadOnlyFolder, **k),
    )
    with pytest.raises(RegistryError) as info:
        Registry.open(path)
    message = str(info.value)
    assert "not a leaktrace registry" not in message
    assert f"-wal and -shm files in {tmp_path}" in message
    monkeypatch.undo()
    (tmp_path / "junk.sqlite").write_bytes(b"\x00" * 100)  # a real non-registry still says so
    with pytest.raises(RegistryError, match="not a leaktrace registry"):
        Registry.open(tmp_path / "junk.sqlite")
