"""The code passes the project's linter (ruff: pyflakes, import order, line length 120; pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_passes():
    try:
        import ruff  # noqa: F401  (installed by `pip install -e ".[test]"`)
    except ImportError:
        if shutil.which("ruff") is None:
            pytest.skip("ruff is not installed (it is part of the test extra: pip install -e '.[test]')")
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
