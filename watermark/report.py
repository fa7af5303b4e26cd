"""Plots, crops and ``index.html`` for ``leaktrace bench`` (I/O edge; matplotlib optional).

Plots (matplotlib with the Agg backend, imported lazily; the ``bench`` extra):

- ``accuracy.png``: accuracy against attack strength, one panel per attack family, one
  line per (method, attack kind): leaktrace's correct-vendor rate, the peers' exact-payload
  rate;
- ``quality.png``: PSNR-Y and SSIM-Y of every marked frame, per method;
- ``calibration.png``: unmarked frames traced, the empirical fraction of p-values <= a
  against a, on log axes, with the bound y = x;
- ``timing.png``: embed and trace time per megapixel, per method.

``index.html`` is static, with relative links to the PNGs next to it: the plots, the
summary table and, for a few frames, a 1:1 crop of the flattest region before and after
marking with the difference x16 around mid-grey.
"""

from __future__ import annotations

import html
import math
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .media import write_image

__all__ = ["PLOT_NAMES", "Report", "write_report"]

PLOT_NAMES: tuple[str, ...] = ("accuracy.png", "quality.png", "calibration.png", "timing.png")

# Units of each attack kind's strength (the Attack.strength of watermark._attacks).
_UNITS = {
    "jpeg": "JPEG quality",
    "webp": "WebP quality",
    "h264crf": "x264 CRF",
    "scale": "scale factor",
    "crop": "area kept (fraction)",
    "blur": "sigma (px)",
    "median": "kernel (px)",
    "unsharp": "sigma (px)",
    "noise": "sigma (8-bit levels)",
    "saltpepper": "fraction of pixels",
    "brightness": "offset (8-bit levels)",
    "contrast": "factor",
    "gamma": "gamma",
    "saturation": "factor",
    "hue": "degrees",
    "grey": "-",
    "playerbar": "bar height (fraction)",
    "screenshot": "scale factor",
    "social": "scale factor",
    "combined": "scale factor",
    "none": "-",
}
_COLOURS = {
    "leaktrace": "#1f77b4",
    "dwtDct": "#ff7f0e",
    "dwtDctSvd": "#2ca02c",
    "blind-watermark": "#d62728",
}
_MARKERS = "osD^v<>ph*"
DIFF_GAIN = 16


@dataclass(frozen=True, slots=True)
class Report:
    """Files written by :func:`write_report`."""

    html: Path
    plots: tuple[Path, ...]
    skipped: str | None


def write_report(doc: dict, out_dir: Path, *, crops: list[dict]) -> Report:
    """Write the plots, the crop PNGs and ``index.html`` for a results document.

    Parameters
    ----------
    doc : dict
        The ``results.json`` document (without ``plots``).
    out_dir : Path
        Existing folder.
    crops : list of dict
        ``{"frame", "before", "leaktrace", <peer>...}``: (h, w, 3) uint8 crops.

    Returns
    -------
    Report
    """
    try:
        import matplotlib
    except ImportError:
        plots: tuple[Path, ...] = ()
        skipped = "matplotlib is not installed (pip install 'leaktrace[bench]')"
    else:
        matplotlib.use("Agg", force=True)
        plots = (
            _plot_accuracy(doc, out_dir / PLOT_NAMES[0]),
            _plot_quality(doc, out_dir / PLOT_NAMES[1]),
            _plot_calibration(doc, out_dir / PLOT_NAMES[2]),
            _plot_timing(doc, out_dir / PLOT_NAMES[3]),
        )
        skipped = None
    crop_rows = _write_crops(crops, out_dir / "crops", methods=("leaktrace", *doc["peers"]))
    page = out_dir / "index.html"
    page.write_text(_html(doc, plots, skipped, crop_rows), encoding="utf-8")
    return Report(html=page, plots=plots, skipped=skipped)


# --------------------------------------------------------------------------- plots


def _methods(doc: dict) -> list[str]:
    return ["leaktrace", *doc["peers"]]


def _rate(doc: dict, method: str, attack: str) -> float | None:
    s = doc["summary"]
    if method == "leaktrace":
        return s["leaktrace"]["by_attack"][attack]["accuracy"]
    return s["peers"][method]["by_attack"][attack]["exact_rate"]


