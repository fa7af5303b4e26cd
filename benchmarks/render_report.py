"""Render a ``leaktrace bench`` index.html to PNG in headless Chromium, and check it.

    python benchmarks/render_report.py OUT_DIR [--png OUT_DIR/index_render.png]
                                       [--chromium chromium] [--size 1400x3000]

Opens ``OUT_DIR/index.html`` (file://) in headless Chromium (no network, no GPU, a
throw-away profile) and writes a screenshot, for a person to look at. Before that it
checks that every image the page names exists and is a readable PNG, and that
results.json lists every plot (``plots``) or says why they were skipped. Install
Chromium with ``apt-get install -y chromium`` (Debian) or point ``--chromium`` at it.

Exit codes: 0 rendered; 1 a missing page, image or browser, or a failed render; 2 a bad
option.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def check_page(out_dir: Path) -> list[str]:
    """The images index.html shows; raises SystemExit(1) on a missing or unreadable one."""
    page = out_dir / "index.html"
    if not page.is_file():
        sys.exit(f"error: {page} does not exist (run leaktrace bench --out {out_dir} first)")
    sources = re.findall(r'<img[^>]*src="([^"]+)"', page.read_text(encoding="utf-8"))
    doc = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
    missing_plots = [p for p in doc.get("plots", []) if p not in sources]
    if missing_plots:
        sys.exit(f"error: index.html does not show {missing_plots}")
    if not doc.get("plots") and not doc.get("plots_skipped"):
        sys.exit("error: results.json has neither plots nor plots_skipped")
    for src in sources:
        img = cv2.imdecode(np.fromfile(out_dir / src, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            sys.exit(f"error: {out_dir / src} (shown by index.html) is missing or unreadable")
    return sources


def render(page: Path, png: Path, *, browser: str, size: str) -> None:
    """Screenshot ``page`` with headless Chromium into ``png``."""
    w, h = size.lower().split("x")
    with tempfile.TemporaryDirectory(prefix="leaktrace-chromium-") as profile:
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            f"--window-size={int(w)},{int(h)}",
            page.resolve().as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0 or not png.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        sys.exit(f"error: {browser} failed (exit {proc.returncode}): {' | '.join(tail)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path, help="a leaktrace bench --out folder")
    parser.add_argument("--png", type=Path, help="screenshot path (OUT_DIR/index_render.png)")
    parser.add_argument("--chromium", help="browser executable (default: the first found)")
    parser.add_argument("--size", default="1400x3000", help="window WxH in px (1400x3000)")
    args = parser.parse_args()
    if not re.fullmatch(r"\d+x\d+", args.size):
        parser.error(f"--size must be WxH, e.g. 1400x3000; got {args.size!r}")
    browser = args.chromium or next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None or shutil.which(browser) is None:
        print("error: no Chromium found (apt-get install -y chromium, or --chromium PATH)",
              file=sys.stderr)  # fmt: skip
        return 1
    sources = check_page(args.out_dir)
    png = args.png or args.out_dir / "index_render.png"
    render(args.out_dir / "index.html", png, browser=browser, size=args.size)
    shot = cv2.imread(str(png))
    print(f"{png}: {shot.shape[1]}x{shot.shape[0]} px; index.html shows {len(sources)} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
