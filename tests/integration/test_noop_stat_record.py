"""The stat record through real builds: a no-op trusts the stat of outputs it has read, a same-size edit that
restores mtime is still rebuilt (ctime), and a corrupt record only costs a re-read."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from builder.host.hashindex import RACY_NS, RECORD

from .conftest import ROOT, doit

pytestmark = [pytest.mark.build]
CASE = Path(__file__).resolve().parents[1] / "cases" / "artifact-dependency"
OUTPUTS = ("produced-amd64.txt", "unused-amd64.txt", "consumed-amd64.txt")


@pytest.fixture
def built(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(CASE, project, ignore=shutil.ignore_patterns("case.yaml"))
    shutil.copy(ROOT / "dodo.py", project / "dodo.py")
    result = doit(project, "consumer", timeout=900)
    assert result.code == 0, result.text[-3000:]
    time.sleep(RACY_NS / 1e9 + 0.1)  # no output is racy any more: their records can be trusted
    return project


def record(project: Path) -> dict[str, list[object]]:
    files: dict[str, list[object]] = json.loads((project / ".builder" / RECORD).read_text())["files"]
    return files


def no_op(project: Path) -> None:
    result = doit(project, "consumer", timeout=900)
    assert result.code == 0 and result.skipped("producer:amd64") and result.skipped("consumer:amd64"), \
        result.text[-3000:]


def test_a_no_op_reads_no_output_it_has_a_record_of(built: Path) -> None:
    out = (built / "out").resolve()
    assert {Path(p).name for p in record(built)} >= set(OUTPUTS)  # the publish recorded what it hashed
    no_op(built)  # reads again only what was racy when published
    before = (built / ".builder" / RECORD).stat()
    no_op(built)
    after = (built / ".builder" / RECORD).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "a no-op read an output again"
    assert RECORD not in os.listdir(out) and "hashes" not in (out / "SHA256SUMS").read_text()
    check = subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_same_size_edit_that_restores_mtime_is_rebuilt(built: Path) -> None:
    no_op(built)
    produced = built / "out" / "produced-amd64.txt"
    data, info = produced.read_bytes(), produced.stat()
    produced.write_bytes(data.upper())  # the same size
    os.utime(produced, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert produced.stat().st_mtime_ns == info.st_mtime_ns and produced.stat().st_size == info.st_size
    result = doit(built, "consumer", timeout=900)
    assert result.code == 0 and result.ran("producer:amd64"), result.text[-3000:]
    assert produced.read_bytes() == data


@pytest.mark.parametrize("damage", [b"\x00\xff not json", b'{"format": 1, "files": []}'])
def test_a_corrupt_record_costs_one_re_read_and_the_no_op_stays_one(built: Path, damage: bytes) -> None:
    (built / ".builder" / RECORD).write_bytes(damage)
    no_op(built)
    assert {Path(p).name for p in record(built)} >= {"produced-amd64.txt", "consumed-amd64.txt"}
