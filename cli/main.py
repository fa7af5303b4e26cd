"""The ``leaktrace`` command: parse, call :mod:`watermark.studio`, print. Nothing else.

Results go to stdout; progress, warnings and errors to stderr. ``--json`` prints exactly
one JSON document built from the library's result records, with progress and colour off.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import tempfile
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from watermark._embed import WEAK_MARGIN
from watermark._temporal import DEFAULT_MAX_FRAMES
from watermark.clip import CODEC_FAMILIES, ENCODER_PRESETS
from watermark.errors import LeaktraceError
from watermark.studio import (
    HOME_ENV,
    SECRET_NAME,
    AssetRecord,
    EmbedRecord,
    FrameProgressCallback,
    ProgressCallback,
    Studio,
    TraceRecord,
    resolve_home,
)

__all__ = ["app", "main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE, as a shell reports a writer killed by a closed pipe

_TABLE_PAGE = 1000  # rows of a listing laid out and printed at a time
_EPILOG = (
    "Exit codes: 0 success; 1 data or runtime error (unreadable or invalid input file, "
    "unknown vendor, no studio, a file that failed); 2 usage error (bad command, option "
    "or argument); 141 stdout closed early (piped into head). The studio home is --home "
    f"DIR, else ${HOME_ENV}, else ./.leaktrace."
)


@dataclass(slots=True)
class _Settings:
    """Options of the root command, shared with subcommands through ``ctx.obj``; `json`
    is set by the subcommand's ``--json`` as it is parsed."""

    home: Path | None = None
    debug: bool = False
    json: bool = False


