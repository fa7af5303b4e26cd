"""Tests of watermark.studio: studio life cycle, batch embedding and tracing."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pytest

from watermark import studio as studio_module
from watermark._detect import Detection
from watermark._keys import key_fingerprint
from watermark.errors import MediaError, RegistryError, StudioError
from watermark.media import read_image
from watermark.registry import Registry
from watermark.samples import sample_frames
from watermark.studio import (
    DEFAULT_HOME,
    HOME_ENV,
    REGISTRY_NAME,
    SECRET_NAME,
    EmbedRecord,
    Studio,
    TraceRecord,
    resolve_home,
)

from ._factories import BAD_FILES, make_bad_file, sha256_of, texture, write_encoded


@pytest.fixture
def studio(tmp_path: Path) -> Studio:
    with Studio.create(tmp_path / "home") as s:
        s.add_vendor("Acme")
        s.add_vendor("Bluebird")
        yield s


def rows(s: Studio, table: str) -> int:
    return s.registry._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def shots(folder: Path) -> Path:
    """A folder of small frames: RGB PNG, grey JPEG, 16-bit RGBA PNG, nested."""
    write_encoded(folder / "a.png", texture((96, 128, 3), seed=1))
    write_encoded(folder / "sub" / "b.jpg", texture((96, 128), seed=2), ".jpg")
    write_encoded(folder / "sub" / "deep" / "c.png", texture((96, 128, 4), np.uint16, seed=3))
    return folder


# --------------------------------------------------------------------------- home


def test_resolve_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(HOME_ENV, raising=False)
    assert resolve_home(None) == DEFAULT_HOME == Path(".leaktrace")
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    assert resolve_home(None) == tmp_path
    assert resolve_home(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv(HOME_ENV, "")
    assert resolve_home(None) == DEFAULT_HOME


def test_create_layout_and_secret_mode(tmp_path: Path) -> None:
    home = tmp_path / "deep" / "home"
    with Studio.create(home) as s:
        assert "home" in repr(s) and "key" not in repr(s).lower()
    secret = home / SECRET_NAME
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(secret.read_bytes()) == 32
    assert (home / REGISTRY_NAME).is_file()
    assert secret.read_bytes() not in (home / REGISTRY_NAME).read_bytes()
    with Studio.open(home) as s:
        assert s._key == secret.read_bytes()


def test_a_secret_that_is_not_the_studios_own_is_refused(tmp_path: Path) -> None:
    """A swapped secret.key would trace every leak of the studio's deliveries as "no mark
    found": the registry records its secret's fingerprint and the studio refuses others."""
    home, other = tmp_path / "home", tmp_path / "other"
    Studio.create(home).close()
    Studio.create(other).close()
    own = (home / SECRET_NAME).read_bytes()
    shutil.copyfile(other / SECRET_NAME, home / SECRET_NAME)
    with pytest.raises(StudioError, match=r"not this studio's secret .*restore"):
        Studio.open(home)
    (home / SECRET_NAME).write_bytes(own)
    Studio.open(home).close()
    # a registry made before the fingerprint was recorded takes the first secret it meets
    with sqlite3.connect(home / REGISTRY_NAME) as conn:
        conn.execute("DELETE FROM settings")
    Studio.open(home).close()
    with Registry.open(home / REGISTRY_NAME) as reg:
        assert reg.get_setting("key_fingerprint") == key_fingerprint(own)


def test_create_twice_refuses(tmp_path: Path) -> None:
    Studio.create(tmp_path).close()
    key = (tmp_path / SECRET_NAME).read_bytes()
    with pytest.raises(StudioError, match="already exists"):
        Studio.create(tmp_path)
    assert (tmp_path / SECRET_NAME).read_bytes() == key


def test_create_race_on_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def racing_open(path: object, flags: int, mode: int = 0o777) -> int:
        if str(path).endswith(SECRET_NAME):
            raise FileExistsError(17, "File exists")
        return real_open(path, flags, mode)

    monkeypatch.setattr(studio_module.os, "open", racing_open)
    with pytest.raises(StudioError, match="already exists"):
        Studio.create(tmp_path / "home")


def test_create_unwritable_home(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StudioError, match="cannot create a studio"):
        Studio.create(blocker / "home")


def test_create_write_failure_removes_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(studio_module.os, "fsync", full)
    with pytest.raises(StudioError, match="No space left"):
        Studio.create(tmp_path)
    assert not (tmp_path / SECRET_NAME).exists()


def test_create_registry_failure_removes_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: Path) -> None:
        raise RegistryError("boom")

    monkeypatch.setattr(studio_module.Registry, "create", broken)
    with pytest.raises(RegistryError, match="boom"):
        Studio.create(tmp_path)
    assert not (tmp_path / SECRET_NAME).exists()


