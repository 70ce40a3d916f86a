"""builder.sh, the shell library every build step sources: reproducible archives and patch handling."""

from __future__ import annotations

import os
import subprocess
from importlib import resources
from pathlib import Path

import pytest

LIBRARY = str(resources.files("builder").joinpath("scripts/builder.sh"))
EPOCH = "1735689600"


def sh(script: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``script`` in /bin/sh with the library sourced, as a build step would."""
    env = {"PATH": os.environ["PATH"], "SOURCE_DATE_EPOCH": EPOCH, "LC_ALL": "C", "TZ": "UTC"}
    return subprocess.run(["/bin/sh", "-c", f'set -eu; . "{LIBRARY}"; {script}', "sh", *args],
                          cwd=cwd, env=env, capture_output=True, timeout=30)


def make_tree(root: Path, names: list[str], mtime: int) -> Path:
    """The same content whatever the order of ``names``: dirs end with '/'."""
    for name in names:
        path = root / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"content of {name}\n")
        path.chmod(0o755 if name.endswith("/") or name.startswith("bin/") else 0o644)
    for path in [root, *root.rglob("*")]:
        os.utime(path, (mtime, mtime))
    return root


NAMES = ["bin/", "bin/busybox", "etc/", "etc/hostname", "init", "usr/share/doc/", "usr/share/doc/README"]


@pytest.fixture
def twins(tmp_path: Path) -> tuple[Path, Path]:
    """Two trees with equal content, created in opposite order, with different mtimes."""
    first = make_tree(tmp_path / "one", NAMES, mtime=1_000_000)
    second = make_tree(tmp_path / "two", list(reversed(NAMES)), mtime=1_700_000_000)
    return first, second


def test_builder_cpio_is_byte_identical_for_equal_trees_built_differently(twins: tuple[Path, Path]) -> None:
    one, two = (sh('builder_cpio "$1"', str(tree)) for tree in twins)
    assert one.returncode == 0, one.stderr
    assert one.stdout and one.stdout == two.stdout


def test_builder_cpio_lists_entries_sorted_with_the_epoch_as_mtime(twins: tuple[Path, Path], tmp_path: Path) -> None:
    archive = tmp_path / "a.cpio"
    archive.write_bytes(sh('builder_cpio "$1"', str(twins[0])).stdout)
    listing = subprocess.run(["cpio", "-itv", "--quiet", "-F", str(archive)], capture_output=True, text=True,
                             env={**os.environ, "TZ": "UTC", "LC_ALL": "C"}, check=True).stdout.splitlines()
    names = [line.split()[-1] for line in listing]
    assert names == sorted(names) and "init" in names and "usr/share/doc/README" in names
    assert all("Jan  1  2025" in line for line in listing), listing


def test_builder_tar_is_byte_identical_for_equal_trees_built_differently(twins: tuple[Path, Path]) -> None:
    one, two = (sh('builder_tar "$1"', str(tree)) for tree in twins)
    assert one.returncode == 0, one.stderr
    assert one.stdout and one.stdout == two.stdout


def test_builder_tar_stores_root_ownership_and_the_epoch(twins: tuple[Path, Path], tmp_path: Path) -> None:
    archive = tmp_path / "a.tar"
    archive.write_bytes(sh('builder_tar "$1"', str(twins[1])).stdout)
    listing = subprocess.run(["tar", "--numeric-owner", "--full-time", "-tvf", str(archive)], capture_output=True,
                             text=True, env={**os.environ, "TZ": "UTC"}, check=True).stdout.splitlines()
    assert listing
    assert all(" 0/0 " in line and "2025-01-01 00:00:00" in line for line in listing), listing


FILE = "one\n"
FIRST = """\
--- a/file.txt
+++ b/file.txt
@@ -1 +1,2 @@
 one
+two
"""
SECOND = """\
--- a/file.txt
+++ b/file.txt
@@ -1,2 +1,3 @@
 one
 two
+three
"""
STALE = """\
--- a/file.txt
+++ b/file.txt
@@ -1 +1 @@
-uno
+one
"""


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "file.txt").write_text(FILE)
    return folder


def test_patches_are_applied_in_sorted_name_order(source: Path, tmp_path: Path) -> None:
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "02-second.patch").write_text(SECOND)  # written first: the name decides, not the creation
    (patches / "01-first.patch").write_text(FIRST)
    (patches / "README").write_text("not a patch\n")
    result = sh('builder_apply_patches "$1"', str(patches), cwd=source)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (source / "file.txt").read_text() == "one\ntwo\nthree\n"
    assert result.stdout.decode().index("01-first.patch") < result.stdout.decode().index("02-second.patch")
    assert sorted(p.name for p in source.iterdir()) == ["file.txt"]  # no .orig or .rej left behind


def test_a_patch_that_does_not_apply_fails_the_step_naming_the_patch(source: Path, tmp_path: Path) -> None:
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "01-first.patch").write_text(FIRST)
    (patches / "02-stale.patch").write_text(STALE)
    result = sh('builder_apply_patches "$1"; echo still running', str(patches), cwd=source)
    assert result.returncode != 0
    assert "##builder-error## patch 02-stale.patch does not apply" in result.stderr.decode()
    assert b"still running" not in result.stdout


def test_no_patch_directory_means_nothing_to_apply(source: Path, tmp_path: Path) -> None:
    result = sh('builder_apply_patches "$1"', str(tmp_path / "absent"), cwd=source)
    assert result.returncode == 0
    assert (source / "file.txt").read_text() == FILE


def test_builder_error_prints_one_marked_line_and_fails() -> None:
    result = sh('builder_error "kernel config drifts"; echo unreachable')
    assert result.returncode == 1
    assert result.stderr == b"##builder-error## kernel config drifts\n"
    assert result.stdout == b""


def test_builder_xz_output_is_the_same_every_time() -> None:
    one, two = (sh("printf 'same input' | builder_xz") for _ in range(2))
    assert one.returncode == 0 and one.stdout == two.stdout
    assert subprocess.run(["xz", "-dc"], input=one.stdout, capture_output=True, check=True).stdout == b"same input"
