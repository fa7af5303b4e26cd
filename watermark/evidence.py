"""Evidence reports: one trace record and the delivery it names, as a Markdown document.

A report is for the people who act on a trace (security, legal): it names the file
examined by its SHA-256, states the verdict with its false-alarm probability in words,
copies the registry's record of the delivery, and says how to reproduce the result. It
is built from what the trace returned; nothing is recomputed here and no file is read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:  # the studio writes the reports: imported for the annotations only
    from collections.abc import Sequence

    from .registry import DeliveryRecord
    from .studio import TraceRecord

__all__ = ["DAMAGE_NOTE", "ReportContext", "evidence_report", "trace_summary"]

#: How a trace's note on a damaged file (read with ``damaged=True``) begins.
DAMAGE_NOTE = "the file is damaged"


@dataclass(frozen=True, slots=True)
class ReportContext:
    """What a report states about the run that produced the record.

    Attributes
    ----------
    traced_at : str
        When the trace started, UTC, ISO-8601.
    software : str
        The software and versions that traced (e.g. ``leaktrace 0.1.0, codec lt1``).
    studio : str
        The studio folder whose key and registry were used.
    p_threshold : float
        The accusation threshold the verdict was held to, in (0, 1).
    file_bytes : int or None
        Size of the file examined, bytes (None when unknown).
    location : str or None
        Absolute path of the file (or sequence folder) examined, when known.
    key_fingerprint : str or None
        The studio secret's fingerprint (:func:`watermark._keys.key_fingerprint`), which
        ``leaktrace status`` shows: which key traced, without the key.
    """

    traced_at: str
    software: str
    studio: str
    p_threshold: float
    file_bytes: int | None = None
    location: str | None = None
    key_fingerprint: str | None = None


def evidence_report(
    record: TraceRecord, delivery: DeliveryRecord | None, context: ReportContext
) -> str:
    """The Markdown evidence report of one traced file.

    Parameters
    ----------
    record : TraceRecord
        A readable file's trace (``record.error`` is None).
    delivery : DeliveryRecord or None
        The registry's record of the delivery the verdict names (None without one).
    context : ReportContext
        When, with what and against which studio the trace ran.

    Returns
    -------
    str
        The document, ending with a newline.

    Raises
    ------
    ValueError
        `record` is an unreadable file's, or `delivery` does not match its verdict.
    """
    if record.error is not None:
        raise ValueError(f"{record.file}: no report for a file that was not examined")
    named = record.found and record.delivery_id is not None
    if named != (delivery is not None) or (
        delivery is not None and delivery.delivery.delivery_id != record.delivery_id
    ):
        raise ValueError(f"{record.file}: the delivery given does not match the verdict")
    lines = [
        f"# Leak trace report: {_code(record.file)}",
        "",
        f"{_run_sentence('Traced', context)}.",
        "",
        "## The file examined",
        "",
        "| | |",
        "|---|---|",
        f"| path | {_code(record.file)} |",
    ]
    if context.location is not None and context.location != record.file:
        lines.append(f"| absolute path | {_code(context.location)} |")
    lines.append(f"| SHA-256 | `{record.sha256 or 'not recorded'}` |")
    if context.file_bytes is not None:
        lines.append(f"| size | {context.file_bytes} bytes |")
    if record.size is not None:
        kind = "frames" if record.frames is not None else "picture"
        lines.append(f"| {kind} | {record.size[0]}x{record.size[1]} px |")
    lines += ["", "## Verdict", ""]
    if named:
        assert delivery is not None
        lines += [
            f"**The file carries the mark of delivery {record.delivery_id}, made for vendor "
            f"{record.vendor}.**",
            "",
            f"False-alarm probability (p-value): **{_number(record.p_value)}**. This is the "
            "probability that a file which does not carry this delivery's mark (an unmarked "
            "picture, or one marked for another delivery) scores as high as this one did, "
            f"with all {_number(record.n_tests)} hypotheses the search tried counted. A "
            f"vendor is named only when it is at most {context.p_threshold:.0e}.",
        ]
    else:
        lines += [
            "**No mark found: no vendor is named.**",
            "",
            f"The best hypothesis scored p-value {_number(record.p_value)} (the probability "
            "that a file without a registered mark scores as high, with all "
            f"{_number(record.n_tests)} hypotheses counted), above the accusation threshold "
            f"of {context.p_threshold:.0e}. This is not proof that the file is unmarked: "
            "a leak degraded far enough loses the mark.",
        ]
    lines += ["", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in _trace_rows(record)]
    if delivery is not None:
        lines += [
            "",
            "## The delivery, as the studio's registry records it",
            "",
            "| | |",
            "|---|---|",
            f"| delivery id | {delivery.delivery.delivery_id} |",
            f"| vendor | {delivery.vendor.name} |",
            f"| delivered at (UTC) | {delivery.delivery.created_at} |",
            f"| original | {_code(delivery.asset.original_path)} |",
            f"| original SHA-256 | `{delivery.asset.sha256}` |",
            f"| original size | {delivery.asset.width}x{delivery.asset.height} px |",
            f"| marked copy written to | {_code(delivery.delivery.output_path)} |",
            f"| codec | {delivery.delivery.codec_version} "
            f"{_code(_params(delivery.delivery.codec_params))} |",
        ]
    if record.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {_line(note)}" for note in record.notes]
    damaged = any(note.startswith(DAMAGE_NOTE) for note in record.notes)
    command = "leaktrace trace <file> --json" + (" --damaged-ok" if damaged else "")
    lines += [
        "",
        "## Reproducing this result",
        "",
        "With the studio's secret key and registry (and, for an informed verdict, the "
        f"original it names), run `{command}` on a file whose SHA-256 is the one above: "
        "the verdict, delivery id and p-value are computed again from them.",
        "",
    ]
    return "\n".join(lines)


def trace_summary(records: Sequence[TraceRecord], context: ReportContext) -> str:
    """The Markdown index of a batch of traces: one row per file examined (its hash, the
    verdict, vendor, delivery, p-value and evidence report), then the files that could not
    be examined, with why.

    Parameters
    ----------
    records : sequence of TraceRecord
        The batch, in order.
    context : ReportContext
        When, with what and against which studio it ran (``file_bytes`` and ``location``
        are not used).

    Returns
    -------
    str
        The document, ending with a newline.
    """
    examined = [r for r in records if r.error is None]
    failed = [r for r in records if r.error is not None]
    named = sum(1 for r in examined if r.found)
    lines = [
        f"# Leak trace summary: {len(records)} file(s)",
        "",
        f"{_run_sentence('Written', context)}. A vendor is named only when the false-alarm "
        f"probability is at most {context.p_threshold:.0e}.",
        "",
        f"{len(examined)} examined: {named} with a vendor named, {len(examined) - named} with "
        f"no mark found; {len(failed)} could not be examined.",
    ]
    if examined:
        lines += [
            "",
            "| file | SHA-256 (first 12) | verdict | vendor | delivery | p-value | report |",
            "|---|---|---|---|---|---:|---|",
        ]
        for r in examined:
            verdict = "vendor named" if r.found else "no mark found"
            report = "-"
            if r.report is not None:
                name = r.report.replace("\\", "/").rsplit("/", 1)[-1]
                # a sequence's name holds '#'; a name that is not UTF-8 links to its bytes
                target = quote(name.encode("utf-8", "surrogateescape"), safe="")
                report = f"[{_link_text(name)}]({target})"
            lines.append(
                f"| {_code(r.file)} | `{(r.sha256 or '-')[:12]}` | {verdict} | {r.vendor or '-'} | "
                f"{r.delivery_id or '-'} | {_number(r.p_value)} | {report} |"
            )
    if failed:
        lines += ["", "## Not examined", ""]
        lines += [f"- {_code(r.error or '')}" for r in failed]
    lines.append("")
    return "\n".join(lines)


def _line(text: str) -> str:
    """`text` on one line: control characters escaped (a newline in a file name cannot
    start a line, a list item or a table row of its own), odd bytes of a name that is not
    UTF-8 shown as escapes."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _code(text: str) -> str:
    """`text` as an inline code span that stays one table cell: on one line (:func:`_line`),
    its pipes escaped (GitHub's tables split cells on them, even in code), fenced with
    more backticks than it holds in a row."""
    text = _line(text).replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _link_text(text: str) -> str:
    """`text` as a link's text: one line, its brackets, pipes and backslashes escaped."""
    return re.sub(r"([\\\[\]|*_<>`])", r"\\\1", _line(text))


