"""Tests of watermark.evidence (the report text) and of the reports trace writes."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from watermark import studio as studio_module
from watermark._register import Geometry
from watermark.errors import StudioError
from watermark.evidence import DAMAGE_NOTE, ReportContext, evidence_report, trace_summary
from watermark.registry import Asset, Delivery, DeliveryRecord, Vendor
from watermark.samples import sample_frames
from watermark.studio import Studio, TraceRecord

from ._factories import make_bad_file, sha256_of, texture, write_encoded

CONTEXT = ReportContext(
    traced_at="2026-12-07T10:00:00+00:00",
    software="leaktrace 0.1.0, codec lt1",
    studio="/studios/main",
    p_threshold=1e-6,
    file_bytes=1234,
    location="/leaks/leak.jpg",
    key_fingerprint="0123456789abcdef",
)
SHA = "ab" * 32


def delivery(delivery_id: str = "0000beef") -> DeliveryRecord:
    return DeliveryRecord(
        Delivery(
            1, int(delivery_id, 16), 1, 1, "2026-01-02T03:04:05+00:00", "lt1", '{"a": 1}', "/o"
        ),
        Vendor(1, "Acme", "2026-01-01T00:00:00+00:00"),
        Asset(1, "cd" * 32, "/shots/a.png", 1920, 1080, "0" * 16, "2026-01-01T00:00:00+00:00"),
    )


def found(**changes: object) -> TraceRecord:
    record = TraceRecord(
        "leak.jpg",
        True,
        "Acme",
        "0000beef",
        "/shots/a.png",
        3.4e-12,
        9.5,
        None,
        mark_p_value=1e-30,
        mode="informed",
        source="/shots/a.png",
        geometry=Geometry(30.0, 0.5, 0.5, True, (10.0, 20.0)),
        coverage=0.25,
        n_tests=8.0,
        sha256=SHA,
        size=(859, 483),
    )
    return dataclasses.replace(record, **changes)


def test_a_verdict_report_states_the_file_the_verdict_and_the_delivery() -> None:
    text = evidence_report(found(), delivery(), CONTEXT)
    assert text.startswith("# Leak trace report: `leak.jpg`\n") and text.endswith("\n")
    for fact in [
        "Traced 2026-12-07T10:00:00+00:00 (UTC) with leaktrace 0.1.0, codec lt1",
        "against the studio at `/studios/main` (key fingerprint 0123456789abcdef).",
        f"| SHA-256 | `{SHA}` |",
        "| size | 1234 bytes |",
        "| picture | 859x483 px |",
        "| absolute path | `/leaks/leak.jpg` |",
        "**The file carries the mark of delivery 0000beef, made for vendor Acme.**",
        "False-alarm probability (p-value): **3.4e-12**",
        "with all 8 hypotheses the search tried counted",
        "only when it is at most 1e-06",
        "| decoder | informed: registered to the studio's original and compared with it |",
        "| geometry | rotated 30.0 deg, scaled 0.500 x 0.500, mirrored |",
        "| share of the original shown | 25 % |",
        "| delivered at (UTC) | 2026-01-02T03:04:05+00:00 |",
        f"| original SHA-256 | `{'cd' * 32}` |",
        '| codec | lt1 `{"a":1}` |',
        "run `leaktrace trace <file> --json` on a file whose SHA-256",
    ]:
        assert fact in text, fact
    assert "## Notes" not in text and "No mark found" not in text


def test_a_report_without_a_verdict_names_no_one() -> None:
    record = found(
        found=False,
        vendor=None,
        delivery_id=None,
        asset=None,
        p_value=0.42,
        notes=(f"{DAMAGE_NOTE} (the decoder reports: x); what it recovered was traced",),
    )
    text = evidence_report(record, None, CONTEXT)
    assert "**No mark found: no vendor is named.**" in text
    assert "p-value 0.42" in text and "Acme" not in text and "## The delivery" not in text
    assert "## Notes\n\n- the file is damaged" in text
    assert "`leaktrace trace <file> --json --damaged-ok`" in text


def test_a_report_refuses_what_does_not_hold_together() -> None:
    with pytest.raises(ValueError, match="was not examined"):
        evidence_report(found(error="leak.jpg: empty file"), None, CONTEXT)
    with pytest.raises(ValueError, match="does not match"):
        evidence_report(found(), None, CONTEXT)
    with pytest.raises(ValueError, match="does not match"):
        evidence_report(found(), delivery("0000cafe"), CONTEXT)
    with pytest.raises(ValueError, match="does not match"):
        evidence_report(found(found=False, delivery_id=None), delivery(), CONTEXT)


def test_a_summary_lists_every_file_and_why_some_were_not_examined() -> None:
    records = [
        found(report="/cases/7/leak.jpg.abababababab.20261207T100000Z.md"),
        found(file="other.png", found=False, vendor=None, delivery_id=None, p_value=0.5),
        TraceRecord("bad.png", False, None, None, None, None, None, None, "bad.png: empty file"),
    ]
    text = trace_summary(records, CONTEXT)
    assert text.startswith("# Leak trace summary: 3 file(s)\n") and text.endswith("\n")
    assert "(key fingerprint 0123456789abcdef)" in text and "at most 1e-06" in text
    assert "2 examined: 1 with a vendor named, 1 with no mark found; 1 could not" in text
    name = "leak.jpg.abababababab.20261207T100000Z.md"
    assert (
        f"| `leak.jpg` | `abababababab` | vendor named | Acme | 0000beef | 3.4e-12 | "
        f"[{name}]({name}) |"
    ) in text
    assert "| `other.png` | `abababababab` | no mark found | - | - | 0.5 | - |" in text
    assert text.endswith("## Not examined\n\n- `bad.png: empty file`\n")
    shot = found(file="shot/s.####.png", report="/r/s.####.png.ab.20261207T100000Z.md")
    assert "[s.####.png.ab.20261207T100000Z.md](s.%23%23%23%23.png.ab" in trace_summary(
        [shot], CONTEXT
    )


@pytest.fixture
def studio(tmp_path: Path) -> Studio:
    with Studio.create(tmp_path / "studio") as s:
        s.add_vendor("Acme")
        yield s


def test_trace_writes_one_report_per_examined_file_never_over_another(
    studio: Studio, tmp_path: Path
) -> None:
    src = write_encoded(tmp_path / "a.png", sample_frames()[1][1])
    (acme,) = studio.embed_files([src], "Acme", tmp_path / "acme")
    plain = write_encoded(tmp_path / "plain.png", texture((96, 128, 3)))
    bad = make_bad_file("empty", tmp_path)
    reports = tmp_path / "evidence" / "case 7"
    records = studio.trace_files([acme.output, plain, bad], evidence=reports)
    assert [r.found for r in records] == [True, False, False]
    assert records[2].error is not None and records[2].report is None
    written = sorted(reports.iterdir())
    assert sorted(Path(r.report) for r in records[:2]) == written  # no temporary file either
    name = Path(records[0].report).name
    assert name.startswith(f"a.png.{sha256_of(Path(acme.output))[:12]}.2") and name.endswith("Z.md")
    text = Path(records[0].report).read_text()
    assert f"delivery {acme.delivery_id}, made for vendor Acme" in text
    assert f"`{sha256_of(src)}`" in text and f"`{sha256_of(Path(acme.output))}`" in text
    assert f"(key fingerprint {studio.status()['key_fingerprint']})." in text
    assert "No mark found" in Path(records[1].report).read_text()
    before = {p: p.read_bytes() for p in written}
    (again,) = studio.trace_files([acme.output], evidence=reports)
    assert Path(again.report) not in before and {p: p.read_bytes() for p in written} == before
    assert records[0].to_json()["report"] == records[0].report
    summary = studio.write_trace_summary(records, reports)
    assert summary.parent == reports and summary.name.startswith("summary.2")
    assert (
        "3 file(s)" in summary.read_text() and Path(records[0].report).name in summary.read_text()
    )
    assert studio.write_trace_summary(records, reports) != summary  # never over the first


def test_a_report_name_already_taken_gets_a_number(
    studio: Studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = write_encoded(tmp_path / "plain.png", texture((96, 128, 3)))
    reports = tmp_path / "reports"
    (first,) = studio.trace_files([plain], evidence=reports)
    stamp = Path(first.report).name.rsplit(".", 2)[1]  # 20261207T103000Z
    again = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)

    class Clock:  # the second trace starts in the same second as the first
        @staticmethod
        def now(tz: object) -> datetime:
            return again

    monkeypatch.setattr(studio_module, "datetime", Clock)
    (second,) = studio.trace_files([plain], evidence=reports)
    assert Path(second.report).name == Path(first.report).name.removesuffix(".md") + ".2.md"
    assert len(list(reports.iterdir())) == 2


def test_an_unwritable_report_folder_is_refused_before_any_trace(
    studio: Studio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = write_encoded(tmp_path / "plain.png", texture((96, 128, 3)))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    traced: list[object] = []
    monkeypatch.setattr(Studio, "_trace_one", lambda *a, **k: traced.append(a))
    with pytest.raises(StudioError, match="cannot create output folder"):
        studio.trace_files([plain], evidence=blocker / "reports")
    assert traced == [] and blocker.read_text() == "not a folder"


def test_cli_trace_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEAKTRACE_HOME", raising=False)
    runner = CliRunner()
    home = tmp_path / "studio"
    assert runner.invoke(app, ["init", "--home", str(home)]).exit_code == 0
    plain = write_encoded(tmp_path / "plain.png", texture((96, 128, 3)))
    reports = tmp_path / "reports"
    args = ["trace", str(plain), "--report", str(reports), "--home", str(home)]
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and f"{plain}: report: {reports}" in table.stdout
    assert f"summary of the 1 file(s): {reports}/summary." in table.stdout
    document = runner.invoke(app, [*args, "--json"])
    assert document.exit_code == 0
    (record,) = json.loads(document.stdout)
    assert os.path.isfile(record["report"]) and record["sha256"] == sha256_of(plain)
    assert len(list(reports.iterdir())) == 4  # two reports, two summaries


def test_odd_file_names_cannot_break_or_forge_the_markdown() -> None:
    odd = ["a|b.png", "tick`x`.jpg", "[link](http:x).png", "bad\n- innocent.png: forged.png"]
    records = [
        found(file=name, found=False, vendor=None, delivery_id=None, report=f"/r/{name}.md")
        for name in odd[:3]
    ] + [TraceRecord(odd[3], False, None, None, None, None, None, None, error=f"{odd[3]}: x")]
    text = trace_summary(records, CONTEXT)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 3  # the header and one row per examined file
    for row in rows[1:]:
        # a row keeps its 7 cells: no pipe but the escaped ones splits it
        assert len(re.split(r"(?<!\\)\|", row)) == 9, row
    assert "`a\\|b.png`" in text and "``tick`x`.jpg``" in text
    assert "[\\[link\\](http:x).png.md](%5Blink%5D%28http%3Ax%29.png.md)" in text
    assert "\n- innocent.png" not in text and "bad\\n- innocent.png: forged.png: x" in text
    report = evidence_report(records[0], None, CONTEXT)
    assert "| path | `a\\|b.png` |" in report


def test_each_report_is_stamped_when_its_file_was_traced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = iter(range(10, 60))

    class Clock(datetime):  # a minute passes between two readings of the time
        @classmethod
        def now(cls, tz: object = None) -> datetime:
            return datetime(2026, 12, 7, 10, next(ticks), 0, tzinfo=UTC)

    monkeypatch.setattr(studio_module, "datetime", Clock)
    files = [write_encoded(tmp_path / f"{n}.png", texture((64, 64, 3), seed=n)) for n in (1, 2)]
    with Studio.create(tmp_path / "home") as studio:
        first, second = studio.trace_files(files, evidence=tmp_path / "r")
    stamps = [Path(r.report or "").read_text().splitlines()[2][7:32] for r in (first, second)]
    assert stamps[0] < stamps[1], stamps
    for record, stamp in zip((first, second), stamps, strict=True):
        assert f".{studio_module._stamp(stamp)}.md" in Path(record.report or "").name
