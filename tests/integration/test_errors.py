"""Bad input: one line naming the problem, a non-zero exit, no traceback, out/ left as it was."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
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


def edit(path: Path, change: Callable[[str], str]) -> None:
    path.write_text(change(path.read_text()))


def test_malformed_yaml_names_the_file_and_line(project: Path):
    edit(project / "recipes/initramfs/pkg.yaml", lambda t: t.replace("name: initramfs", "name: [initramfs"))
    fails_cleanly(project, expect=r"recipes/initramfs/pkg\.yaml:\d+: malformed YAML")


def test_an_unknown_recipe_key_is_named_with_its_line(project: Path):
    edit(project / "recipes/initramfs/pkg.yaml", lambda t: t + "colour: blue\n")
    lines = (project / "recipes/initramfs/pkg.yaml").read_text().count("\n")
    fails_cleanly(project, expect=rf"recipes/initramfs/pkg\.yaml:{lines}: unknown key 'colour'")


def test_a_dependency_cycle_is_named(project: Path):
    edit(project / "recipes/busybox/pkg.yaml",
         lambda t: t.replace("sources:\n", "dependencies:\n  - stage: initramfs\nsources:\n", 1))
    fails_cleanly(project, expect=r"dependency cycle: \w+ -> \w+ -> \w+")


def test_an_unknown_platform_is_named(project: Path):
    fails_cleanly(project, "PLATFORM=linux/riscv64", expect=r"unknown platform 'linux/riscv64'")


def test_a_wrong_sha256_is_caught_before_the_build(project: Path, tmp_path: Path):
    """A file whose bytes are not what the recipe's digests say is refused before any build, and the
    download cache (its own, here) keeps nothing of it."""
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    mirror.mkdir()
    (mirror / "busybox-static_1.35.0-4+deb12u1+b1_amd64.deb").write_bytes(b"not the busybox the recipe names")
    fails_cleanly(project, f"SOURCE_MIRROR={mirror}", targets=("-s", "initramfs:amd64"),
                  env={"BUILDER_CACHE": str(cache)},
                  expect=r"recipes/busybox/pkg\.yaml:\d+: sha256 mismatch for .*busybox-static")
    assert not any(p.is_file() for p in cache.rglob("*"))


def test_a_missing_source_is_named(project: Path):
    recipe = project / "recipes/busybox/pkg.yaml"
    edit(recipe, lambda t: re.sub(r'url: ".*"', 'url: "file:///nonexistent/busybox-static.deb"', t)
         .replace('"amd64": ["3', '"amd64": ["4'))
    fails_cleanly(project, targets=("-s", "initramfs:amd64"),
                  expect=r"source not found: file:///nonexistent/busybox-static\.deb")


def test_a_stopped_engine_is_reported(project: Path, tmp_path: Path):
    fails_cleanly(project, env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"},
                  expect=r"Docker engine is not reachable")


def test_a_patch_that_does_not_apply_is_named(project: Path):
    shutil.copy(DATA / "0002-does-not-apply.patch", project / "patches/kernel/")
    result = fails_cleanly(project, "PLATFORM=linux/amd64", targets=("kernel",),
                           expect=r"patch 0002-does-not-apply\.patch does not apply")
    assert ".builder/logs/kernel-amd64.log" in result.text
