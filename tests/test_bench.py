"""Tests of ``leaktrace bench`` (watermark.bench, watermark.report, watermark.peers).

The smoke test runs ``leaktrace bench --quick`` as CI does and checks the STRUCTURE of
results.json (keys, one entry per attack, seed, versions, machine), never the numbers.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from watermark import ATTACKS, apply_attack, bench, peers
from watermark.samples import sample_frames

from ._factories import texture


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("bench") / "out"
    result = CliRunner().invoke(app, ["bench", "--quick", "--out", str(out)])
    return out, result


def test_quick_run_writes_documented_structure(quick_run) -> None:
    out, result = quick_run
    assert result.exit_code == 0, result.output
    assert "| attack |" in result.stdout
    doc = json.loads((out / "results.json").read_text())
    for key in (
        "schema", "created_utc", "command", "seed", "quick", "key", "vendors", "payloads",
        "attacks", "peers", "frames", "max_side", "workers", "notes", "versions", "machine",
        "summary", "trials", "plots", "plots_skipped",
    ):  # fmt: skip
        assert key in doc, key
    assert doc["schema"] == bench.SCHEMA
    assert doc["quick"] is True and doc["seed"] == 0
    assert doc["vendors"] == bench.QUICK_VENDORS == len(doc["payloads"])
    assert len(doc["frames"]) == bench.QUICK_FRAMES
    assert all(max(f["height"], f["width"]) <= bench.QUICK_MAX_SIDE for f in doc["frames"])
    for name in ("python", "numpy", "opencv", "pywavelets", "scipy", "leaktrace"):
        assert isinstance(doc["versions"][name], str), name
    for name in ("platform", "cpu_count", "cpu_model", "python"):
        assert name in doc["machine"], name

    names = [a["name"] for a in doc["attacks"]]
    families = [ATTACKS[n].family for n in names]
    assert len(set(families)) == len(families) >= 3  # one attack per family
    assert all(set(a) == {"name", "family", "strength"} for a in doc["attacks"])

    s = doc["summary"]
    assert set(s) >= {"leaktrace", "peers", "quality", "time_ms_per_mp", "false_alarms", "wall_s"}
    assert list(s["leaktrace"]["by_attack"]) == names
    for entry in s["leaktrace"]["by_attack"].values():
        assert set(entry) >= {"family", "strength", "trials", "correct", "wrong", "missed"}
        assert entry["trials"] == len(doc["frames"]) * doc["vendors"]
        assert entry["correct"] + entry["wrong"] + entry["missed"] == entry["trials"]
    assert set(s["false_alarms"]) >= {"trials", "verdicts", "min_p_value", "fraction_p_le"}
    assert s["false_alarms"]["trials"] == len(doc["frames"]) * len(names)
    assert set(s["quality"]["leaktrace"]) >= {"psnr_y_mean", "psnr_y_min", "ssim_y_mean"}
    assert set(s["time_ms_per_mp"]["leaktrace"]) == {"embed_ms_per_mp", "trace_ms_per_mp"}

    t = doc["trials"]
    assert len(t["leaktrace"]) == len(doc["frames"]) * doc["vendors"] * len(names)
    assert len(t["unmarked"]) == len(doc["frames"]) * len(names)
    assert {r["verdict"] for r in t["leaktrace"]} <= {"correct", "wrong", "missed"}
    assert t["peers"] == [] and doc["peers"] == []


def test_quick_run_writes_report(quick_run) -> None:
    out, _ = quick_run
    doc = json.loads((out / "results.json").read_text())
    page = (out / "index.html").read_text()
    assert (out / "results.md").read_text().startswith("# leaktrace bench")
    if doc["plots_skipped"] is None:  # matplotlib installed
        assert doc["plots"] == list(bench_plot_names())
    for name in doc["plots"]:
        assert (out / name).stat().st_size > 0
        assert f'src="{name}"' in page
    crops = sorted((out / "crops").glob("*.png"))
    assert crops and all(f'src="crops/{p.name}"' in page for p in crops)


def bench_plot_names() -> tuple[str, ...]:
    from watermark.report import PLOT_NAMES

    return PLOT_NAMES


def test_json_prints_the_summary(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["bench", "--quick", "--attacks", "none", "--vendors", "1", "--workers", "1",
         "--out", str(tmp_path), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert list(summary["leaktrace"]["by_attack"]) == ["none"]
    assert summary == json.loads((tmp_path / "results.json").read_text())["summary"]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown_attack", "unknown attack 'nope'"),
        ("empty_folder", "no image files"),
        ("unreadable_frame", "bad.png"),
        ("missing_frame", "missing.png"),
        ("zero_vendors", "--vendors must be in 1..1000"),
    ],
)
def test_bad_arguments_exit_1_with_one_line(tmp_path: Path, case: str, expected: str) -> None:
    args = ["bench", "--out", str(tmp_path / "out"), "--workers", "1"]
    if case == "unknown_attack":
        args += ["--quick", "--attacks", "jpeg50,nope"]
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        args += [str(tmp_path / "empty")]
    elif case == "unreadable_frame":
        (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        args += [str(tmp_path / "bad.png")]
    elif case == "missing_frame":
        args += [str(tmp_path / "missing.png")]
    else:
        args += ["--quick", "--vendors", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert expected in one_error_line(result.stderr)
    assert not (tmp_path / "out" / "results.json").exists()


def test_run_bench_on_files_in_process(tmp_path: Path) -> None:
    frame = texture((300, 400, 3), seed=3)
    (tmp_path / "in").mkdir()
    from watermark.media import write_image

    write_image(tmp_path / "in" / "t.png", frame, format="png")
    frames = bench.load_frames([tmp_path / "in"])
    assert [f.name for f in frames] == ["t.png"]
    result = bench.run_bench(
        frames, attacks=("none", "jpeg50"), vendors=2, out_dir=tmp_path / "o", workers=1,
        command=["test"],
    )  # fmt: skip
    assert result.json_path.exists() and result.md_path.exists() and result.html_path.exists()
    assert result.document["command"] == ["test"]
    assert set(result.summary["leaktrace"]["by_attack"]) == {"none", "jpeg50"}


def test_run_bench_rejects_bad_arguments(tmp_path: Path) -> None:
    frames = bench.sample_bench_frames(quick=True)
    with pytest.raises(bench.BenchError, match="vendors"):
        bench.run_bench(frames, attacks=("none",), vendors=0, out_dir=tmp_path)
    with pytest.raises(bench.BenchError, match="unknown attack"):
        bench.run_bench(frames, attacks=("zoom",), out_dir=tmp_path)
    with pytest.raises(bench.BenchError, match="no frames"):
        bench.run_bench([], attacks=("none",), out_dir=tmp_path)
    with pytest.raises(bench.BenchError, match="workers"):
        bench.run_bench(frames, attacks=("none",), workers=0, out_dir=tmp_path)


def test_resolve_attacks() -> None:
    assert bench.resolve_attacks(["all"], quick=False)[0][0] == "none"
    assert bench.resolve_attacks(["jpeg50,crop50", "jpeg50"], quick=False)[0] == (
        "jpeg50",
        "crop50",
    )
    quick = bench.quick_attacks()
    assert len({ATTACKS[n].family for n in quick}) == len(quick)
    with pytest.raises(bench.BenchError, match="unknown attack 'x'"):
        bench.resolve_attacks(["x"], quick=True)


def test_pure_helpers() -> None:
    assert bench.attack_kind("jpeg50") == "jpeg"
    assert bench.attack_kind("brightness-25") == "brightness"
    assert bench.attack_kind("grey") == "grey"
    assert bench.stable_seed(1, "a") == bench.stable_seed(1, "a") != bench.stable_seed(2, "a")
    ids = bench.distinct_payloads(np.random.default_rng(0), 5)
    assert ids.dtype == np.uint64 and len(set(ids.tolist())) == 5
    assert bench.jsonable({"a": np.float32(np.inf), "b": np.int64(3)}) == {"a": "inf", "b": 3}


def test_peer_bits_round_trip_their_payload() -> None:
    bits = peers.bits_of(0xA5000001)
    assert bits.dtype == np.uint8 and bits.shape == (32,)
    assert int("".join(map(str, bits.tolist())), 2) == 0xA5000001
    with pytest.raises(ValueError, match="payload"):
        peers.bits_of(2**32)
    with pytest.raises(TypeError, match="payload"):
        peers.bits_of(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown peer"):
        peers.embed("rivaGan", np.zeros((300, 300, 3), np.uint8), 1)


def test_missing_peer_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imwatermark", None)  # import fails as if absent
    monkeypatch.setitem(sys.modules, "blind_watermark", None)
    with pytest.raises(peers.PeerUnavailableError, match=r"leaktrace\[peers\]"):
        peers.check_peers()
    result = CliRunner().invoke(app, ["bench", "--quick", "--peers", "--workers", "1"])
    assert result.exit_code == 1
    assert "leaktrace[peers]" in one_error_line(result.stderr)


@pytest.mark.parametrize("method", peers.PEER_METHODS)
def test_peer_embeds_and_extracts_blind(method: str) -> None:
    if method == "blind-watermark":
        # Not importorskip: importing blind_watermark outside watermark.peers would run its
        # multiprocessing.set_start_method('fork'), which peers.py neutralises.
        if importlib.util.find_spec("blind_watermark") is None:
            pytest.skip("blind-watermark is not installed (the peers extra)")
    else:
        pytest.importorskip("imwatermark")
    _, frame = sample_frames()[1]  # 640x360 RGB, read-only
    marked = peers.embed(method, frame, 0x5EC2E7A1, seed=7)
    assert marked.dtype == np.uint8 and marked.shape == frame.shape
    bits = peers.extract(method, marked, expected_shape=frame.shape[:2], seed=7)
    assert bits.dtype == np.uint8 and bits.shape == (32,)
    assert np.array_equal(bits, peers.bits_of(0x5EC2E7A1))
    half = marked[::2, ::2]  # another size: resized back before extraction
    assert peers.extract(method, half, expected_shape=frame.shape[:2], seed=7).shape == (32,)


@pytest.mark.parametrize("attack", ["none", "jpeg50", "crop50", "noise10"])
def test_vectorised_blind_watermark_matches_its_own_loop(attack: str) -> None:
    if importlib.util.find_spec("blind_watermark") is None:
        pytest.skip("blind-watermark is not installed (the peers extra)")
    _, frame = sample_frames()[1]  # 640x360
    marked = peers.embed("blind-watermark", frame, 0x0F1E2D3C, seed=3)
    leak = apply_attack(attack, marked, seed=11)
    leak = cv2.resize(leak, (frame.shape[1], frame.shape[0])) if leak.shape != frame.shape else leak
    bgr = np.ascontiguousarray(leak[..., ::-1])
    own = peers._blind_object(3).bwm_core
    own.wm_size = 32
    fast = peers._blind_object(3).bwm_core
    fast.wm_size = 32
    expected = own.extract_raw(bgr)  # the package's per-block loop
    got = peers._blind_block_bits(fast, bgr)
    assert got.dtype == expected.dtype and np.array_equal(got, expected)
    bits = peers.extract("blind-watermark", leak, expected_shape=frame.shape[:2], seed=3)
    assert np.array_equal(
        peers.extract(
            "blind-watermark", leak, expected_shape=frame.shape[:2], seed=3, vectorised=True
        ),
        bits,
    )


@pytest.mark.parametrize("method", ["dwtDct", "dwtDctSvd"])
@pytest.mark.parametrize("attack", ["none", "jpeg50", "crop50", "noise10"])
def test_vectorised_invisible_watermark_matches_its_own_loop(method: str, attack: str) -> None:
    pytest.importorskip("imwatermark")
    import pywt
    from imwatermark.dwtDctSvd import EmbedDwtDctSvd
    from imwatermark.maxDct import EmbedMaxDct

    _, frame = sample_frames()[1]  # 640x360
    marked = peers.embed(method, frame, 0x0F1E2D3C)
    leak = apply_attack(attack, marked, seed=11)
    leak = cv2.resize(leak, (frame.shape[1], frame.shape[0])) if leak.shape != frame.shape else leak
    bgr = np.ascontiguousarray(leak[..., ::-1])
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)
    band = pywt.dwt2(yuv[:, :, 1].astype(np.float64), "haar")[0]
    core = (EmbedMaxDct if method == "dwtDct" else EmbedDwtDctSvd)(watermarks=[], wmLen=32)
    expected = core.decode_frame(band, 36, [[] for _ in range(32)])  # the package's loop
    got = peers._imwatermark_decode_frame(
        method, band, 36, [[] for _ in range(32)], block=4, wm_len=32
    )
    assert got == expected and sum(map(len, got)) == (band.shape[0] // 4) * (band.shape[1] // 4)
    bits = peers.extract(method, leak, expected_shape=frame.shape[:2])
    fast = peers.extract(method, leak, expected_shape=frame.shape[:2], vectorised=True)
    assert np.array_equal(fast, bits)


def test_vectorised_extraction_leaves_no_reference_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    # a bound method left on the core would keep its image arrays alive until a full GC
    # (10 GB over a bench --peers run)
    if importlib.util.find_spec("blind_watermark") is None:
        pytest.skip("blind-watermark is not installed (the peers extra)")
    made = []
    real = peers._blind_object

    def spy(seed: int):
        made.append(real(seed))
        return made[-1]

    monkeypatch.setattr(peers, "_blind_object", spy)
    _, frame = sample_frames()[1]
    peers.extract("blind-watermark", frame, expected_shape=frame.shape[:2], vectorised=True)
    assert made and "extract_raw" not in vars(made[0].bwm_core)


def test_a_detector_crash_is_not_counted_as_a_miss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only a leak under the detector's 16 px floor is a recorded miss; any other error
    # from the detector is a bug, and the run must stop rather than count it as missed.
    frame = bench.BenchFrame("t.png", texture((16, 16, 3), seed=1), "test")
    result = bench.run_bench(
        [frame], attacks=("crop25",), vendors=1, out_dir=tmp_path / "a", workers=1
    )
    (marked,) = result.document["trials"]["leaktrace"]
    (unmarked,) = result.document["trials"]["unmarked"]
    assert marked["verdict"] == "missed" and "at least 16x16" in marked["error"]
    assert unmarked["verdict"] == "none" and "at least 16x16" in unmarked["error"]

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("too many values to unpack (expected 3)")

    monkeypatch.setattr(bench, "detect_frame", broken)
    frame = bench.BenchFrame("t.png", texture((64, 64, 3), seed=1), "test")
    with pytest.raises(ValueError, match="too many values"):
        bench.run_bench([frame], attacks=("none",), vendors=1, out_dir=tmp_path / "b", workers=1)
    assert not (tmp_path / "b" / "results.json").exists()


@pytest.mark.parametrize("case", ["file", "under_a_file", "not_writable"])
def test_an_unusable_out_fails_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    (tmp_path / "f.txt").write_text("x")
    out = {"file": "f.txt", "under_a_file": "f.txt/out", "not_writable": "ro"}[case]
    if case == "not_writable":  # as root chmod would not stop the write: refuse it here
        (tmp_path / "ro").mkdir()

        def refuse(*args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(bench.tempfile, "mkstemp", refuse)
    ran = []
    monkeypatch.setattr(bench, "_run_tasks", lambda *a, **k: ran.append(1) or [])
    args = ["bench", "--quick", "--attacks", "none", "--vendors", "1", "--workers", "1",
            "--out", str(tmp_path / out), "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    line = one_error_line(result.stderr)
    assert "unexpected" not in line and str(tmp_path / out) in line
    assert json.loads(result.stdout)["error"] == line.removeprefix("error: ")
    assert ran == []  # nothing was marked or traced first


def test_vendors_out_of_range_with_json_prints_the_error_document(tmp_path: Path) -> None:
    args = ["bench", "--quick", "--vendors", "0", "--out", str(tmp_path), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"error": "--vendors must be in 1..1000; got 0"}


def test_frames_of_one_name_in_two_folders_stay_apart(tmp_path: Path) -> None:
    from watermark.media import write_image

    for folder, seed in (("v1", 1), ("v2", 2), ("v2/sub", 3)):
        (tmp_path / folder).mkdir(parents=True)
        write_image(tmp_path / folder / "x.png", texture((64, 80, 3), seed=seed), format="png")
    frames = bench.load_frames([tmp_path / "v1", tmp_path / "v2"])
    names = [f.name for f in frames]
    assert len(set(names)) == 3 and names[0] == "x.png"
    assert not np.array_equal(frames[0].pixels, frames[2].pixels)
    result = bench.run_bench(
        frames, attacks=("none",), vendors=1, out_dir=tmp_path / "o", workers=1
    )
    by_frame = {r["frame"]: r for r in result.document["trials"]["embeds"]}
    assert set(by_frame) == set(names)
    page = result.html_path.read_text()
    befores = sorted((tmp_path / "o" / "crops").glob("*_before.png"))
    assert len(befores) == 3 and all(f'src="crops/{p.name}"' in page for p in befores)


@pytest.mark.parametrize("spec", [[""], [","], [" , "]])
def test_attacks_that_name_nothing_are_refused_not_taken_for_all(spec: list[str]) -> None:
    # `--attacks "$LIST"` with LIST empty would otherwise start the full 80-attack run
    with pytest.raises(bench.BenchError, match="names no attack"):
        bench.resolve_attacks(spec, quick=False)
    assert bench.resolve_attacks([], quick=True)[0] == bench.quick_attacks()
