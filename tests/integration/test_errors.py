"""Bad input that only a real build can reject: one line naming the problem, a non-zero exit, no traceback,
out/ left as it was. Everything rejected before a build starts is a case of the catalogue, bad_inputs.yaml
(test_bad_inputs.py)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .conftest import DATA, Result, copy_project, doit, snapshot

pytestmark = [pytest.mark.build]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = copy_project(tmp_path / "project")
    out = root / "out"
    out.mkdir()
    (out / "vmlinuz-amd64").write_bytes(b"an artifact from an earlier build\n")
    (out / "SHA256SUMS").write_text("0" * 64 + "  vmlinuz-amd64\n")
    return root


def fails_cleanly(root: Path, *args: str, expect: str, env: dict[str, str] | None = None,
                  targets: tuple[str, ...] = ("kernel", "initramfs")) -> Result:
    """Run doit on ``targets`` (only the ones the bad input breaks: a task that succeeds may write out/;
    ``-s`` runs a task without the tasks whose artifacts it takes)."""
    before = snapshot(root / "out")
    result = doit(root, *targets, *args, env=env)
    assert result.code != 0, result.text[-2000:]
    assert "Traceback" not in result.text, result.text[-4000:]
    line = result.last_line()
    assert line.startswith("error:"), result.text[-2000:]
    assert re.search(expect, line), line
    assert snapshot(root / "out") == before
    return result


def test_a_patch_that_does_not_apply_is_named(project: Path) -> None:
    shutil.copy(DATA / "0002-does-not-apply.patch", project / "patches/kernel/")
    result = fails_cleanly(project, "PLATFORM=linux/amd64", targets=("kernel",),
                           expect=r"patch 0002-does-not-apply\.patch does not apply")
    assert ".builder/logs/kernel-amd64.log" in result.text
