"""Tests of the leaktrace command line: exit codes, stdout/stderr, JSON, bad inputs."""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import _demo
from cli import main as cli_main
from cli.main import app
from watermark.errors import StudioError
from watermark.samples import sample_frames
from watermark.studio import HOME_ENV, REGISTRY_NAME, SECRET_NAME, Studio, TraceRecord

from ._factories import (
    BAD_FILES,
    make_bad_file,
    several_pictures,
    sha256_of,
    texture,
    write_encoded,
)
from .frames import hatched_frame


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv(HOME_ENV, raising=False)
    return CliRunner()


@pytest.fixture
def home(tmp_path: Path, runner: CliRunner) -> Path:
    path = tmp_path / "studio"
    assert runner.invoke(app, ["init", "--home", str(path)]).exit_code == 0
    assert runner.invoke(app, ["vendor", "add", "Acme", "--home", str(path)]).exit_code == 0
    assert runner.invoke(app, ["vendor", "add", "Bluebird", "--home", str(path)]).exit_code == 0
    return path


def deliveries(home: Path) -> int:
    with sqlite3.connect(home / REGISTRY_NAME) as conn:
        return conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]


def assets(home: Path) -> int:
    with sqlite3.connect(home / REGISTRY_NAME) as conn:
        return conn.execute("SELECT count(*) FROM assets").fetchone()[0]


def one_error_line(stderr: str) -> str:
    """The single error line of stderr (weak-mark warnings on tiny test frames aside)."""
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# --------------------------------------------------------------------------- basics


