"""The code stays as clean as the day it was written: ruff and mypy, as configured in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [
    [sys.executable, "-m", "ruff", "check", "builder", "tests", "dodo.py", "bench"],
    [sys.executable, "-m", "mypy"],
], ids=["ruff", "mypy"])
def test_linters_find_nothing(argv: list[str]) -> None:
    """A missing linter fails this test: ./setup.sh installs both (pip install -e '.[dev]')."""
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