def _run_sentence(verb: str, context: ReportContext) -> str:
    """When, with what, against which studio and key: ``Traced <time> (UTC) with ...``."""
    key = "" if context.key_fingerprint is None else f" (key fingerprint {context.key_fingerprint})"
    return (
        f"{verb} {context.traced_at} (UTC) with {context.software}, against the studio at "
        f"{_code(context.studio)}{key}"
    )


def _trace_rows(record: TraceRecord) -> list[tuple[str, str]]:
    """The trace's own figures, as (name, value) rows."""
    rows = [
        ("decoder", _mode_text(record.mode)),
        ("score (z)", _number(record.score)),
        ("p-value of a mark of this studio at all", _number(record.mark_p_value)),
    ]
    if record.source is not None:
        rows.append(("registered to original", _code(record.source)))
    if record.geometry is not None:
        g = record.geometry
        flip = ", mirrored" if g.flipped else ""
        rows.append(
            (
                "geometry",
                f"rotated {round(g.rotation, 1) + 0.0:.1f} deg, scaled {g.scale_x:.3f} x "
                f"{g.scale_y:.3f}{flip}",
            )
        )
    elif record.scale is not None:
        rows.append(("scale", f"{record.scale:.3f}"))
    if record.coverage is not None:
        rows.append(("share of the original shown", f"{100 * record.coverage:.0f} %"))
    if record.frames is not None:
        rows.append(("frames pooled", str(record.frames)))
        if record.seen:
            spans = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in record.seen)
            rows.append(("mark seen at", spans))
    return rows


def _mode_text(mode: str | None) -> str:
    if mode == "informed":
        return "informed: registered to the studio's original and compared with it"
    if mode == "blind":
        return "blind: the file alone"
    return "-"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _params(text: str) -> str:
    """The stored codec parameters, compact and key-sorted when they are JSON."""
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return text