class _Group(TyperGroup):
    """Root group: the one place that turns library errors into ``error: ...`` + exit 1."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except BrokenPipeError:
            _stdout_closed()
        except LeaktraceError as exc:
            if _settings(ctx).debug:
                raise
            _fail_command(ctx, str(exc))
        except Exception as exc:
            if _settings(ctx).debug:
                raise
            name = type(exc).__name__
            _fail_command(ctx, f"unexpected {name}: {exc} (rerun with --debug for the traceback)")


def _fail_command(ctx: typer.Context, message: str) -> None:
    """A command that failed as a whole: with --json, its one document is the error."""
    if _settings(ctx).json:
        with suppress(BrokenPipeError):
            _print_json({"error": _one_line(message)})
    _fail(message)


def _one_line(text: str) -> str:
    """`text` with control characters escaped (a newline in a file name cannot start a
    line of its own, nor an escape sequence reach the terminal)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _Console(Console):
    """rich's console, but a closed stdout exits 141 quietly, as the rest of the CLI does
    (rich's own handler exits 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        _stdout_closed()


def _stdout_closed() -> None:
    """The reader of stdout went away (``leaktrace ... | head``): not an error to report.
    Later writes and the final flush go to /dev/null; exit 141."""
    _silence_stdout()
    raise typer.Exit(EXIT_CLOSED_PIPE)


def _silence_stdout() -> None:
    with suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _fail(message: str) -> None:
    """Print one error line on stderr and exit 1."""
    typer.echo(f"error: {_one_line(message)}", err=True)
    raise typer.Exit(EXIT_ERROR)


app = typer.Typer(
    cls=_Group,
    name="leaktrace",
    help="Forensic watermarking: mark the copies you hand to vendors, trace a leak back.",
    epilog=_EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # the studio key lives in local variables
    rich_markup_mode=None,
)


def _command_group(name: str, help_text: str) -> typer.Typer:
    """A group of subcommands (``leaktrace NAME VERB``) added to the app."""
    group = typer.Typer(help=help_text, epilog=_EPILOG, no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(group, name=name)
    return group


vendor_app = _command_group("vendor", "Manage vendors (recipients of deliveries).")
asset_app = _command_group(
    "asset", "Index studio originals (the source assets informed tracing looks up)."
)
delivery_app = _command_group(
    "delivery", "Look up deliveries: which original went to which vendor, when, and where."
)

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        metavar="DIR",
        help=f"Studio home folder (default: ${HOME_ENV}, else ./.leaktrace).",
        show_default=False,
    ),
]


def _remember_json(ctx: typer.Context, value: bool) -> bool:
    """--json, noted as soon as it is parsed: a command that then fails as a whole still
    prints its one JSON document (the error)."""
    _settings(ctx).json = bool(value)
    return value


JsonOption = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print one JSON document (the error, when the command fails as a whole); no "
        "progress, no colour.",
        callback=_remember_json,
    ),
]
# Inputs are not checked by the parser (readable=False): an unreadable file is one failed
# file of the batch, reported with the others, not a usage error that stops it.
InputsArgument = Annotated[
    list[Path],
    typer.Argument(
        metavar="INPUT...",
        help="Image or video files, image sequences, or folders (walked recursively).",
        show_default=False,
        readable=False,
    ),
]


def _one_of(choices: tuple[str, ...]) -> Any:
    """A parameter callback refusing a value outside `choices` (a usage error, exit 2)."""

    def check(value: str | None) -> str | None:
        if value is not None and value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return check


def _settings(ctx: typer.Context) -> _Settings:
    root = ctx.find_root()
    if not isinstance(root.obj, _Settings):
        root.obj = _Settings()
    return root.obj


def _home(ctx: typer.Context, home: Path | None) -> Path:
    """Command-level --home, else the root --home, else the environment / default."""
    return resolve_home(home if home is not None else _settings(ctx).home)


def _open_studio(ctx: typer.Context, home: Path | None) -> Studio:
    """Open the studio, warning on stderr when its secret is open to other users."""
    studio = Studio.open(_home(ctx, home))
    mode = studio.secret_exposure()
    if mode is not None:
        secret = studio.home / SECRET_NAME
        typer.echo(
            f"warning: {secret}: the studio secret is open to other users (mode {mode:04o}); "
            f"anyone who reads it can forge or strip marks: chmod 600 {secret}",
            err=True,
        )
    return studio


def _print_json(document: object) -> None:
    typer.echo(json.dumps(document, indent=2, allow_nan=False))


def _print_json_array(items: Iterable[object]) -> None:
    """:func:`_print_json` of a list, written item by item (the same text)."""
    first = True
    for item in items:
        text = textwrap.indent(json.dumps(item, indent=2, allow_nan=False), "  ")
        typer.echo(("[\n" if first else ",\n") + text, nl=False)
        first = False
    typer.echo("[]" if first else "\n]")


@contextmanager
def _progress(label: str, *, enabled: bool) -> Iterator[ProgressCallback | None]:
    """A rich progress bar on stderr, or None when disabled or stderr is not a terminal."""
    with _progress_bars(label, enabled=enabled) as (files, _):
        yield files


class _FpsColumn(ProgressColumn):
    """Frames per second of a clip's task."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:5.1f} fps")


