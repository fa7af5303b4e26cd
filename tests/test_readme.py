"""The README's Python example runs and does what it says."""

import ast
import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no Python example"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("PSNR-Y 4")
    assert lines[1].startswith("True 0x5ec2e7a1 p=")


def test_readme_clip_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2, "README has no clip example"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[1], "README.md", "exec"), {})
    found, payload, frames, p_value = out.getvalue().split()
    assert (found, payload) == ("True", "0x5ec2e7a1")
    assert 1 <= int(frames) <= 24 and float(p_value.removeprefix("p=")) <= 1e-6


def test_readme_studio_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3, "README has no studio example"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[2], "README.md", "exec"), {})
    verdict, title, listed = out.getvalue().splitlines()
    assert verdict == "Acme True informed"
    assert title.startswith("# Leak trace report: ") and title.endswith("shot.png`")
    ((vendor, delivery_id),) = ast.literal_eval(listed)
    assert vendor == "Acme" and len(delivery_id) == 8


def test_readme_quick_start_is_two_commands_and_ci_runs_the_test_command() -> None:
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in quick.splitlines() if line.strip()]
    assert len(commands) == 2 and "leaktrace demo" in commands[0]
    ci = (README.parent / ".ci" / "run").read_text()
    assert ".venv/bin/python -m pytest -q" in text and ".venv/bin/python -m pytest -q" in ci
