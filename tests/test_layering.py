"""The pure core (codec, sync, statistics) does no I/O and imports no edge library."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "watermark"
# the private modules, and the evidence report's text (a public module, as pure)
PURE = sorted(
    [*(p for p in PACKAGE.glob("_*.py") if p.name != "__init__.py"), PACKAGE / "evidence.py"]
)
FORBIDDEN_MODULES = {"av", "sqlite3", "typer", "rich", "os", "pathlib", "shutil", "tempfile"}
FORBIDDEN_CALLS = {"open", "imread", "imwrite", "VideoCapture", "VideoWriter"}


@pytest.mark.parametrize("path", PURE, ids=lambda p: p.name)
def test_pure_module_does_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names = {(node.module or "").split(".")[0]}
        else:
            names = set()
        assert not names & FORBIDDEN_MODULES, f"{path.name} imports {names & FORBIDDEN_MODULES}"
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            assert name not in FORBIDDEN_CALLS, f"{path.name} calls {name}"


def test_import_watermark_stays_light() -> None:
    import subprocess
    import sys

    heavy = "('av', 'sqlite3', 'typer', 'rich')"
    code = f"import sys, watermark; print(' '.join(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