@contextmanager
def _progress_bars(
    label: str, *, enabled: bool
) -> Iterator[tuple[ProgressCallback | None, FrameProgressCallback | None]]:
    """A files bar, and a frames bar (frames, fps, ETA) for each clip, on stderr; (None,
    None) when disabled or stderr is not a terminal."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield None, None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _FpsColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=None)
        clips: dict[str, Any] = {}

        def update(done: int, total: int, path: Path) -> None:
            bar.update(task, completed=done, total=total)

        def frames(done: int, total: int, name: str) -> None:
            if name not in clips:
                clips[name] = bar.add_task(f"  {Path(name).name}", total=total or None)
            bar.update(clips[name], completed=done, total=total or None)
            if total and done >= total:
                bar.remove_task(clips.pop(name))

        yield update, frames


def _report_errors(messages: Sequence[str | None]) -> int:
    """Print each error on stderr; return the exit code they imply."""
    errors = [m for m in messages if m]
    for message in errors:
        typer.echo(f"error: {_one_line(message)}", err=True)
    return EXIT_ERROR if errors else EXIT_OK


# --------------------------------------------------------------------------- commands


@app.callback()
def _root(
    ctx: typer.Context,
    home: HomeOption = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show a traceback when a command fails.")
    ] = False,
) -> None:
    """Forensic watermarking: mark the copies you hand to vendors, trace a leak back."""
    settings = _settings(ctx)
    settings.home, settings.debug = home, debug


@app.command(epilog=_EPILOG)
def init(ctx: typer.Context, home: HomeOption = None) -> None:
    """Create a studio: a secret key and an empty delivery registry."""
    path = _home(ctx, home)
    with Studio.create(path):
        pass
    typer.echo(f"created studio in {path}")
    typer.echo(
        f"warning: {path / SECRET_NAME} is the studio secret: keep it private, and back the "
        "studio up (`leaktrace backup DIR`)",
        err=True,
    )


@vendor_app.command("add", epilog=_EPILOG)
def vendor_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Vendor name: 1-64 letters, digits, space . _ -")],
    home: HomeOption = None,
) -> None:
    """Register a vendor."""
    with _open_studio(ctx, home) as studio:
        vendor = studio.add_vendor(name)
    typer.echo(f"added vendor {vendor.name}")


@vendor_app.command("list", epilog=_EPILOG)
def vendor_list(ctx: typer.Context, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """List vendors."""
    with _open_studio(ctx, home) as studio:
        vendors = studio.list_vendors()
        counts = studio.registry.delivery_counts()
    if as_json:
        _print_json(
            [
                {"name": v.name, "created_at": v.created_at, "deliveries": counts[v.name]}
                for v in vendors
            ]
        )
        return
    table = Table("vendor", "added (UTC)", "deliveries")
    for vendor in vendors:
        table.add_row(vendor.name, vendor.created_at, str(counts[vendor.name]))
    _Console().print(table)


@app.command(epilog=_EPILOG)
def status(ctx: typer.Context, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Describe the studio: its key's fingerprint, registry health and what it holds.

    The fingerprint tells two machines' secrets apart without showing either: the
    machine that marks and the one that traces must show the same. Exits 1 when the
    registry's integrity check finds a problem.
    """
    with _open_studio(ctx, home) as studio:
        document = studio.status()
    if as_json:
        _print_json(document)
    else:
        for name, value in document.items():
            typer.echo(f"{name.replace('_', ' ')}: {'-' if value is None else value}")
    if document["integrity"] != "ok":
        _fail(f"{document['registry']}: integrity check failed: {document['integrity']}")