def test_help_documents_exit_codes(runner: CliRunner) -> None:
    for args in (["--help"], ["embed", "--help"], ["trace", "--help"], ["vendor", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0
        assert "Exit codes" in result.stdout and "2 usage" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["frobnicate"],
        ["embed", "x.png", "--out", "o"],
        ["trace"],
        ["vendor", "add"],
        ["init", "--bogus"],
    ],
)
def test_usage_errors_exit_2(runner: CliRunner, tmp_path: Path, args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--home", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stdout == ""


def test_python_dash_m(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "leaktrace" in result.stdout


def test_init_twice_refuses(runner: CliRunner, tmp_path: Path) -> None:
    home = tmp_path / "studio"
    first = runner.invoke(app, ["init", "--home", str(home)])
    assert first.exit_code == 0 and str(home) in first.stdout
    assert stat.S_IMODE((home / SECRET_NAME).stat().st_mode) == 0o600
    key = (home / SECRET_NAME).read_bytes()
    second = runner.invoke(app, ["init", "--home", str(home)])
    assert second.exit_code == 1
    assert "already exists" in one_error_line(second.stderr)
    assert (home / SECRET_NAME).read_bytes() == key


def test_home_from_root_option_and_env(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert runner.invoke(app, ["--home", str(a), "init"]).exit_code == 0
    assert (a / SECRET_NAME).exists()
    monkeypatch.setenv(HOME_ENV, str(b))
    assert runner.invoke(app, ["init"]).exit_code == 0
    assert (b / SECRET_NAME).exists()
    assert runner.invoke(app, ["--home", str(a), "vendor", "add", "OnlyInA"]).exit_code == 0
    listed = runner.invoke(app, ["vendor", "list", "--json", "--home", str(a)])
    assert [v["name"] for v in json.loads(listed.stdout)] == ["OnlyInA"]
    assert json.loads(runner.invoke(app, ["vendor", "list", "--json"]).stdout) == []


def test_default_home_is_dot_leaktrace(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["init"]).exit_code == 0
    assert (tmp_path / ".leaktrace" / SECRET_NAME).exists()


def test_no_studio(runner: CliRunner, tmp_path: Path) -> None:
    for args in (
        ["vendor", "list"],
        ["trace", "x.png"],
        ["embed", "x.png", "--vendor", "A", "--out", "o"],
    ):
        result = runner.invoke(app, [*args, "--home", str(tmp_path / "none")])
        assert result.exit_code == 1
        assert "no studio here" in one_error_line(result.stderr)


def test_debug_shows_the_exception(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "vendor", "list", "--home", str(tmp_path)])
    assert result.exit_code == 1
    assert isinstance(result.exception, StudioError)


def test_unexpected_error_is_one_line(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(home: Path) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Studio, "open", broken)
    result = runner.invoke(app, ["vendor", "list", "--home", str(tmp_path)])
    assert result.exit_code == 1
    assert "unexpected RuntimeError: disk on fire" in one_error_line(result.stderr)
    result = runner.invoke(app, ["--debug", "vendor", "list", "--home", str(tmp_path)])
    assert isinstance(result.exception, RuntimeError)


# --------------------------------------------------------------------------- vendors


def test_vendor_add_list_json(runner: CliRunner, home: Path) -> None:
    added = runner.invoke(app, ["vendor", "add", "Kestrel Post", "--home", str(home)])
    assert added.exit_code == 0 and "Kestrel Post" in added.stdout
    listed = runner.invoke(app, ["vendor", "list", "--json", "--home", str(home)])
    assert listed.exit_code == 0 and listed.stderr == ""
    document = json.loads(listed.stdout)
    assert [v["name"] for v in document] == ["Acme", "Bluebird", "Kestrel Post"]
    assert set(document[0]) == {"name", "created_at", "deliveries"}
    assert [v["deliveries"] for v in document] == [0, 0, 0]
    table = runner.invoke(app, ["vendor", "list", "--home", str(home)])
    assert table.exit_code == 0 and "Kestrel Post" in table.stdout


def test_a_secret_open_to_other_users_is_warned_about(runner: CliRunner, home: Path) -> None:
    secret = home / SECRET_NAME
    quiet = runner.invoke(app, ["vendor", "list", "--json", "--home", str(home)])
    assert quiet.exit_code == 0 and quiet.stderr == ""  # init wrote it 0600
    secret.chmod(0o644)
    warned = runner.invoke(app, ["vendor", "list", "--json", "--home", str(home)])
    assert warned.exit_code == 0 and json.loads(warned.stdout)[0]["name"] == "Acme"
    assert warned.stderr == (
        f"warning: {secret}: the studio secret is open to other users (mode 0644); anyone "
        f"who reads it can forge or strip marks: chmod 600 {secret}\n"
    )
    secret.chmod(0o600)
    again = runner.invoke(app, ["vendor", "list", "--home", str(home)])
    assert again.exit_code == 0 and again.stderr == ""


def test_status_describes_the_studio_and_fails_on_a_broken_registry(
    runner: CliRunner, home: Path, tmp_path: Path
) -> None:
    shown = runner.invoke(app, ["status", "--json", "--home", str(home)])
    assert shown.exit_code == 0 and shown.stderr == ""
    document = json.loads(shown.stdout)
    assert document["vendors"] == 2 and document["deliveries"] == document["assets"] == 0
    assert document["integrity"] == "ok" and document["secret_mode"] == "0600"
    fingerprint = document["key_fingerprint"]
    key = (home / SECRET_NAME).read_bytes()
    assert len(fingerprint) == 16 and fingerprint not in (key.hex(), key.hex()[:16])
    other = tmp_path / "other"
    assert runner.invoke(app, ["init", "--home", str(other)]).exit_code == 0
    theirs = json.loads(runner.invoke(app, ["status", "--json", "--home", str(other)]).stdout)
    assert theirs["key_fingerprint"] != fingerprint
    (other / SECRET_NAME).write_bytes(key)  # our secret in another studio: refused
    swapped = runner.invoke(app, ["status", "--json", "--home", str(other)])
    assert swapped.exit_code == 1 and "not this studio's secret" in swapped.stdout
    second = tmp_path / "second"  # the studio copied to a second machine: the same one
    second.mkdir()
    for name in (SECRET_NAME, REGISTRY_NAME):
        shutil.copyfile(home / name, second / name)
    ours = json.loads(runner.invoke(app, ["status", "--json", "--home", str(second)]).stdout)
    assert ours["key_fingerprint"] == fingerprint
    text = runner.invoke(app, ["status", "--home", str(home)])
    assert text.exit_code == 0 and f"key fingerprint: {fingerprint}\n" in text.stdout
    with sqlite3.connect(home / REGISTRY_NAME) as conn:  # a delivery of a vendor that is not
        conn.execute(
            "INSERT INTO assets (sha256, original_path, width, height, phash, created_at) "
            "VALUES (?, 'a.png', 8, 8, '0000000000000000', 'now')",
            ("a" * 64,),
        )
        conn.execute(
            "INSERT INTO deliveries (payload, vendor_id, asset_id, created_at, codec_version, "
            "codec_params, output_path) VALUES (7, 99, 1, 'now', 'lt1', '{}', 'o.png')"
        )
    broken = runner.invoke(app, ["status", "--json", "--home", str(home)])
    assert broken.exit_code == 1
    assert json.loads(broken.stdout)["integrity"] == (
        "row 1 of deliveries points at a missing vendors row"
    )
    assert "integrity check failed: row 1 of deliveries" in one_error_line(broken.stderr)


def test_a_reader_that_stops_early_is_not_an_error(home: Path) -> None:
    command = [sys.executable, "-m", "cli", "status", "--home", str(home)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        assert child.stdout is not None and child.stderr is not None
        child.stdout.close()  # gone before the first line, as `| head -0` would be
        stderr = child.stderr.read()
        assert child.wait(timeout=60) == 141 and stderr == b""


def test_a_table_reader_that_stops_early_is_not_an_error(home: Path) -> None:
    # rich prints the tables; its own broken-pipe handler would exit 1
    command = [sys.executable, "-m", "cli", "vendor", "list", "--home", str(home)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        assert child.stdout is not None and child.stderr is not None
        child.stdout.close()
        stderr = child.stderr.read()
        assert child.wait(timeout=60) == 141 and stderr == b""


def test_a_command_that_fails_as_a_whole_still_prints_one_json_document(
    runner: CliRunner, home: Path, tmp_path: Path
) -> None:
    src = write_encoded(tmp_path / "a.png", texture((96, 128, 3), seed=1))
    for args, message in (
        (["status", "--json", "--home", str(tmp_path / "none")], "no studio here"),
        (
            ["embed", str(src), "--vendor", "Nobody", "--out", str(tmp_path / "o"), "--json"],
            "unknown vendor 'Nobody'",
        ),
        (["delivery", "show", "12345678", "--json"], "no delivery 12345678"),
        (["trace", str(tmp_path / "empty"), "--json"], "no image, video or sequence"),
    ):
        (tmp_path / "empty").mkdir(exist_ok=True)
        result = runner.invoke(app, [*args, "--home", str(home)] if "--home" not in args else args)
        assert result.exit_code == 1, result.output
        document = json.loads(result.stdout)
        assert list(document) == ["error"] and message in document["error"]
        assert one_error_line(result.stderr) == f"error: {document['error']}"


def test_file_names_cannot_forge_error_lines(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    evil = tmp_path / "evil\nerror: fake.png\x1b[31m"
    evil.write_bytes(b"not an image")
    result = runner.invoke(app, ["trace", str(evil), "--json", "--home", str(home)])
    assert result.exit_code == 1
    line = one_error_line(result.stderr)
    assert "\\nerror: fake.png\\x1b[31m: not an image" in line
    assert json.loads(result.stdout)[0]["file"] == str(evil)  # the JSON keeps the real name


def test_unknown_codec_or_preset_is_a_usage_error(
    runner: CliRunner, home: Path, tmp_path: Path
) -> None:
    src = write_encoded(tmp_path / "a.png", texture((96, 128, 3), seed=1))
    for option in (["--codec", "bogus"], ["--preset", "warp"]):
        args = ["embed", str(src), "--vendor", "Acme", "--out", str(tmp_path / "o"), *option]
        result = runner.invoke(app, [*args, "--home", str(home)])
        assert result.exit_code == 2 and "is not one of" in result.stderr
    assert not (tmp_path / "o").exists() and deliveries(home) == 0


def test_vendor_add_duplicate_and_invalid(runner: CliRunner, home: Path) -> None:
    dup = runner.invoke(app, ["vendor", "add", "acme", "--home", str(home)])
    assert dup.exit_code == 1 and "already exists" in one_error_line(dup.stderr)
    bad = runner.invoke(app, ["vendor", "add", "a/b", "--home", str(home)])
    assert bad.exit_code == 1 and "invalid vendor name" in one_error_line(bad.stderr)


def test_delivery_list_and_show(
    runner: CliRunner, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_encoded(tmp_path / "shots" / "a.png", texture((96, 128, 3), seed=1))
    empty = runner.invoke(app, ["delivery", "list", "--home", str(home)])
    assert empty.exit_code == 0 and empty.stdout.count("┏") == 1  # the header, no rows
    made = {}
    for vendor in ("Acme", "Bluebird"):
        out = tmp_path / vendor
        args = ["embed", str(src), "--vendor", vendor, "--out", str(out), "--json"]
        result = runner.invoke(app, [*args, "--home", str(home)])
        assert result.exit_code == 0, result.stderr
        made[vendor] = json.loads(result.stdout)[0]
    listed = runner.invoke(app, ["delivery", "list", "--json", "--home", str(home)])
    assert listed.exit_code == 0 and listed.stderr == ""
    document = json.loads(listed.stdout)
    assert [(d["vendor"], d["delivery_id"]) for d in document] == [
        (v, made[v]["delivery_id"]) for v in ("Acme", "Bluebird")
    ]
    assert {d["asset"] for d in document} == {str(src.resolve())}
    assert {d["asset_sha256"] for d in document} == {sha256_of(src)}
    assert document[1]["output"] == str(Path(made["Bluebird"]["output"]).resolve())
    only = runner.invoke(
        app, ["delivery", "list", "--vendor", "bluebird", "--json", "--home", str(home)]
    )
    assert [d["vendor"] for d in json.loads(only.stdout)] == ["Bluebird"]
    table = runner.invoke(app, ["delivery", "list", "--home", str(home)])
    assert table.exit_code == 0 and made["Acme"]["delivery_id"] in table.stdout
    latest = runner.invoke(app, ["delivery", "list", "--last", "1", "--json", "--home", str(home)])
    assert [d["vendor"] for d in json.loads(latest.stdout)] == ["Bluebird"]
    every = runner.invoke(app, ["delivery", "list", "--last", str(2**70), "--home", str(home)])
    assert every.exit_code == 0 and all(m["delivery_id"] in every.stdout for m in made.values())
    bad_last = runner.invoke(app, ["delivery", "list", "--last", "0", "--home", str(home)])
    assert bad_last.exit_code == 2 and "--last" in bad_last.stderr
    # a long listing is printed a page of rows at a time, every row once
    monkeypatch.setattr(cli_main, "_TABLE_PAGE", 1)
    paged = runner.invoke(app, ["delivery", "list", "--home", str(home)])
    assert paged.exit_code == 0 and paged.stdout.count("┏") == 2  # two tables
    assert all(paged.stdout.count(m["delivery_id"]) == 1 for m in made.values())
    wanted = made["Bluebird"]["delivery_id"]
    shown = runner.invoke(app, ["delivery", "show", wanted.upper(), "--json", "--home", str(home)])
    assert shown.exit_code == 0 and json.loads(shown.stdout) == document[1]
    text = runner.invoke(app, ["delivery", "show", wanted, "--home", str(home)])
    assert text.exit_code == 0 and "vendor: Bluebird\n" in text.stdout
    for args, message in [
        (["list", "--vendor", "Nobody"], "unknown vendor 'Nobody'"),
        (["show", "zz"], "a delivery id is 8 hex digits; got 'zz'"),
        (["show", "00000000"], "no delivery 00000000 in this studio"),
    ]:
        failed = runner.invoke(app, ["delivery", *args, "--home", str(home)])
        assert failed.exit_code == 1 and message in one_error_line(failed.stderr)


# --------------------------------------------------------------------------- embed


def test_asset_list_and_vendor_counts(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    src = write_encoded(tmp_path / "shots" / "a.png", texture((96, 128, 3), seed=1))
    never = write_encoded(tmp_path / "kept" / "b.png", texture((80, 112, 3), seed=2))
    for vendor in ("Acme", "Bluebird"):
        out = tmp_path / vendor
        args = ["embed", str(src), "--vendor", vendor, "--out", str(out), "--home", str(home)]
        assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, ["asset", "add", str(never), "--home", str(home)]).exit_code == 0
    listed = runner.invoke(app, ["asset", "list", "--json", "--home", str(home)])
    assert listed.exit_code == 0
    document = json.loads(listed.stdout)
    assert [(d["original"], d["deliveries"], d["indexed"]) for d in document] == [
        (str(src.resolve()), 2, True),
        (str(never.resolve()), 0, True),
    ]
    assert document[1]["sha256"] == sha256_of(never) and document[1]["width"] == 112
    table = runner.invoke(app, ["asset", "list", "--home", str(home)])
    assert table.exit_code == 0 and "112x80" in table.stdout
    vendors = json.loads(
        runner.invoke(app, ["vendor", "list", "--json", "--home", str(home)]).stdout
    )
    assert {v["name"]: v["deliveries"] for v in vendors} == {"Acme": 1, "Bluebird": 1}


def test_trace_workers(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    files = [write_encoded(tmp_path / f"{n}.png", texture((96, 128, 3), seed=n)) for n in (1, 2)]
    args = ["trace", *map(str, files), "--json", "--home", str(home)]
    alone = runner.invoke(app, args)
    both = runner.invoke(app, [*args, "--workers", "2"])
    assert alone.exit_code == both.exit_code == 0
    assert json.loads(both.stdout) == json.loads(alone.stdout)
    assert runner.invoke(app, [*args, "--workers", "0"]).exit_code == 2


def test_embed_dry_run(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    src = write_encoded(tmp_path / "shots" / "a.png", texture((96, 128, 3), seed=1))
    out = tmp_path / "out"
    args = ["embed", str(src), "--vendor", "Acme", "--out", str(out), "--home", str(home)]
    planned = runner.invoke(app, [*args, "--dry-run", "--json"])
    assert planned.exit_code == 0
    (record,) = json.loads(planned.stdout)
    assert (record["status"], record["output"]) == ("planned", str(out / "a.png"))
    assert not out.exists() and deliveries(home) == 0 and assets(home) == 0
    assert runner.invoke(app, args).exit_code == 0
    theirs = [*args[:3], "Bluebird", *args[4:]]  # the same output, another vendor
    refused = runner.invoke(app, [*theirs, "--dry-run"])
    assert refused.exit_code == 1 and "already exists and it holds delivery" in one_error_line(
        refused.stderr
    )
    assert "failed" in refused.stdout and deliveries(home) == 1


def test_embed_json(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    src = tmp_path / "shots"
    write_encoded(src / "a.png", texture((96, 128, 3), seed=1))
    write_encoded(src / "sub" / "b.png", texture((96, 128, 4), seed=2))
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["embed", str(src), "--vendor", "Acme", "--out", str(out), "--json", "--home", str(home)],
    )
    assert result.exit_code == 0, result.stderr
    # 64 px test frames are too small to carry a robust mark: one warning each, nothing else
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 2 and all("weak mark (margin" in w for w in warnings)
    document = json.loads(result.stdout)
    assert isinstance(document, list) and len(document) == 2
    for item in document:
        assert {"input", "output", "vendor", "delivery_id", "psnr_y"} <= set(item)
        assert item["vendor"] == "Acme" and len(item["delivery_id"]) == 8
        assert item["psnr_y"] is None or isinstance(item["psnr_y"], float)
    assert [Path(i["output"]).relative_to(out).as_posix() for i in document] == [
        "a.png",
        "sub/b.png",
    ]
    assert deliveries(home) == 2
    table = runner.invoke(
        app, ["embed", str(src), "--vendor", "Acme", "--out", str(out), "--home", str(home)]
    )
    assert table.exit_code == 0 and "skipped" in table.stdout


def embed_refused(runner: CliRunner, home: Path, source: Path, out: Path) -> str:
    """Embed `source` alone, which must fail: exit 1, nothing written or registered, the
    source unchanged; the error line."""
    before = sha256_of(source)
    result = runner.invoke(
        app, ["embed", str(source), "--vendor", "Acme", "--out", str(out), "--home", str(home)]
    )
    assert result.exit_code == 1
    assert not out.exists()  # no file, nor the folder made for it
    assert deliveries(home) == 0 and assets(home) == 0 and sha256_of(source) == before
    return one_error_line(result.stderr)


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_embed_bad_input(runner: CliRunner, home: Path, tmp_path: Path, kind: str) -> None:
    src = tmp_path / "in"
    src.mkdir()
    bad = make_bad_file(kind, src)
    line = embed_refused(runner, home, bad, tmp_path / "out")
    assert str(bad) in line and BAD_FILES[kind][1] in line


def test_trace_damaged_ok_traces_a_cut_jpeg_with_a_note(
    runner: CliRunner, home: Path, tmp_path: Path
) -> None:
    cut = make_bad_file("truncated_jpeg", tmp_path)
    before = sha256_of(cut)
    refused = runner.invoke(app, ["trace", str(cut), "--home", str(home)])
    assert refused.exit_code == 1
    assert one_error_line(refused.stderr) == (
        f"error: {cut}: truncated JPEG (no end-of-image marker); "
        "--damaged-ok traces the part that decodes"
    )
    args = ["trace", str(cut), "--damaged-ok", "--home", str(home)]
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and f"{cut}: note: the file is damaged" in table.stdout
    traced = runner.invoke(app, [*args, "--json"])
    assert traced.exit_code == 0
    (record,) = json.loads(traced.stdout)
    assert record["error"] is None and record["found"] is False
    assert record["notes"][0].startswith("the file is damaged (the decoder reports: cut short")
    assert sha256_of(cut) == before


def test_a_file_of_several_pictures_is_not_marked_and_is_traced_with_a_note(
    runner: CliRunner, home: Path, tmp_path: Path
) -> None:
    anim = several_pictures(tmp_path / "in" / "anim.webp", 3)
    line = embed_refused(runner, home, anim, tmp_path / "out")
    assert f"{anim}: an animated WebP of 3 frames; leaktrace marks one picture per file" in line
    traced = runner.invoke(app, ["trace", str(anim), "--json", "--home", str(home)])
    assert traced.exit_code == 0
    (record,) = json.loads(traced.stdout)
    assert record["error"] is None and record["found"] is False
    assert "only the first of the file's 3 pictures was traced" in record["notes"]
    indexed = runner.invoke(app, ["asset", "add", str(anim), "--home", str(home)])
    assert indexed.exit_code == 1 and "an animated WebP of 3 frames" in indexed.stderr
    assert assets(home) == 0
    leak = write_encoded(tmp_path / "leak.png", texture((64, 64, 3)))
    against = runner.invoke(app, ["trace", str(leak), "--original", str(anim), "--home", str(home)])
    assert against.exit_code == 1 and "an animated WebP of 3 frames" in against.stderr


def test_embed_bad_input_among_good_json(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    good = write_encoded(tmp_path / "in" / "good.png", texture((64, 64, 3)))
    bad = make_bad_file("truncated_png", tmp_path / "in")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "embed",
            str(tmp_path / "in"),
            "--vendor",
            "Acme",
            "--out",
            str(out),
            "--json",
            "--home",
            str(home),
        ],
    )
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert [(Path(d["input"]).name, d["status"]) for d in document] == [
        ("cut.png", "failed"),
        ("good.png", "embedded"),
    ]
    assert str(bad) in one_error_line(result.stderr)
    assert sorted(p.name for p in out.iterdir()) == [good.name]
    assert deliveries(home) == 1


def test_embed_unwritable_out(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    src = write_encoded(tmp_path / "a.png", texture((64, 64, 3)))
    before = sha256_of(src)
    blocker = tmp_path / "somefile"
    blocker.write_text("x")
    result = runner.invoke(
        app,
        ["embed", str(src), "--vendor", "Acme", "--out", str(blocker / "sub"), "--home", str(home)],
    )
    assert result.exit_code == 1
    assert str(blocker / "sub") in one_error_line(result.stderr)
    assert blocker.read_text() == "x" and sha256_of(src) == before
    assert deliveries(home) == 0


def test_embed_unknown_vendor(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    src = write_encoded(tmp_path / "a.png", texture((64, 64, 3)))
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["embed", str(src), "--vendor", "Nobody", "--out", str(out), "--home", str(home)]
    )
    assert result.exit_code == 1
    assert "unknown vendor 'Nobody'" in one_error_line(result.stderr)
    assert not out.exists() and deliveries(home) == 0


def test_embed_onto_input_refused(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    src = write_encoded(tmp_path / "a.png", texture((64, 64, 3)))
    before = sha256_of(src)
    result = runner.invoke(
        app, ["embed", str(src), "--vendor", "Acme", "--out", str(tmp_path), "--home", str(home)]
    )
    assert result.exit_code == 1
    assert "would overwrite an input" in one_error_line(result.stderr)
    assert sha256_of(src) == before


# --------------------------------------------------------------------------- trace


def test_mark_then_trace_finds_the_vendor(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    src = write_encoded(tmp_path / "frame.png", sample_frames()[1][1])
    for vendor in ("Acme", "Bluebird"):
        out = tmp_path / vendor
        result = runner.invoke(
            app, ["embed", str(src), "--vendor", vendor, "--out", str(out), "--home", str(home)]
        )
        assert result.exit_code == 0, result.stderr
    leaked = tmp_path / "Bluebird" / "frame.png"
    result = runner.invoke(app, ["trace", str(leaked), "--json", "--home", str(home)])
    assert result.exit_code == 0
    (verdict,) = json.loads(result.stdout)
    assert {"file", "found", "vendor", "delivery_id", "asset", "p_value", "score", "scale"} <= set(
        verdict
    )
    assert verdict["found"] is True and verdict["vendor"] == "Bluebird"
    assert verdict["asset"] == str(src.resolve())
    assert not any("periodic texture" in note for note in verdict["notes"])
    table = runner.invoke(app, ["trace", str(leaked), "--home", str(home)])
    assert table.exit_code == 0 and "Bluebird" in table.stdout


def test_trace_notes_a_texture_cut(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    # dense hatching is cut out before the blind decode: the record says so, in JSON and
    # under the table
    src = write_encoded(tmp_path / "page.png", hatched_frame(720, 1280, seed=3))
    out = tmp_path / "acme"
    args = ["embed", str(src), "--vendor", "Acme", "--out", str(out), "--home", str(home)]
    assert runner.invoke(app, args).exit_code == 0
    leaked = out / "page.png"
    result = runner.invoke(app, ["trace", str(leaked), "--blind", "--json", "--home", str(home)])
    assert result.exit_code == 0
    (verdict,) = json.loads(result.stdout)
    assert verdict["found"] is True and verdict["vendor"] == "Acme"
    assert any("periodic texture" in note for note in verdict["notes"])
    table = runner.invoke(app, ["trace", str(leaked), "--blind", "--home", str(home)])
    assert table.exit_code == 0
    assert f"{leaked}: note: strong periodic texture" in " ".join(table.stdout.split())


def test_trace_unmarked_exits_0(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    src = write_encoded(tmp_path / "frame.png", texture((128, 128, 3)))
    result = runner.invoke(app, ["trace", str(src), "--json", "--home", str(home)])
    assert result.exit_code == 0 and result.stderr == ""
    (verdict,) = json.loads(result.stdout)
    assert verdict["found"] is False and verdict["vendor"] is None
    table = runner.invoke(app, ["trace", str(src), "--home", str(home)])
    assert "no mark found" in table.stdout


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_trace_bad_input(runner: CliRunner, home: Path, tmp_path: Path, kind: str) -> None:
    good = write_encoded(tmp_path / "good.png", texture((64, 64, 3)))
    bad = make_bad_file(kind, tmp_path)
    before = sha256_of(bad)
    result = runner.invoke(app, ["trace", str(good), str(bad), "--json", "--home", str(home)])
    assert result.exit_code == 1
    line = one_error_line(result.stderr)
    assert str(bad) in line and BAD_FILES[kind][1] in line
    document = json.loads(result.stdout)
    assert len(document) == 2 and document[0]["error"] is None and document[1]["error"]
    assert sha256_of(bad) == before
    table = runner.invoke(app, ["trace", str(good), str(bad), "--home", str(home)])
    assert table.exit_code == 1 and "unreadable" in table.stdout


def test_trace_empty_folder(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["trace", str(tmp_path / "empty"), "--home", str(home)])
    assert result.exit_code == 1
    assert "no image, video or sequence files" in one_error_line(result.stderr)


# --------------------------------------------------------------------------- demo


def test_demo(runner: CliRunner) -> None:
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "correct" in result.stdout
    assert "Harbor Dubbing" in result.stdout


def test_demo_wrong_verdict_exits_1(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = TraceRecord("leak.png", True, "Kestrel Post", "0000beef", "/a.png", 1e-9, 9.0, 0.5)

    def fake_run(workdir: Path, *, log: object = None) -> _demo.DemoResult:
        return _demo.DemoResult(9, "Harbor Dubbing", "x.png", (161, 286), wrong)

    monkeypatch.setattr(_demo, "run_demo", fake_run)
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 1
    assert "WRONG" in result.stdout
    assert "did not name" in one_error_line(result.stderr)


def test_demo_summaries() -> None:
    missed = TraceRecord("leak.png", False, None, None, None, 0.3, 0.1, None)
    assert "no mark found" in _demo.DemoResult(9, "A", "x.png", (10, 10), missed).summary()[2]
    broken = TraceRecord("leak.png", False, None, None, None, None, None, None, "boom")
    assert "failed (boom)" in _demo.DemoResult(9, "A", "x.png", (10, 10), broken).summary()[2]


def test_embed_warns_only_on_weak_frames(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    cel = write_encoded(tmp_path / "in" / "cel.png", sample_frames()[0][1])  # 1920x1080
    tiny = write_encoded(tmp_path / "in" / "tiny.png", texture((64, 64, 3)))
    result = runner.invoke(
        app,
        [
            "embed",
            str(tmp_path / "in"),
            "--vendor",
            "Acme",
            "--out",
            str(tmp_path / "out"),
            "--json",
            "--home",
            str(home),
        ],
    )
    assert result.exit_code == 0
    by_name = {Path(d["input"]).name: d for d in json.loads(result.stdout)}
    assert by_name["cel.png"]["weak"] is False and by_name["cel.png"]["margin"] > 2.0
    assert by_name["tiny.png"]["weak"] is True and by_name["tiny.png"]["margin"] < 1.25
    assert result.stderr.strip().splitlines() == [
        line for line in result.stderr.strip().splitlines() if str(tiny) in line
    ]
    assert str(cel) not in result.stderr


def test_backup_writes_a_studio_home_and_refuses_an_existing_folder(
    runner: CliRunner, home: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "backups" / "b1"
    done = runner.invoke(app, ["backup", str(dest), "--json", "--home", str(home)])
    assert done.exit_code == 0, done.output
    manifest = json.loads(done.stdout)
    assert manifest["backup"] == str(dest) and manifest["vendors"] == 2
    assert manifest["deliveries"] == 0 and manifest["source"] == str(home.absolute())
    status = json.loads(runner.invoke(app, ["status", "--json", "--home", str(dest)]).stdout)
    assert status["key_fingerprint"] == manifest["key_fingerprint"]
    assert status["integrity"] == "ok" and status["secret_mode"] == "0600"
    text = runner.invoke(app, ["backup", str(tmp_path / "b2"), "--home", str(home)])
    assert text.exit_code == 0
    assert text.stdout == (
        f"backed up {home.absolute()} to {tmp_path / 'b2'}: 2 vendors, 0 deliveries, 0 assets;"
        f" key fingerprint {manifest['key_fingerprint']}\n"
    )
    assert text.stderr.startswith("warning: ") and "keep the backup private" in text.stderr
    again = runner.invoke(app, ["backup", str(dest), "--json", "--home", str(home)])
    assert again.exit_code == 1  # and its one JSON document is the error
    assert json.loads(again.stdout) == {
        "error": f"{dest}: already exists; a backup goes to a new folder"
    }
    assert one_error_line(again.stderr) == (
        f"error: {dest}: already exists; a backup goes to a new folder"
    )
    missing = runner.invoke(app, ["backup", str(tmp_path / "b3"), "--home", str(tmp_path / "no")])
    assert missing.exit_code == 1 and "no studio here" in one_error_line(missing.stderr)
    assert not (tmp_path / "b3").exists()


def test_a_weak_margin_is_never_printed_at_the_line() -> None:
    from cli.main import _rounded_down

    assert _rounded_down(1.2496) == "1.24" and _rounded_down(0.5) == "0.50"
    assert _rounded_down(1.25) == "1.25" and _rounded_down(0.009) == "0.00"
    assert _rounded_down(1.15) == "1.15"
