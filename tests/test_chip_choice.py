"""Stills from 720 px up whose 4-px mark is weak carry 8-px chips: the choice is recorded
per delivery, and blind and informed tracing read it."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from watermark._attacks import apply_attack
from watermark.media import read_image, write_image
from watermark.studio import REGISTRY_NAME, Studio

from .frames import cel_frame, textured_frame


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A flat cel original and a textured one, 1280x720, each delivered to two vendors."""
    root = tmp_path_factory.mktemp("chips")
    originals = root / "originals"
    originals.mkdir()
    write_image(originals / "cel.png", cel_frame(720, 1280, seed=3), format="png")
    write_image(originals / "texture.png", textured_frame(720, 1280, seed=3), format="png")
    home = root / "home"
    with Studio.create(home) as studio:
        for vendor in ("Acme", "Bluebird"):
            studio.add_vendor(vendor)
            records = studio.embed_files([originals], vendor, root / vendor)
            assert all(r.status == "embedded" and not r.weak for r in records)
    return {"root": root, "home": home, "originals": originals}


def recorded_level(delivered: dict, vendor: str, name: str) -> int:
    with Studio.open(delivered["home"]) as studio:
        sha = read_image(delivered["originals"] / name).sha256
        out = str((delivered["root"] / vendor / name).resolve())
        rec = studio.registry.find_delivery(sha, vendor, out)
    assert rec is not None
    return json.loads(rec.delivery.codec_params)["chip_level"]


def marked_copy(delivered: dict, vendor: str, name: str) -> np.ndarray:
    return read_image(delivered["root"] / vendor / name).pixels


@pytest.mark.parametrize("vendor", ["Acme", "Bluebird"])
def test_each_delivery_records_its_chip_level(delivered: dict, vendor: str) -> None:
    assert recorded_level(delivered, vendor, "cel.png") == 3  # weak with 4-px chips
    assert recorded_level(delivered, vendor, "texture.png") == 2  # the size rule's


@pytest.mark.parametrize(("attack", "scale"), [("webp50", 1.0), ("scale0.5", 0.5)])
def test_blind_trace_reads_the_recorded_chip_size(
    delivered: dict, attack: str, scale: float
) -> None:
    leak = apply_attack(attack, marked_copy(delivered, "Bluebird", "cel.png"), seed=2)
    with Studio.open(delivered["home"]) as studio:
        rec = studio.trace_image(leak, name="leak", informed=False)
    assert rec.found and rec.vendor == "Bluebird" and rec.mode == "blind"
    assert rec.scale == pytest.approx(scale, rel=0.02)  # 8-px chips, not twice the size


@pytest.mark.parametrize("name", ["cel.png", "texture.png"])
def test_informed_trace_uses_the_delivery_chip_level(delivered: dict, name: str) -> None:
    marked = marked_copy(delivered, "Acme", name)
    leak = np.ascontiguousarray(np.rot90(marked)[100:1180, 60:660])
    with Studio.open(delivered["home"]) as studio:
        rec = studio.trace_image(leak, name="leak")
    assert rec.found and rec.vendor == "Acme" and rec.mode == "informed"
    assert Path(rec.source).name == name
    assert abs(rec.geometry.rotation - 90.0) < 1.0


def test_deliveries_that_predate_the_record_keep_the_size_rule(
    delivered: dict, tmp_path: Path
) -> None:
    # a registry written before chip levels were recorded: its 4-px deliveries still trace
    home = tmp_path / "home"
    shutil.copytree(delivered["home"], home)
    conn = sqlite3.connect(home / REGISTRY_NAME)
    rows = conn.execute("SELECT id, codec_params FROM deliveries").fetchall()
    for row_id, params in rows:
        old = {k: v for k, v in json.loads(params).items() if k != "chip_level"}
        conn.execute(
            "UPDATE deliveries SET codec_params = ? WHERE id = ?", (json.dumps(old), row_id)
        )
    conn.commit()
    conn.close()
    leak = np.ascontiguousarray(np.rot90(marked_copy(delivered, "Acme", "texture.png")))
    with Studio.open(home) as studio:
        informed = studio.trace_image(leak[100:1180, 60:660], name="leak")
        blind = studio.trace_image(apply_attack("scale0.5", leak, seed=1), informed=False)
    assert informed.found and informed.vendor == "Acme" and informed.mode == "informed"
    assert blind.found and blind.scale == pytest.approx(0.5, rel=0.02)