def _plot_accuracy(doc: dict, path: Path) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from .bench import attack_kind

    families: dict[str, list[dict]] = {}
    for a in doc["attacks"]:
        families.setdefault(a["family"], []).append(a)
    n = len(families)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), squeeze=False)
    for ax, (family, attacks) in zip(axes.flat, families.items(), strict=False):
        kinds: dict[str, list[dict]] = {}
        for a in attacks:
            kinds.setdefault(attack_kind(a["name"]), []).append(a)
        for m_i, method in enumerate(_methods(doc)):
            for k_i, ladder in enumerate(kinds.values()):
                ladder = sorted(ladder, key=lambda a: a["strength"])
                xs = [a["strength"] for a in ladder]
                ys = [100 * (_rate(doc, method, a["name"]) or 0.0) for a in ladder]
                ax.plot(
                    xs,
                    ys,
                    marker=_MARKERS[k_i % len(_MARKERS)],
                    linestyle="-" if method == "leaktrace" else "--",
                    color=_COLOURS.get(method, f"C{m_i}"),
                    alpha=0.9,
                )
                if method == "leaktrace":
                    for a, x, y in zip(ladder, xs, ys, strict=True):
                        ax.annotate(
                            a["name"],
                            (x, y),
                            textcoords="offset points",
                            xytext=(3, 4),
                            fontsize=7,
                            color="0.3",
                        )
        units = "; ".join(f"{k}: {_UNITS.get(k, 'strength')}" for k in kinds)
        ax.set_title(f"{family}")
        ax.set_xlabel(textwrap.fill(f"attack strength ({units})", 70), fontsize=7)
        ax.set_ylabel("correct / exact payload (%)")
        ax.set_ylim(-5, 105)
        ax.grid(alpha=0.3)
        # One legend entry per method (colour, line style) and per attack kind (marker).
        handles = [
            Line2D([], [], color=_COLOURS.get(m, f"C{i}"), linestyle="-" if i == 0 else "--",
                   label=m)
            for i, m in enumerate(_methods(doc))
        ] + [
            Line2D([], [], color="0.3", marker=_MARKERS[k % len(_MARKERS)], linestyle="",
                   label=kind)
            for k, kind in enumerate(kinds)
        ]  # fmt: skip
        ax.legend(handles=handles, fontsize=6, loc="lower left", ncol=2)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(
        "Accuracy against attack strength: leaktrace names the right vendor (solid), "
        "peers recover all 32 bits (dashed)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_quality(doc: dict, path: Path) -> Path:
    import matplotlib.pyplot as plt

    methods = _methods(doc)
    embeds = doc["trials"]["embeds"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in (
        (ax1, "psnr_y", "PSNR-Y (dB)"),
        (ax2, "ssim_y", "SSIM-Y (1 = identical)"),
    ):
        data = []
        for method in methods:
            vals = [e[key] for e in embeds if e["method"] == method]
            data.append([v for v in vals if isinstance(v, float) and math.isfinite(v)])
        parts = ax.boxplot(data, tick_labels=methods, showmeans=True, patch_artist=True)
        for patch, method in zip(parts["boxes"], methods, strict=True):
            patch.set_facecolor(_COLOURS.get(method, "0.8"))
            patch.set_alpha(0.35)
        rng = np.random.default_rng(0)  # jitter only
        for i, (vals, method) in enumerate(zip(data, methods, strict=True), start=1):
            ax.scatter(
                i + rng.uniform(-0.12, 0.12, len(vals)),
                vals,
                s=10,
                color=_COLOURS.get(method, "k"),
                label=f"{method} (n={len(vals)})",
                zorder=3,
            )
        ax.set_ylabel(label)
        ax.set_xlabel("method")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax1.set_title("PSNR-Y of each marked frame against its original")
    ax2.set_title("SSIM-Y of each marked frame against its original")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_calibration(doc: dict, path: Path) -> Path:
    import matplotlib.pyplot as plt

    unmarked = doc["trials"]["unmarked"]
    series = (
        ("p_value", "p-value of the verdict (a vendor named)", _COLOURS["leaktrace"], "-"),
        ("p_mark", "p_mark (any mark of this key present)", "#9467bd", "-."),
    )
    n = max(len(unmarked), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5))
    a = np.logspace(-8, 0, 400)
    ax.plot(a, a, "k--", label="bound y = x (a calibrated test)")
    for key, label, colour, style in series:
        p = np.array([r.get(key) for r in unmarked if isinstance(r.get(key), float)], np.float64)
        if not p.size:
            continue
        frac = np.searchsorted(np.sort(p), a, side="right") / p.size
        ax.step(
            a,
            np.maximum(frac, 0.5 / n),
            where="post",
            color=colour,
            linestyle=style,
            label=f"{label}, {p.size} unmarked trials",
        )
    ax.axhline(
        1 / n,
        color="0.6",
        linewidth=0.8,
        linestyle=":",
        label=f"resolution 1/{n} (a fraction of 0 is drawn at 0.5/{n})",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-8, 1.2)
    ax.set_ylim(0.3 / n, 1.5)
    ax.set_xlabel("threshold a (false-alarm probability)")
    ax.set_ylabel("fraction of unmarked trials with p <= a")
    ax.set_title("False-alarm calibration (unmarked frames, attacked and not)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_timing(doc: dict, path: Path) -> Path:
    import matplotlib.pyplot as plt

    methods = _methods(doc)
    t = doc["summary"]["time_ms_per_mp"]
    x = np.arange(len(methods))
    fig, ax = plt.subplots(figsize=(7, 4))
    for off, key, label, hatch in (
        (-0.2, "embed_ms_per_mp", "embed", ""),
        (0.2, "trace_ms_per_mp", "trace / extract", "//"),
    ):
        vals = [t[m][key] or 0.0 for m in methods]
        bars = ax.bar(
            x + off,
            vals,
            width=0.4,
            label=label,
            hatch=hatch,
            color=[_COLOURS.get(m, "0.6") for m in methods],
            edgecolor="k",
            alpha=0.8,
        )
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(x, methods)
    ax.set_yscale("log")
    ax.set_ylabel("time per megapixel (ms/MP, median, one thread)")
    ax.set_xlabel("method")
    ax.set_title("Embed and trace time per megapixel")
    ax.legend()
    ax.grid(alpha=0.3, axis="y", which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- crops, html


def _amplified(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """``128 + 16 (after - before)`` per channel, rounded and clipped to uint8."""
    d = after.astype(np.float64) - before.astype(np.float64)
    return np.clip(np.rint(128.0 + DIFF_GAIN * d), 0, 255).astype(np.uint8)


def _write_crops(crops: list[dict], folder: Path, *, methods: tuple[str, ...]) -> list[dict]:
    """Write before / after / diff PNGs; return rows of (caption, relative path) cells."""
    rows = []
    stems: set[str] = set()
    for c in crops:
        folder.mkdir(parents=True, exist_ok=True)
        # The whole frame name, folders and extension included: sub/x.png, x.png and x.jpg
        # are three frames, and each crop file must be its own.
        stem = re.sub(r"[^\w.-]", "_", c["frame"])
        while stem in stems:  # sub/x.png and sub_x.png still meet here
            stem += "_"
        stems.add(stem)
        cells = []
        before = folder / f"{stem}_before.png"
        write_image(before, c["before"], format="png")
        cells.append(("original (1:1)", f"crops/{before.name}"))
        for method in methods:
            after = c.get(method)
            if after is None or after.shape != c["before"].shape:
                continue
            if method == "leaktrace":
                p = folder / f"{stem}_{method}_after.png"
                write_image(p, after, format="png")
                cells.append((f"{method} marked (1:1)", f"crops/{p.name}"))
            p = folder / f"{stem}_{method}_diff_x16.png"
            write_image(p, _amplified(c["before"], after), format="png")
            cells.append((f"{method}: difference x16", f"crops/{p.name}"))
        rows.append({"frame": c["frame"], "window": c.get("window"), "cells": cells})
    return rows


def _md_table_html(md: str) -> str:
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    if len(lines) < 2:
        return ""

    def cells(line: str) -> list[str]:
        return [html.escape(c.strip()) for c in line.strip("|").split("|")]

    head = "".join(f"<th>{c}</th>" for c in cells(lines[0]))
    body = "".join(
        "<tr>" + "".join(f"<td>{c}</td>" for c in cells(ln)) + "</tr>" for ln in lines[2:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(doc: dict, plots: tuple[Path, ...], skipped: str | None, crop_rows: list[dict]) -> str:
    from .bench import summary_table

    s = doc["summary"]
    m = doc["machine"]
    title = "leaktrace bench"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{title}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:1400px}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #bbb;"
        "padding:2px 6px;text-align:right}th{background:#eee}td:first-child,td:nth-child(2)"
        "{text-align:left}img.plot{max-width:100%;border:1px solid #ddd;margin:6px 0}"
        "figure{display:inline-block;margin:4px;text-align:center;font-size:12px}"
        "img.crop{image-rendering:pixelated;border:1px solid #999}</style>",
        "</head><body>",
        f"<h1>{title}</h1>",
        f"<p><code>{html.escape(' '.join(doc['command']))}</code>: {len(doc['frames'])} frames x "
        f"{doc['vendors']} vendors x {len(doc['attacks'])} attacks, seed {doc['seed']}, "
        f"{s['wall_s']:.0f} s wall. leaktrace {html.escape(str(doc['versions']['leaktrace']))}, "
        f"{html.escape(str(m['cpu_count']))} x {html.escape(str(m['cpu_model']))}, "
        f'{html.escape(m["platform"])}. Data: <a href="results.json">results.json</a>, '
        '<a href="results.md">results.md</a>.</p>',
        "<h2>Summary</h2>",
        _md_table_html(summary_table(doc)),
    ]
    if doc["notes"]:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in doc["notes"]) + "</ul>")
    parts.append("<h2>Plots</h2>")
    if skipped:
        parts.append(f"<p>Plots skipped: {html.escape(skipped)}</p>")
    for p in plots:
        parts.append(f'<p><img class="plot" src="{p.name}" alt="{p.stem} plot"></p>')
    if crop_rows:
        parts.append(
            f"<h2>Before / after</h2><p>The flattest {CROP_PX} x {CROP_PX} px region of a few "
            f"frames at 1:1, and each method's change there amplified x{DIFF_GAIN} around "
            "mid-grey.</p>"
        )
    for row in crop_rows:
        parts.append(f"<h3>{html.escape(row['frame'])}</h3><div>")
        for caption, src in row["cells"]:
            parts.append(
                f'<figure><img class="crop" src="{html.escape(src)}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


CROP_PX = 256
