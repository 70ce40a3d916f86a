"""In another directory: a --no-cache rebuild of both arches is bit-identical; a config line or a patch rebuilds the
amd64 kernel and nothing else; the result boots with the change in it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from builder.platforms import AMD64

from .conftest import DATA, ROOT, boot_to_marker, builder, copy_project, doit, sums

pytestmark = [pytest.mark.build]
OUTPUTS = tuple(name for arch in ("amd64", "arm64")
                for name in (f"vmlinuz-{arch}", f"config-{arch}", f"modules-{arch}.tar", f"initramfs-{arch}.xz"))


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second checkout at a different, longer path (Yocto's build-path variation)."""
    return copy_project(tmp_path_factory.mktemp("another-build-directory") / "with-a-longer-path" / "project")


def test_a_no_cache_build_elsewhere_is_bit_identical_for_both_arches(elsewhere: Path):
    reference = sums(ROOT / "out")
    result = doit(elsewhere, "kernel", "initramfs", "PLATFORM=linux/amd64,linux/arm64", "NO_CACHE=1")
    assert result.code == 0, result.text[-3000:]
    rebuilt = sums(elsewhere / "out")
    for name in OUTPUTS:
        assert rebuilt[name] == reference[name], f"{name} differs between the two builds"


def test_a_shared_patch_would_rebuild_both_kernels_and_nothing_else(elsewhere: Path):
    shared = elsewhere / "patches" / "kernel" / "0001-boot-banner.patch"
    shutil.copy(DATA / "0001-boot-banner.patch", shared)
    try:
        why = builder(elsewhere, "why", "--platform", "linux/amd64,linux/arm64")
    finally:
        shared.unlink()
    assert why.code == 0, why.text
    for task in ("kernel:amd64", "kernel:arm64"):
        assert f"{task}: would rebuild" in why.stdout, why.stdout
    assert why.stdout.count("(patches/kernel/0001-boot-banner.patch)") == 2
    for task in ("initramfs:amd64", "initramfs:arm64"):
        assert f"{task}: up to date" in why.stdout, why.stdout


def test_one_config_line_and_an_amd64_patch_rebuild_only_the_amd64_kernel(elsewhere: Path):
    config = elsewhere / "kernel-configs" / "config-amd64"
    text, count = re.subn(r'^CONFIG_LOCALVERSION=".*"$', 'CONFIG_LOCALVERSION="-incr"', config.read_text(),
                          flags=re.M)
    assert count == 1
    config.write_text(text)
    shutil.copy(DATA / "0001-boot-banner.patch", elsewhere / "patches" / "kernel" / "amd64")

    why = builder(elsewhere, "why", "--platform", "linux/amd64,linux/arm64")
    assert why.code == 0, why.text
    assert "kernel:amd64: would rebuild" in why.stdout
    assert "(kernel-configs/config-amd64)" in why.stdout
    assert "(patches/kernel/amd64/0001-boot-banner.patch)" in why.stdout
    for task in ("kernel:arm64", "initramfs:amd64", "initramfs:arm64"):
        assert f"{task}: up to date" in why.stdout, why.stdout

    result = doit(elsewhere, "kernel", "initramfs", "PLATFORM=linux/amd64,linux/arm64")
    assert result.code == 0, result.text[-3000:]
    assert result.ran("kernel:amd64")
    for task in ("kernel:arm64", "initramfs:amd64", "initramfs:arm64"):
        assert result.skipped(task), result.stdout


@pytest.mark.boot
def test_the_rebuilt_kernel_boots_with_the_config_change_and_the_patch(elsewhere: Path):
    result = boot_to_marker(elsewhere, AMD64)
    assert result.release.endswith("-incr")
    assert "BUILDER-PATCHED: patches/kernel was applied" in result.console