def test_open_refusals(tmp_path: Path) -> None:
    with pytest.raises(StudioError, match="no studio here"):
        Studio.open(tmp_path)
    (tmp_path / SECRET_NAME).write_bytes(b"short")
    with pytest.raises(StudioError, match="corrupt secret"):
        Studio.open(tmp_path)
    (tmp_path / SECRET_NAME).unlink()
    (tmp_path / SECRET_NAME).mkdir()
    with pytest.raises(StudioError, match="cannot read the secret"):
        Studio.open(tmp_path)
    (tmp_path / SECRET_NAME).rmdir()
    (tmp_path / SECRET_NAME).write_bytes(bytes(32))
    with pytest.raises(RegistryError, match="no registry"):
        Studio.open(tmp_path)


# --------------------------------------------------------------------------- embed


def test_embed_folder(studio: Studio, tmp_path: Path) -> None:
    src = shots(tmp_path / "shots")
    before = {p: sha256_of(p) for p in src.rglob("*") if p.is_file()}
    seen: list[tuple[int, int]] = []
    out = tmp_path / "out"
    records = studio.embed_files([src], "acme", out, progress=lambda d, t, p: seen.append((d, t)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert [r.status for r in records] == ["embedded"] * 3
    assert [Path(r.output).relative_to(out).as_posix() for r in records] == [
        "a.png",
        "sub/b.jpg",
        "sub/deep/c.png",
    ]
    assert {r.vendor for r in records} == {"Acme"}
    assert len({r.delivery_id for r in records}) == 3
    assert all(len(r.delivery_id) == 8 for r in records)
    assert before == {p: sha256_of(p) for p in before}  # inputs untouched
    assert rows(studio, "deliveries") == 3 and rows(studio, "assets") == 3
    assert temp_files(out) == []
    # formats, depths and alpha survive
    assert read_image(out / "sub" / "b.jpg").format == "jpeg"
    grey = read_image(out / "sub" / "b.jpg").pixels
    assert grey.ndim == 2
    original = read_image(src / "sub" / "deep" / "c.png").pixels
    marked = read_image(out / "sub" / "deep" / "c.png")
    assert marked.bit_depth == 16 and marked.pixels.shape == original.shape
    np.testing.assert_array_equal(marked.pixels[..., 3], original[..., 3])
    # registry content
    match = studio.registry.lookup(int(records[0].delivery_id, 16))
    assert match.asset.original_path == str((src / "a.png").resolve())
    assert match.delivery.output_path == str((out / "a.png").resolve())
    assert match.asset.width == 128 and match.asset.height == 96


def test_embed_single_file_and_jpeg_quality(studio: Studio, tmp_path: Path) -> None:
    from .test_media import jpeg_quality_of

    src = write_encoded(tmp_path / "in" / "shot.JPG", texture((96, 128, 3)), ".jpg")
    (record,) = studio.embed_files([src], "Acme", tmp_path / "new" / "out")
    assert record.output == str(tmp_path / "new" / "out" / "shot.JPG")
    assert jpeg_quality_of(Path(record.output).read_bytes()) == 95
    assert record.to_json()["psnr_y"] is None or record.to_json()["psnr_y"] > 30


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_embed_bad_file_in_batch(studio: Studio, tmp_path: Path, kind: str) -> None:
    src = tmp_path / "in"
    src.mkdir()
    good = write_encoded(src / "good.png", texture((96, 128, 3)))
    bad = make_bad_file(kind, src)
    before = sha256_of(bad)
    out = tmp_path / "out"
    records = studio.embed_files([good, bad], "Acme", out)
    assert [r.status for r in records] == ["embedded", "failed"]
    failed = records[1]
    assert failed.delivery_id is None
    assert failed.error.startswith(str(bad)) and BAD_FILES[kind][1] in failed.error
    assert "\n" not in failed.error
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]
    assert sha256_of(bad) == before
    assert rows(studio, "deliveries") == 1 and rows(studio, "assets") == 1


def test_embed_takes_away_only_the_folders_it_made_and_left_empty(
    studio: Studio, tmp_path: Path
) -> None:
    src = tmp_path / "in"
    write_encoded(src / "shots" / "good.png", texture((96, 128, 3)))
    (src / "broken" / "deep").mkdir(parents=True)
    bad = make_bad_file("truncated_png", src / "broken" / "deep")
    records = studio.embed_files([src], "Acme", tmp_path / "new" / "out")
    assert sorted(r.status for r in records) == ["embedded", "failed"]
    assert {p.relative_to(tmp_path) for p in (tmp_path / "new").rglob("*")} == {
        Path("new/out"),
        Path("new/out/shots"),
        Path("new/out/shots/good.png"),
    }
    kept = tmp_path / "kept"
    (kept / "old").mkdir(parents=True)  # folders that were there before stay, empty or not
    (record,) = studio.embed_files([bad], "Acme", kept)
    assert record.status == "failed" and bad.exists()
    assert [p.name for p in kept.iterdir()] == ["old"]
    (record,) = studio.embed_files([bad], "Acme", tmp_path / "a" / "b")
    assert record.status == "failed" and not (tmp_path / "a").exists()


def test_embed_with_workers_writes_the_same_files_and_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "in"
    write_encoded(src / "a.png", sample_frames()[1][1])
    write_encoded(src / "b.jpg", texture((120, 160, 3), seed=3), ".jpg")
    make_bad_file("truncated_png", src)  # a failure mid-batch, with the pool running
    Studio.create(tmp_path / "one").close()
    shutil.copytree(tmp_path / "one", tmp_path / "two")  # the same key
    far_apart = (0x00000000, 0xFFFFFFFF, 0x0F0F0F0F, 0xF0F0F0F0)  # the same ids in both runs
    monkeypatch.setattr(Registry, "new_payload", lambda self: far_apart[self.count_deliveries()])
    results = {}
    for name, workers in (("one", 1), ("two", 2)):
        with Studio.open(tmp_path / name) as s:
            s.add_vendor("Acme")
            records = s.embed_files([src], "Acme", tmp_path / f"out_{name}", workers=workers)
            assert [r.status for r in records] == ["embedded", "embedded", "failed"]
            # the same original again, elsewhere: a new delivery of an indexed asset
            (again,) = s.embed_files([src / "a.png"], "Acme", tmp_path / name, workers=workers)
            table = s.registry._conn.execute(
                "SELECT sha256, phash, features FROM assets ORDER BY sha256"
            ).fetchall()
        files = [*sorted((tmp_path / f"out_{name}").iterdir()), Path(again.output)]
        results[name] = ([(p.name, p.read_bytes()) for p in files], table, again.status)
    assert results["one"] == results["two"]
    assert all(features is not None for _, _, features in results["one"][1])


def test_plan_embed_says_what_a_batch_would_do_and_writes_nothing(
    studio: Studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = shots(tmp_path / "shots")
    seq = tmp_path / "shots" / "seq"
    for n in (1, 2):
        write_encoded(seq / f"shot_010.{n:04d}.png", texture((64, 80, 3), seed=n))
    out = tmp_path / "out"
    plan = studio.plan_embed([src], "Acme", out)
    assert [(r.status, r.kind) for r in plan] == [
        ("planned", "image"),
        ("planned", "sequence"),
        ("planned", "image"),
        ("planned", "image"),
    ]
    assert all(r.delivery_id is None and r.error is None for r in plan)
    assert not out.exists() and rows(studio, "deliveries") == 0 and rows(studio, "assets") == 0
    done = studio.embed_files([src], "Acme", out)
    assert [r.status for r in done] == ["embedded"] * 4
    again = studio.plan_embed([src], "Acme", out)
    assert [(r.status, r.delivery_id, r.output) for r in again] == [
        ("skipped", r.delivery_id, r.output) for r in done
    ]
    other = studio.plan_embed([src / "a.png"], "Bluebird", out)  # the file is Acme's copy
    assert other[0].status == "failed" and "already exists and it holds delivery" in (
        other[0].error or ""
    )
    Path(done[0].output).unlink()  # as a run that crashed after its commit leaves it
    (resumed,) = studio.plan_embed([src / "a.png"], "Acme", out)
    assert (resumed.status, resumed.delivery_id) == ("planned", done[0].delivery_id)
    with pytest.raises(RegistryError, match="unknown vendor"):
        studio.plan_embed([src], "Nobody", out)
    before = rows(studio, "deliveries")
    studio.plan_embed([src], "Bluebird", tmp_path / "elsewhere")
    assert rows(studio, "deliveries") == before and not (tmp_path / "elsewhere").exists()


def test_embed_unknown_vendor_writes_nothing(studio: Studio, tmp_path: Path) -> None:
    src = write_encoded(tmp_path / "a.png", texture((64, 64, 3)))
    with pytest.raises(RegistryError, match="unknown vendor 'Nobody'"):
        studio.embed_files([src], "Nobody", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_embed_refusals_before_work(studio: Studio, tmp_path: Path) -> None:
    src = shots(tmp_path / "shots")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StudioError, match="no image, video or sequence files"):
        studio.embed_files([empty], "Acme", tmp_path / "o")
    with pytest.raises(StudioError, match="would overwrite an input"):
        studio.embed_files([src / "a.png"], "Acme", src)
    other = write_encoded(tmp_path / "other" / "a.png", texture((64, 64)))
    with pytest.raises(StudioError, match="several inputs map to this output"):
        studio.embed_files([src / "a.png", other], "Acme", tmp_path / "o")
    assert not (tmp_path / "o").exists()
    assert rows(studio, "deliveries") == 0


def test_embed_unwritable_out(
    studio: Studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_encoded(tmp_path / "a.png", texture((64, 64, 3)))
    blocker = tmp_path / "somefile"
    blocker.write_text("x")
    with pytest.raises(StudioError, match="cannot create output folder"):
        studio.embed_files([src], "Acme", blocker / "sub")
    with pytest.raises(StudioError, match=r"somefile: not a folder \(a file of that name"):
        studio.embed_files([src], "Acme", blocker)
    assert blocker.read_text() == "x"

    def read_only(path: Path, data: bytes) -> Path:
        raise MediaError(f"{path}: cannot write (Read-only file system)")

    monkeypatch.setattr(studio_module, "stage_file", read_only)
    with pytest.raises(StudioError, match="not writable"):
        studio.embed_files([src], "Acme", tmp_path / "ro")
    assert rows(studio, "deliveries") == 0


def test_embed_out_inside_input_folder_is_not_rewalked(studio: Studio, tmp_path: Path) -> None:
    src = shots(tmp_path / "shots")
    studio.embed_files([src], "Acme", src / "marked")
    records = studio.embed_files([src], "Acme", src / "marked")
    assert [r.status for r in records] == ["skipped"] * 3


def test_embed_resumes(studio: Studio, tmp_path: Path) -> None:
    src = shots(tmp_path / "shots")
    out = tmp_path / "out"
    first = studio.embed_files([src], "Acme", out)
    again = studio.embed_files([src], "Acme", out)
    assert [r.status for r in again] == ["skipped"] * 3
    assert [r.delivery_id for r in again] == [r.delivery_id for r in first]
    assert rows(studio, "deliveries") == 3
    # a crash after the commit and before the rename: the row exists, the file does not
    Path(first[0].output).unlink()
    resumed = studio.embed_files([src], "Acme", out)
    assert [r.status for r in resumed] == ["embedded", "skipped", "skipped"]
    assert resumed[0].delivery_id == first[0].delivery_id
    assert rows(studio, "deliveries") == 3


def test_embed_never_overwrites_foreign_outputs(studio: Studio, tmp_path: Path) -> None:
    src = write_encoded(tmp_path / "a.png", texture((64, 64, 3)))
    out = tmp_path / "out"
    studio.embed_files([src], "Acme", out)
    acme_copy = sha256_of(out / "a.png")
    (record,) = studio.embed_files([src], "Bluebird", out)
    assert record.status == "failed"
    assert "holds delivery" in record.error and "'Acme'" in record.error
    assert sha256_of(out / "a.png") == acme_copy
    stranger = write_encoded(out / "b.png", texture((64, 64)))
    before = sha256_of(stranger)
    (record,) = studio.embed_files(
        [write_encoded(tmp_path / "b.png", texture((64, 64)))], "Acme", out
    )
    assert record.status == "failed" and "not a delivery" in record.error
    assert sha256_of(stranger) == before
    assert rows(studio, "deliveries") == 1


def test_embed_subfolder_cannot_be_created(studio: Studio, tmp_path: Path) -> None:
    src = shots(tmp_path / "shots")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where a folder should be")
    records = studio.embed_files([src], "Acme", out)
    assert [r.status for r in records] == ["embedded", "failed", "failed"]
    assert "cannot create folder" in records[1].error
    assert rows(studio, "deliveries") == 1


def test_embed_rename_failure_rolls_back(
    studio: Studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_encoded(tmp_path / "a.png", texture((64, 64, 3)))

    def failing_publish(tmp: Path, path: Path) -> None:
        Path(tmp).unlink()
        raise MediaError(f"{path}: cannot write (Input/output error)")

    monkeypatch.setattr(studio_module, "publish_new_file", failing_publish)
    (record,) = studio.embed_files([src], "Acme", tmp_path / "out")
    assert record.status == "failed" and "Input/output error" in record.error
    assert rows(studio, "deliveries") == 0 and rows(studio, "assets") == 0
    assert not (tmp_path / "out").exists()  # the folder it made, empty, is taken away


def test_embed_commit_failure_leaves_no_file(
    studio: Studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_encoded(tmp_path / "a.png", texture((64, 64, 3)))

    def failing_add(*args: object, **kwargs: object) -> None:
        raise RegistryError("cannot commit (disk I/O error)")

    monkeypatch.setattr(studio_module.Registry, "add_delivery", failing_add)
    (record,) = studio.embed_files([src], "Acme", tmp_path / "out")
    assert record.status == "failed" and "disk I/O error" in record.error
    assert not (tmp_path / "out").exists()


def test_embed_interrupted_after_commit(
    studio: Studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_encoded(tmp_path / "a.png", texture((64, 64, 3)))

    def interrupted(tmp: Path, path: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(studio_module, "publish_new_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        studio.embed_files([src], "Acme", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # no temp file left, nor the folder
    assert rows(studio, "deliveries") == 1  # a delivery without a file: allowed, resumable


def test_embed_codec_refusal_is_per_file(
    studio: Studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_encoded(tmp_path / "a.png", texture((64, 64, 3)))

    def refusing(*args: object, **kwargs: object) -> None:
        raise ValueError("image too small for the mark")

    monkeypatch.setattr(studio_module, "embed_frame", refusing)
    (record,) = studio.embed_files([src], "Acme", tmp_path / "out")
    assert record.status == "failed" and record.error == f"{src}: image too small for the mark"


# --------------------------------------------------------------------------- trace


def test_trace_finds_vendor(studio: Studio, tmp_path: Path) -> None:
    src = write_encoded(tmp_path / "a.png", sample_frames()[1][1])  # a 3D movie frame
    (acme,) = studio.embed_files([src], "Acme", tmp_path / "acme")
    (blue,) = studio.embed_files([src], "Bluebird", tmp_path / "blue")
    results = studio.trace_files([blue.output, acme.output, src])
    assert [(r.found, r.vendor) for r in results] == [
        (True, "Bluebird"),
        (True, "Acme"),
        (False, None),
    ]
    assert results[0].delivery_id == blue.delivery_id
    assert results[0].asset == str(src.resolve())
    height, width = sample_frames()[1][1].shape[:2]
    assert {r.size for r in results} == {(width, height)}
    assert [r.sha256 for r in results] == [
        sha256_of(Path(p)) for p in (blue.output, acme.output, src)
    ]
    assert results[0].p_value < 1e-6 and results[0].scale == pytest.approx(1.0, abs=0.01)


def test_trace_of_a_cut_jpeg_is_refused_or_on_request_traced_with_a_note(
    studio: Studio, tmp_path: Path
) -> None:
    src = write_encoded(tmp_path / "a.png", sample_frames()[1][1])
    (acme,) = studio.embed_files([src], "Acme", tmp_path / "acme")
    cut = _cut_copy(Path(acme.output), tmp_path / "cut.jpg")  # a download cut short
    (refused,) = studio.trace_files([cut])
    assert refused.error == (
        f"{cut}: truncated JPEG (no end-of-image marker); --damaged-ok traces the part that decodes"
    )
    (traced,) = studio.trace_files([cut], damaged=True)
    assert traced.error is None and traced.found and traced.vendor == "Acme"
    assert traced.delivery_id == acme.delivery_id and traced.p_value < 1e-6
    (note,) = traced.notes
    assert note.startswith("the file is damaged (the decoder reports: cut short")
    (unmarked,) = studio.trace_files([_cut_copy(src, tmp_path / "u.jpg")], damaged=True)
    assert unmarked.error is None and not unmarked.found and unmarked.notes


def _cut_copy(src: Path, path: Path) -> Path:
    """`src` as JPEG, its data cut at 60 % (no end marker)."""
    data = write_encoded(path, read_image(src).pixels, ".jpg").read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


def test_trace_with_worker_processes_gives_the_same_records(studio: Studio, tmp_path: Path) -> None:
    src = write_encoded(tmp_path / "a.png", sample_frames()[1][1])
    (acme,) = studio.embed_files([src], "Acme", tmp_path / "acme")
    (blue,) = studio.embed_files([src], "Bluebird", tmp_path / "blue")
    plain = write_encoded(tmp_path / "plain.png", texture((96, 128, 3)))
    bad = make_bad_file("truncated_jpeg", tmp_path)
    batch = [acme.output, plain, bad, blue.output]
    ticks: list[int] = []
    alone = studio.trace_files(batch)
    side_by_side = studio.trace_files(
        batch, workers=2, progress=lambda done, total, path: ticks.append(done)
    )
    assert [r.to_json() for r in side_by_side] == [r.to_json() for r in alone]
    assert [(r.found, r.vendor) for r in side_by_side] == [
        (True, "Acme"),
        (False, None),
        (False, None),
        (True, "Bluebird"),
    ]
    assert ticks == [1, 2, 3, 4]
    reports = studio.trace_files(batch, workers=2, evidence=tmp_path / "reports")
    assert [r.report is not None for r in reports] == [True, True, False, True]
    with pytest.raises(StudioError, match="workers must be >= 1"):
        studio.trace_files(batch, workers=0)


def test_trace_unreadable_files(studio: Studio, tmp_path: Path) -> None:
    good = write_encoded(tmp_path / "good.png", texture((64, 64, 3)))
    bads = [make_bad_file(kind, tmp_path) for kind in sorted(BAD_FILES)]
    ticks: list[int] = []
    results = studio.trace_files([good, *bads], progress=lambda d, t, p: ticks.append(d))
    assert ticks == list(range(1, len(bads) + 2))
    assert results[0].error is None and results[0].found is False
    for record, bad, kind in zip(results[1:], bads, sorted(BAD_FILES), strict=True):
        assert record.found is False and record.error.startswith(str(bad))
        assert BAD_FILES[kind][1] in record.error
        assert record.to_json()["p_value"] is None and record.sha256 is None


def test_trace_refusals(studio: Studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StudioError, match="no image, video or sequence files"):
        studio.trace_files([empty])
    src = write_encoded(tmp_path / "a.png", texture((64, 64, 3)))

    def refusing(*args: object, **kwargs: object) -> None:
        raise ValueError("bad geometry")

    monkeypatch.setattr(studio_module, "detect_frame", refusing)
    (record,) = studio.trace_files([src])
    assert record.error == f"{src}: bad geometry"


def test_trace_never_names_an_unregistered_payload(
    studio: Studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_encoded(tmp_path / "a.png", texture((64, 64, 3)))
    seen: dict[str, object] = {}

    def fake_detect(image: np.ndarray, key: bytes, **kwargs: object) -> Detection:
        seen.update(kwargs)
        return Detection(True, 0xDEADBEEF, 9.0, 1e-9, 1e-12, 4.0, (0.0, 0.0), 1.0)

    monkeypatch.setattr(studio_module, "detect_frame", fake_detect)
    (record,) = studio.trace_files([src])
    candidates = seen["candidates"]
    assert isinstance(candidates, np.ndarray) and candidates.size == 0
    assert (record.found, record.vendor, record.delivery_id, record.scale) == (
        False,
        None,
        None,
        None,
    )
    assert record.mark_p_value == 1e-12  # a studio mark is there, but no delivery is named


def test_records_to_json() -> None:
    e = EmbedRecord("in.png", "out.png", "Acme", "0000beef", float("inf"), "embedded")
    assert e.to_json() == {
        "input": "in.png",
        "output": "out.png",
        "vendor": "Acme",
        "delivery_id": "0000beef",
        "psnr_y": None,
        "margin": None,
        "weak": False,
        "status": "embedded",
        "error": None,
        "kind": "image",
        "frames": None,
    }
    weak = EmbedRecord("in.png", "out.png", "Acme", "0000beef", 44.0, "embedded", margin=0.5)
    assert weak.weak and weak.to_json()["margin"] == 0.5
    t = TraceRecord("x.png", True, "Acme", "0000beef", "/a.png", 1e-9, 7.5, float("nan"))
    assert t.to_json()["scale"] is None and t.to_json()["p_value"] == 1e-9
    assert t.to_json()["frames"] is None and t.to_json()["seen"] == []


# --------------------------------------------------------------------------- backup


def test_backup_is_a_studio_with_the_same_key_and_records(studio: Studio, tmp_path: Path) -> None:
    out = studio.embed_files([shots(tmp_path / "shots")], "Acme", tmp_path / "out")
    assert [r.status for r in out] == ["embedded"] * 3
    dest = tmp_path / "backups" / "monday"
    manifest = studio.backup(dest)
    assert manifest["backup"] == str(dest) and manifest["source"] == str(studio.home.absolute())
    assert (manifest["vendors"], manifest["deliveries"], manifest["assets"]) == (2, 3, 3)
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [SECRET_NAME, REGISTRY_NAME, studio_module.BACKUP_MANIFEST]
    )
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    assert stat.S_IMODE((dest / SECRET_NAME).stat().st_mode) == 0o600
    written = json.loads((dest / studio_module.BACKUP_MANIFEST).read_text())
    assert written == {k: v for k, v in manifest.items() if k != "backup"}
    assert written["registry_sha256"] == sha256_of(dest / REGISTRY_NAME)
    assert not list(dest.parent.glob(".*"))  # no staging folder left
    with Studio.open(dest) as copy:
        assert copy._key == studio._key
        assert copy.status()["key_fingerprint"] == manifest["key_fingerprint"]
        assert copy.list_deliveries() == studio.list_deliveries()
        assert copy.registry.integrity() == "ok"
        # the copy traces what the studio marked
        traced = copy.trace_files([tmp_path / "out" / "a.png"])
        assert traced[0].found and traced[0].delivery_id == out[0].delivery_id
    # the copy is one file: no -wal beside it, nothing lost when only it is moved
    assert not list(dest.glob(f"{REGISTRY_NAME}-*"))


def test_backup_takes_one_snapshot_while_another_writer_is_busy(
    studio: Studio, tmp_path: Path
) -> None:
    other = sqlite3.connect(studio.home / REGISTRY_NAME, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process, mid-transaction
        other.execute(
            "INSERT INTO vendors (name, created_at) VALUES ('Half Written', '2026-12-07')"
        )
        manifest = studio.backup(tmp_path / "b")
        other.execute("COMMIT")
    finally:
        other.close()
    assert manifest["vendors"] == 2  # the open transaction is not in the copy
    with Studio.open(tmp_path / "b") as copy:
        assert [v.name for v in copy.list_vendors()] == ["Acme", "Bluebird"]
    assert [v.name for v in studio.list_vendors()] == ["Acme", "Bluebird", "Half Written"]


def test_backup_never_overwrites_and_leaves_nothing_when_it_fails(
    studio: Studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    for dest in (taken, taken / "keep.txt", studio.home):
        with pytest.raises(StudioError, match="already exists; a backup goes to a new folder"):
            studio.backup(dest)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]

    def broken(self: Registry, path: Path) -> None:
        Path(path).write_bytes(b"half")
        raise RegistryError(f"{path}: cannot copy the registry (disk I/O error)")

    monkeypatch.setattr(Registry, "copy_to", broken)
    with pytest.raises(RegistryError, match="disk I/O error"):
        studio.backup(tmp_path / "new" / "deep" / "b")
    assert not (tmp_path / "new").exists()  # the folders it created went too
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["home", "taken"])


def test_registry_copy_refuses_an_existing_file(studio: Studio, tmp_path: Path) -> None:
    target = tmp_path / "copy.sqlite"
    target.write_bytes(b"precious")
    with pytest.raises(RegistryError, match="cannot create"):
        studio.registry.copy_to(target)
    assert target.read_bytes() == b"precious"


def test_trace_thresholds_outside_zero_one_are_refused(studio: Studio, tmp_path: Path) -> None:
    pixels = texture((96, 128, 3), seed=5)
    for threshold in (0.0, 1.0, 1.5, -1.0):
        with pytest.raises(ValueError, match=rf"p_threshold must be in \(0, 1\), got {threshold}"):
            studio.trace_image(pixels, p_threshold=threshold)
        with pytest.raises(StudioError, match=r"p_threshold must be in \(0, 1\)"):
            studio.trace_files([shots(tmp_path / "s")], p_threshold=threshold)


def test_an_unmarked_delivery_reports_no_psnr(studio: Studio, tmp_path: Path) -> None:
    write_encoded(tmp_path / "in" / "a.png", texture((96, 128, 3), seed=6))
    (record,) = studio.embed_files([tmp_path / "in"], "Acme", tmp_path / "out", strength=0.0)
    assert record.status == "embedded" and record.psnr_y is None and record.weak


def test_an_output_that_appears_meanwhile_is_never_overwritten(
    studio: Studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_encoded(tmp_path / "a.png", texture((64, 64, 3)))
    out = tmp_path / "out" / "a.png"
    real_stage = studio_module.stage_file

    def racing_stage(path: Path, data: bytes) -> Path:
        tmp = real_stage(path, data)
        Path(path).write_bytes(b"another process's file")  # after the check, before publish
        return tmp

    monkeypatch.setattr(studio_module, "stage_file", racing_stage)
    (record,) = studio.embed_files([src], "Acme", tmp_path / "out")
    assert record.status == "failed" and "already exists" in (record.error or "")
    assert "not overwritten" in (record.error or "")
    assert out.read_bytes() == b"another process's file"
    assert rows(studio, "deliveries") == 0  # the delivery that could not land is rolled back
    assert temp_files(tmp_path / "out") == []
    # a dangling symbolic link is something there too
    out.unlink()
    out.symlink_to(tmp_path / "nowhere.png")
    monkeypatch.setattr(studio_module, "stage_file", real_stage)
    (record,) = studio.embed_files([src], "Acme", tmp_path / "out")
    assert record.status == "failed" and out.is_symlink()


def test_a_rerun_removes_what_a_killed_run_staged(studio: Studio, tmp_path: Path) -> None:
    shots(tmp_path / "shots")
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    stale = [out / ".a.png.0123456789ab.tmp", out / "sub" / ".b.jpg.ba9876543210.tmp"]
    kept = [
        out / ".a.png.notours.tmp",  # not a staged name
        out / ".other.png.0123456789ab.tmp",  # not an output of this batch
        out / "sub" / "b.jpg.0123456789ab.tmp",  # not hidden
    ]
    for path in (*stale, *kept):
        path.write_bytes(b"a marked copy that never landed")
        os.utime(path, (1e9, 1e9))
    records = studio.embed_files([tmp_path / "shots"], "Acme", out)
    assert [r.status for r in records] == ["embedded"] * 3
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)


def test_a_strip_is_marked_and_indexed(studio: Studio, tmp_path: Path) -> None:
    # 16 x 16384 px is within the input limits; its index features once crashed OpenCV
    strip = write_encoded(tmp_path / "strip.png", texture((16, 16384, 3), seed=7))
    (record,) = studio.embed_files([strip], "Acme", tmp_path / "out")
    assert record.status == "embedded", record.error


def test_a_file_name_that_is_not_utf8(studio: Studio, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    odd = folder / os.fsdecode(b"caf\xe9.png")  # Latin-1, as an old archive would hold
    write_encoded(odd, texture((96, 128, 3), seed=8))
    good = write_encoded(folder / "good.png", texture((96, 128, 3), seed=9))
    refused, marked = studio.embed_files([odd, good], "Acme", tmp_path / "out")
    assert refused.status == "failed" and "caf\\xe9.png: the file name is not valid UTF-8" in (
        refused.error or ""
    )
    assert marked.status == "embedded" and rows(studio, "deliveries") == 1
    (indexed,) = studio.add_assets([odd])
    assert indexed.status == "failed" and "not valid UTF-8" in (indexed.error or "")
    # tracing it, with reports and their summary, works: names are escaped in the text
    records = studio.trace_files([odd, Path(marked.output or "")], evidence=tmp_path / "r")
    assert [r.error for r in records] == [None, None] and records[1].found
    summary = studio.write_trace_summary(records, tmp_path / "r").read_text()
    assert "caf\\xe9.png" in summary and "(caf%E9.png." in summary


def test_a_loop_of_links_fails_alone(studio: Studio, tmp_path: Path) -> None:
    (tmp_path / "loop1.png").symlink_to(tmp_path / "loop2.png")
    (tmp_path / "loop2.png").symlink_to(tmp_path / "loop1.png")
    good = write_encoded(tmp_path / "good.png", texture((96, 128, 3), seed=1))
    looped, marked = studio.embed_files([tmp_path / "loop1.png", good], "Acme", tmp_path / "o")
    assert looped.status == "failed" and "symbolic links" in (looped.error or "")
    assert marked.status == "embedded"
    (traced,) = studio.trace_files([tmp_path / "loop1.png"])
    assert traced.error is not None and "symbolic links" in traced.error


def test_a_folder_that_cannot_be_listed_is_an_error(
    studio: Studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shots(tmp_path / "shots")
    locked = tmp_path / "shots" / "sub"
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:
        if Path(os.fsdecode(path)) == locked:  # as a folder of mode 000 does for others
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(MediaError, match=rf"^{re.escape(str(locked))}: cannot read folder"):
        studio.embed_files([tmp_path / "shots"], "Acme", tmp_path / "out")
    assert rows(studio, "deliveries") == 0 and not (tmp_path / "out").exists()


def test_status_of_a_damaged_registry_reports_it(tmp_path: Path) -> None:
    with Studio.create(tmp_path / "home") as s:
        for n in range(200):  # a few pages of rows
            s.add_vendor(f"Vendor {n:03d} " + "x" * 40)
    path = tmp_path / "home" / REGISTRY_NAME
    data = bytearray(path.read_bytes())
    for page in range(1, len(data) // 4096):  # every page but the header's
        data[page * 4096 : page * 4096 + 300] = b"\xa5" * 300
    path.write_bytes(bytes(data))
    with Studio.open(tmp_path / "home") as s:
        status = s.status()
    assert status["integrity"] != "ok"
    assert status["key_fingerprint"] and status["schema_version"]


def test_init_on_a_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StudioError, match="not a folder"):
        Studio.create(tmp_path / "afile")
