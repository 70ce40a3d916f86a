"""out/ as a transaction, through a real doit run: a build killed (SIGKILL) at each write boundary of its
publish leaves out/ verifying with `sha256sum -c SHA256SUMS`, whole (the old tree or the new one), and the
next run converges with nothing left behind. `doit clean` takes artifacts and their checksum lines together."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ..faults.sitecustomize import POINTS, VARIABLE
from .conftest import ROOT, doit, snapshot

pytestmark = [pytest.mark.build]
CASE = Path(__file__).resolve().parents[1] / "cases" / "artifact-dependency"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("transaction") / "project"
    shutil.copytree(CASE, project, ignore=shutil.ignore_patterns("case.yaml"))
    shutil.copy(ROOT / "dodo.py", project / "dodo.py")
    result = doit(project, "consumer", timeout=900)
    assert result.code == 0, result.text[-3000:]
    return project


def verifies(out: Path) -> None:
    check = subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def leftovers(project: Path) -> list[str]:
    """Anything a build leaves that is neither its result nor its state."""
    found = [p.name for p in project.iterdir() if p.name.startswith(".out.")]
    tmp = project / ".builder" / "tmp"
    found += [f"tmp/{p.name}" for p in tmp.iterdir()] if tmp.is_dir() else []
    return found


FAULTS = Path(__file__).resolve().parents[1] / "faults"  # on PYTHONPATH: its sitecustomize kills at POINT


@pytest.mark.parametrize("point", POINTS)
def test_a_build_killed_at_a_write_boundary_leaves_out_whole_and_the_next_run_converges(built: Path,
                                                                                        point: str) -> None:
    out = built / "out"
    before = snapshot(out)
    greeting = f"GREETING=killed-at-{point}"
    path = os.pathsep.join(p for p in (str(FAULTS), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    killed = doit(built, "consumer", greeting, env={VARIABLE: point, "PYTHONPATH": path}, timeout=900)
    assert killed.code == -9, killed.text[-3000:]
    after = snapshot(out)
    verifies(out)
    assert after == before or after["produced-amd64.txt"] != before["produced-amd64.txt"], "a mix of two trees"
    again = doit(built, "consumer", greeting, timeout=900)
    assert again.code == 0, again.text[-3000:]
    assert (out / "consumed-amd64.txt").read_text().startswith(f"killed-at-{point} from the producer")
    verifies(out)
    assert leftovers(built) == []


def test_doit_clean_removes_artifacts_with_their_checksum_lines(built: Path) -> None:
    result = doit(built, "clean", "consumer")
    assert result.code == 0, result.text[-3000:]
    out = built / "out"
    assert not (out / "consumed-amd64.txt").exists()
    assert "consumed-amd64.txt" not in (out / "SHA256SUMS").read_text()
    assert "consumed-amd64.txt" not in (out / "manifest.json").read_text()
    assert not (out / ".inputs" / "consumer-amd64.json").exists()
    assert (out / "produced-amd64.txt").exists()  # only the named task's outputs
    verifies(out)
    rebuilt = doit(built, "consumer", timeout=900)
    assert rebuilt.code == 0 and rebuilt.ran("consumer:amd64"), rebuilt.text[-3000:]
    verifies(out)


# --- where out/ is: an odd project path, out/ a symlink elsewhere, out/ on a full disk ---

def _project(parent: Path) -> Path:
    project = parent / "project"
    shutil.copytree(CASE, project, ignore=shutil.ignore_patterns("case.yaml"))
    shutil.copy(ROOT / "dodo.py", project / "dodo.py")
    return project


def test_a_project_path_with_commas_quotes_colons_and_spaces_builds(tmp_path: Path) -> None:
    """--output and --secret are CSV for docker and buildx: a comma in the path must not split it."""
    project = _project(tmp_path / 'a,b "c":d e')
    result = doit(project, "consumer", timeout=900)
    assert result.code == 0, result.text[-3000:]
    assert (project / "out" / "consumed-amd64.txt").read_text().startswith("hello from the producer")
    verifies(project / "out")


def test_out_as_a_symlink_is_followed_and_staged_beside_its_target(tmp_path: Path) -> None:
    project = _project(tmp_path)
    elsewhere = tmp_path / "bigger-disk" / "artifacts"
    elsewhere.mkdir(parents=True)
    (project / "out").symlink_to(elsewhere)
    result = doit(project, "consumer", timeout=900)
    assert result.code == 0, result.text[-3000:]
    assert (project / "out").is_symlink() and (elsewhere / "consumed-amd64.txt").is_file()
    verifies(elsewhere)
    assert sorted(p.name for p in elsewhere.parent.iterdir()) == ["artifacts"]  # no staging tree left beside it


def test_out_on_a_full_disk_is_one_line_and_out_is_as_it_was(tmp_path: Path) -> None:
    project = _project(tmp_path)
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True)
    try:
        (disk / "out").mkdir()
        (project / "out").symlink_to(disk / "out")
        with open(disk / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"\0" * 4096)
            except OSError:
                pass
        result = doit(project, "producer", timeout=900)
        assert result.code == 1, result.text[-3000:]
        assert "Traceback" not in result.text
        assert result.last_line() == (f"error: cannot update out (a link to {disk / 'out'}): no space left on "
                                      "device (out/ is left as it was)"), result.last_line()
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "out"]
        assert list((disk / "out").iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_build_into_another_out_dir_leaves_out_and_its_record_alone(tmp_path: Path) -> None:
    """OUT_DIR=/elsewhere (an auditor's scratch rebuild): the artifacts and their checksum files go there,
    artifact dependencies are read from there, out/ is untouched, and each keeps its own doit record."""
    project = _project(tmp_path)
    first = doit(project, "consumer", timeout=900)
    assert first.code == 0, first.text[-3000:]
    before = snapshot(project / "out")
    scratch = tmp_path / "scratch-out"
    other = doit(project, "consumer", f"OUT_DIR={scratch}", timeout=900)
    assert other.code == 0, other.text[-3000:]
    assert other.ran("producer:amd64") and other.ran("consumer:amd64")  # nothing is up to date there yet
    assert snapshot(project / "out") == before
    verifies(scratch)
    assert (scratch / "consumed-amd64.txt").read_text() == (project / "out" / "consumed-amd64.txt").read_text()
    again = doit(project, "consumer", timeout=900)  # out/'s record was not touched by the other build
    assert again.code == 0 and not again.ran("producer:amd64") and not again.ran("consumer:amd64"), again.text
    there = doit(project, "consumer", f"OUT_DIR={scratch}", timeout=900)
    assert there.code == 0 and not there.ran("consumer:amd64"), there.text
    assert leftovers(project) == []
