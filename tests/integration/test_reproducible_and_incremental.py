"""In another directory, through the other BuildKit path: a --no-cache rebuild of both arches is
bit-identical; a config line or a patch rebuilds the amd64 kernel and what takes its outputs, nothing else;
the result boots with the change in it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from builder.platforms import AMD64

from .conftest import BOTH, DATA, SHIPPED_OUTPUTS, Built, backends, boot_to_marker, builder, copy_project, doit, sums

pytestmark = [pytest.mark.build]


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second copy at a different, longer path (Yocto's build-path variation)."""
    return copy_project(tmp_path_factory.mktemp("another-build-directory") / "with-a-longer-path" / "project")


def test_a_no_cache_build_elsewhere_through_the_other_backend_is_bit_identical(shipped: Built, elsewhere: Path):
    other = backends()[-1]  # engine on Debian 12 (shipped used buildx); buildx again where it is the only path
    result = doit(elsewhere, "kernel", "initramfs", BOTH, "NO_CACHE=1", f"BACKEND={other}")
    assert result.code == 0, result.text[-3000:]
    assert f"building with {other}" in result.text
    rebuilt, reference = sums(elsewhere / "out"), sums(shipped.out)
    for name in SHIPPED_OUTPUTS:
        assert rebuilt[name] == reference[name], f"{name} differs between the two builds"
    assert (elsewhere / "out" / "SHA256SUMS").read_text() == (shipped.out / "SHA256SUMS").read_text()


def test_a_shared_patch_would_rebuild_both_kernels_and_what_takes_their_modules(elsewhere: Path):
    shared = elsewhere / "patches" / "kernel" / "0001-boot-banner.patch"
    shutil.copy(DATA / "0001-boot-banner.patch", shared)
    try:
        why = builder(elsewhere, "why", "--platform", "linux/amd64,linux/arm64")
    finally:
        shared.unlink()
    assert why.code == 0, why.text
    for arch in ("amd64", "arm64"):
        assert f"kernel:{arch}: would rebuild" in why.stdout, why.stdout
        assert f"initramfs:{arch}: would rebuild\n    kernel:{arch} would rebuild first" in why.stdout, why.stdout
    assert why.stdout.count("(patches/kernel/0001-boot-banner.patch)") == 2


def test_one_config_line_and_an_amd64_patch_rebuild_only_the_amd64_kernel_and_initramfs(elsewhere: Path):
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
    for task in ("kernel:arm64", "initramfs:arm64"):
        assert f"{task}: up to date" in why.stdout, why.stdout

    result = doit(elsewhere, "kernel", "initramfs", BOTH)
    assert result.code == 0, result.text[-3000:]
    assert result.ran("kernel:amd64") and result.ran("initramfs:amd64")  # new modules: -incr
    for task in ("kernel:arm64", "initramfs:arm64"):
        assert result.skipped(task), result.stdout


@pytest.mark.boot
def test_the_rebuilt_kernel_boots_with_the_config_change_and_the_patch(elsewhere: Path):
    result = boot_to_marker(elsewhere, AMD64)
    assert result.release.endswith("-incr")
    assert "BUILDER-PATCHED: patches/kernel was applied" in result.console
    assert f"BUILDER-MODULES release={result.release} count=" in result.console