@app.command(epilog=_EPILOG)
def backup(
    ctx: typer.Context,
    dest: Annotated[
        Path, typer.Argument(metavar="DEST", help="New folder for the backup (must not exist).")
    ],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Back up the studio to a new folder: its secret and a consistent registry snapshot.

    Safe while other leaktrace commands run. The backup is itself a studio home: restore
    by using it as --home, or by copying its secret.key and registry.sqlite into one. It
    holds the secret, so keep it as private as the studio.
    """
    with _open_studio(ctx, home) as studio:
        manifest = studio.backup(dest)
    if as_json:
        _print_json(manifest)
        return
    counts = ", ".join(
        f"{manifest[many]} {one if manifest[many] == 1 else many}"
        for one, many in (("vendor", "vendors"), ("delivery", "deliveries"), ("asset", "assets"))
    )
    typer.echo(
        f"backed up {manifest['source']} to {manifest['backup']}: {counts}; key "
        f"fingerprint {manifest['key_fingerprint']}"
    )
    typer.echo(
        f"warning: {Path(str(manifest['backup'])) / SECRET_NAME} is the studio secret; "
        "keep the backup private",
        err=True,
    )


@delivery_app.command("list", epilog=_EPILOG)
def delivery_list(
    ctx: typer.Context,
    vendor: Annotated[
        str | None,
        typer.Option("--vendor", metavar="NAME", help="Only this vendor's deliveries."),
    ] = None,
    last: Annotated[
        int | None,
        typer.Option("--last", min=1, metavar="N", help="Only the N most recent deliveries."),
    ] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """List deliveries, oldest first: id, vendor, original, when, and the marked copy's path."""
    with _open_studio(ctx, home) as studio:
        # streamed: a registry of 100,000 deliveries took 565 MB as one list
        records = studio.iter_deliveries(vendor, last=last)
        if as_json:
            _print_json_array(r.to_json() for r in records)
            return
        console = _Console()
        # pages of rows, each printed as it is read: rich lays out a table whole, which
        # took minutes and gigabytes at 100,000 rows (no rows: one empty table)
        first = list(itertools.islice(records, _TABLE_PAGE))
        pages = itertools.chain(
            [first], iter(lambda: list(itertools.islice(records, _TABLE_PAGE)), [])
        )
        for page in pages:
            table = Table()
            for name in ("delivery", "vendor", "asset", "size", "delivered (UTC)", "output"):
                table.add_column(name, overflow="fold")
            for r in page:
                table.add_row(
                    r.delivery.delivery_id,
                    r.vendor.name,
                    r.asset.original_path,
                    f"{r.asset.width}x{r.asset.height}",
                    r.delivery.created_at,
                    r.delivery.output_path,
                )
            console.print(table)


@delivery_app.command("show", epilog=_EPILOG)
def delivery_show(
    ctx: typer.Context,
    delivery_id: Annotated[
        str,
        typer.Argument(metavar="ID", help="Delivery id: 8 hex digits, as trace prints it."),
    ],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one delivery: vendor, original (path, SHA-256, size), when, where, codec."""
    with _open_studio(ctx, home) as studio:
        record = studio.get_delivery(delivery_id)
    document = record.to_json()
    if as_json:
        _print_json(document)
        return
    for name, value in document.items():
        text = json.dumps(value, sort_keys=True) if isinstance(value, dict) else value
        typer.echo(f"{name}: {text}")


@app.command(epilog=_EPILOG)
def embed(
    ctx: typer.Context,
    inputs: InputsArgument,
    vendor: Annotated[
        str, typer.Option("--vendor", help="Registered vendor receiving the copies.")
    ],
    out: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Output folder (created if missing).")
    ],
    codec: Annotated[
        str | None,
        typer.Option(
            "--codec",
            help=f"Video: codec family to write ({', '.join(CODEC_FAMILIES)}; default: "
            "the source's).",
            callback=_one_of(tuple(CODEC_FAMILIES)),
        ),
    ] = None,
    crf: Annotated[
        int | None,
        typer.Option(
            "--crf",
            min=0,
            max=63,
            help="Video: quality (x264/x265/VP9 crf, ProRes qscale, MJPEG q; default: "
            "visually lossless).",
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            help=f"Video: encoder speed preset ({', '.join(ENCODER_PRESETS)}).",
            callback=_one_of(ENCODER_PRESETS),
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Threads marking the frames of a clip; above 1, a still's index features "
            "are computed in a second thread while it is marked.",
        ),
    ] = max(1, os.cpu_count() or 1),
    stills: Annotated[
        bool,
        typer.Option("--stills", help="Numbered image files are stills, not an image sequence."),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Say what would be marked, skipped or refused, and where; write nothing "
            "(files are hashed, not decoded).",
        ),
    ] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mark files for a vendor: one delivery per still, video file or image sequence.

    Outputs keep their path relative to the input folder and their format (stills:
    JPEG at quality 95). Videos (mp4, mov, mkv, webm) keep every stream, time stamp
    and colour tag, re-encoded with the source's codec family at visually lossless
    quality; numbered frames (shot_010.0001.png ...) are one sequence, one delivery.
    Inputs are never modified; existing outputs are never overwritten (an input already
    delivered to this vendor there is skipped, so a batch can resume).
    """
    if dry_run:
        with _open_studio(ctx, home) as studio:
            planned = studio.plan_embed(inputs, vendor, out, sequences=not stills)
        if as_json:
            _print_json([r.to_json() for r in planned])
        else:
            _Console().print(_embed_table(planned))
        raise typer.Exit(_report_errors([r.error for r in planned]))
    with (
        _open_studio(ctx, home) as studio,
        _progress_bars("marking", enabled=not as_json) as (tick, frames),
    ):
        records = studio.embed_files(
            inputs,
            vendor,
            out,
            progress=tick,
            codec=codec,
            crf=crf,
            preset=preset,
            workers=workers,
            sequences=not stills,
            frame_progress=frames,
        )
    if as_json:
        _print_json([r.to_json() for r in records])
    else:
        _Console().print(_embed_table(records))
    for r in records:
        if r.weak:
            typer.echo(
                f"warning: {r.input}: weak mark (margin {_rounded_down(r.margin)} < "
                f"{WEAK_MARGIN}): too "
                "small, too flat or too close to white or black to be traced reliably after an "
                "ordinary leak",
                err=True,
            )
    raise typer.Exit(_report_errors([r.error for r in records]))


def _rounded_down(value: float) -> str:
    """`value` to 2 decimals, rounded down: a margin of 1.2496 under the 1.25 line reads
    1.24, never "1.25 < 1.25"."""
    return f"{math.floor(value * 100.0 + 1e-9) / 100.0:.2f}"  # (1.15 * 100 is 114.99...)


def _embed_table(records: Sequence[EmbedRecord]) -> Table:
    table = Table("input", "output", "delivery", "frames", "PSNR-Y (dB)", "margin", "status")
    for r in records:
        psnr = "-" if r.to_json()["psnr_y"] is None else f"{r.psnr_y:.1f}"
        margin = "-" if r.margin is None else f"{r.margin:.2f}" + (" weak" if r.weak else "")
        frames = "-" if r.frames is None else str(r.frames)
        table.add_row(
            r.input, r.output or "-", r.delivery_id or "-", frames, psnr, margin, r.status
        )
    return table


@asset_app.command("add", epilog=_EPILOG)
def asset_add(
    ctx: typer.Context,
    inputs: InputsArgument,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Index originals delivered outside leaktrace (or never delivered).

    A leak of an indexed original is then registered to it and compared with it, so an
    unmarked copy is recognised as such. Files are read only; embed indexes its inputs
    by itself.
    """
    with (
        _open_studio(ctx, home) as studio,
        _progress("indexing", enabled=not as_json) as tick,
    ):
        records = studio.add_assets(inputs, progress=tick)
    if as_json:
        _print_json([r.to_json() for r in records])
    else:
        _Console().print(_asset_table(records))
    raise typer.Exit(_report_errors([r.error for r in records]))


@asset_app.command("list", epilog=_EPILOG)
def asset_list(ctx: typer.Context, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """List the originals the registry knows: path, size, indexed or not, deliveries."""
    with _open_studio(ctx, home) as studio:
        assets = studio.list_assets()
    documents = [
        {
            "asset": a.id,
            "original": a.original_path,
            "sha256": a.sha256,
            "width": a.width,
            "height": a.height,
            "indexed": indexed,
            "deliveries": deliveries,
            "added_at": a.created_at,
        }
        for a, indexed, deliveries in assets
    ]
    if as_json:
        _print_json(documents)
        return
    table = Table()
    for name in ("asset", "original", "size", "indexed", "deliveries", "added (UTC)"):
        table.add_column(name, overflow="fold")
    for d in documents:
        size = f"{d['width']}x{d['height']}"
        indexed = "yes" if d["indexed"] else "no"
        table.add_row(
            str(d["asset"]),
            str(d["original"]),
            size,
            indexed,
            str(d["deliveries"]),
            str(d["added_at"]),
        )
    _Console().print(table)


def _asset_table(records: Sequence[AssetRecord]) -> Table:
    table = Table("file", "asset", "features", "status")
    for r in records:
        asset = "-" if r.asset_id is None else str(r.asset_id)
        table.add_row(r.file, asset, str(r.features), r.status)
    return table


@app.command(epilog=_EPILOG)
def trace(
    ctx: typer.Context,
    inputs: InputsArgument,
    original: Annotated[
        Path | None,
        typer.Option(
            "--original",
            metavar="FILE",
            help="The studio original the leaks come from (default: find it in the index).",
            readable=False,  # the library says why it cannot be read, in one line
        ),
    ] = None,
    blind: Annotated[
        bool, typer.Option("--blind", help="Decode the leak alone; skip the asset index.")
    ] = False,
    max_frames: Annotated[
        int,
        typer.Option("--max-frames", min=1, help="Clips: frames pooled at most (the work bound)."),
    ] = DEFAULT_MAX_FRAMES,
    damaged_ok: Annotated[
        bool,
        typer.Option(
            "--damaged-ok",
            help="Stills: trace what libjpeg recovers of a cut or corrupt JPEG "
            "instead of refusing it (the record notes the damage).",
        ),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            metavar="DIR",
            help="Write a Markdown evidence report per file examined into DIR: the file's "
            "SHA-256, the verdict and its false-alarm probability in words, the registry's "
            "record of the delivery named; and a summary of the batch.",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            metavar="N",
            help="Trace N files at a time, in N processes (each loads the index once: "
            "worth it for batches; the same records as with 1).",
        ),
    ] = 1,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Look for a registered mark in suspect files and name the vendor.

    Each leak is matched against the index of delivered originals (or --original),
    registered to it, and compared with it (informed mode: survives crops, rotation,
    perspective, heavy scaling); when no original matches it is decoded blind. The
    verdict says which mode answered. A video or image sequence is traced blind by
    pooling its frames, stopping as soon as the verdict is certain; the record lists the
    frames used and the time ranges where the mark was seen.

    Exits 0 when every file was examined, whatever the verdicts; 1 when a file could
    not be read (the others are still traced).
    """
    if original is not None and blind:
        raise typer.BadParameter("--original and --blind exclude each other")
    with (
        _open_studio(ctx, home) as studio,
        _progress_bars("tracing", enabled=not as_json) as (tick, frames),
    ):
        records = studio.trace_files(
            inputs,
            original=original,
            informed=not blind,
            progress=tick,
            max_frames=max_frames,
            frame_progress=frames,
            damaged=damaged_ok,
            evidence=report,
            workers=workers,
        )
        summary = None if report is None else studio.write_trace_summary(records, report)
    if as_json:
        _print_json([r.to_json() for r in records])
    else:
        _Console().print(_trace_table(records))
        for r in records:
            if r.error:
                continue
            if r.frames is not None:
                seen = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in r.seen) or "-"
                typer.echo(f"{r.file}: {r.frames} frame(s) pooled; mark seen at {seen}")
            for note in r.notes:  # what the trace could not use or changed: evidence too
                typer.echo(f"{r.file}: note: {note}")
            if r.report is not None:
                typer.echo(f"{r.file}: report: {r.report}")
        if summary is not None:
            typer.echo(f"summary of the {len(records)} file(s): {summary}")
    raise typer.Exit(_report_errors([r.error for r in records]))


def _geometry_text(r: TraceRecord) -> str:
    g = r.geometry
    if g is None:
        return "-" if r.scale is None else f"x{r.scale:.2f}"
    text = f"{round(g.rotation) + 0:.0f}° x{g.scale_x:.2f}"  # + 0: never "-0°"
    if abs(g.scale_x - g.scale_y) > 0.01 * g.scale_x:
        text += f"/{g.scale_y:.2f}"
    return text + (" flip" if g.flipped else "")


def _trace_table(records: Sequence[TraceRecord]) -> Table:
    table = Table()
    table.add_column("file", overflow="fold")
    table.add_column("verdict", no_wrap=True)
    table.add_column("delivery", no_wrap=True)
    table.add_column("asset", overflow="fold")
    table.add_column("mode", no_wrap=True)
    table.add_column("p-value", no_wrap=True)
    table.add_column("score", no_wrap=True)
    table.add_column("geometry")
    for r in records:
        if r.error:
            verdict = "unreadable"
        elif r.found:
            verdict = r.vendor or "unregistered id"
        else:
            verdict = "no mark found"
        table.add_row(
            r.file,
            verdict,
            r.delivery_id or "-",
            r.asset or r.source or "-",
            r.mode or "-",
            "-" if r.p_value is None else f"{r.p_value:.2e}",
            "-" if r.score is None else f"{r.score:.1f}",
            _geometry_text(r),
        )
    return table


@app.command(epilog=_EPILOG)
def bench(
    frames: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="FRAMES",
            help="Image files or folders (walked recursively); default: the bundled sample frames.",
            show_default=False,
        ),
    ] = None,
    attacks: Annotated[
        list[str] | None,
        typer.Option(
            "--attacks",
            metavar="NAMES",
            help="Attack names (repeat the option or separate with commas), or 'all' "
            "(default: all; with --quick one per family).",
            show_default=False,
        ),
    ] = None,
    vendors: Annotated[
        int | None,
        typer.Option(
            "--vendors",
            metavar="N",
            help="Vendors (marked copies) per frame (default 3; 2 with --quick).",
            show_default=False,
        ),
    ] = None,
    peers: Annotated[
        bool,
        typer.Option(
            "--peers",
            help="Also run invisible-watermark dwtDct / dwtDctSvd and blind-watermark "
            "(pip install 'leaktrace[peers]'); frames are then downscaled to 1024 px unless "
            "--max-side says otherwise.",
        ),
    ] = False,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="Smoke test: 2 bundled frames at 640 px, 2 vendors, one attack per family.",
        ),
    ] = False,
    out: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Output folder (created if missing).")
    ] = Path("bench-out"),
    seed: Annotated[
        int, typer.Option("--seed", metavar="N", help="Base seed (payloads, attacks).")
    ] = 0,
    max_side: Annotated[
        int | None,
        typer.Option(
            "--max-side",
            metavar="PX",
            help="Downscale frames to at most PX per side first, for every method (0: full "
            "size; default 1024 with --peers, else full size).",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", metavar="N", help="Worker processes, one thread each.")
    ] = 2,
    as_json: JsonOption = False,
) -> None:
    """Benchmark: mark frames for N vendors, attack, trace blind; write a report.

    Writes results.json (every trial, summary, seed, versions, machine), results.md,
    plots (with matplotlib: pip install 'leaktrace[bench]') and index.html to --out, and
    prints the per-attack table (--json: the summary).
    """
    from watermark import bench as bench_lib  # imported here: keeps `leaktrace --help` fast

    if vendors is None:
        vendors = bench_lib.QUICK_VENDORS if quick else 3
    if not 1 <= vendors <= 1000:  # checked before the frames are read; raised so that
        # --json prints its one {"error": ...} document (_Group.invoke)
        raise bench_lib.BenchError(f"--vendors must be in 1..1000; got {vendors}")
    loaded = bench_lib.load_frames(frames) if frames else bench_lib.sample_bench_frames(quick=quick)
    chosen, notes = bench_lib.resolve_attacks(attacks, quick=quick)
    with _progress("benchmark", enabled=not as_json) as tick:
        result = bench_lib.run_bench(
            loaded,
            attacks=chosen,
            vendors=vendors,
            peers=peers,
            seed=seed,
            quick=quick,
            out_dir=out,
            progress=None if tick is None else (lambda d, t, label: tick(d, t, Path(label))),
            workers=workers,
            max_side=max_side,
            notes=notes,
            command=["leaktrace", *sys.argv[1:]],
        )
    if as_json:
        _print_json(result.summary)
        return
    typer.echo(bench_lib.summary_table(result.document))
    lt = result.summary["leaktrace"]
    typer.echo(
        f"\nleaktrace: {lt['correct']} of {lt['trials']} correct, {lt['wrong']} WRONG, "
        f"{lt['missed']} missed; {result.summary['wall_s']:.0f} s"
    )
    typer.echo(f"wrote {result.json_path}, {result.md_path}, {result.html_path}")
    if result.plots_skipped:
        typer.echo(f"warning: plots skipped: {result.plots_skipped}", err=True)


@app.command(epilog=_EPILOG)
def demo() -> None:
    """Mark bundled frames for 3 vendors, leak one copy, trace it (in a temporary studio).

    The leak is downscaled to 1/2, re-compressed as JPEG 70 and cropped to 80 % of its
    area. Exits 1 if the trace does not name the right vendor.
    """
    from ._demo import run_demo  # imported here: keeps `leaktrace --help` fast

    with tempfile.TemporaryDirectory(prefix="leaktrace-demo-") as workdir:
        result = run_demo(Path(workdir), log=lambda line: typer.echo(line, err=True))
    for line in result.summary():
        typer.echo(line)
    if not result.correct:
        _fail("the demo trace did not name the vendor whose copy leaked")


def main() -> None:
    """Console-script entry point."""
    try:
        app(prog_name="leaktrace")
    except BrokenPipeError:  # raised while flushing stdout at the very end
        _silence_stdout()
        sys.exit(EXIT_CLOSED_PIPE)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
