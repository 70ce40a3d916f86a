"""In another directory, through the other BuildKit path: a --no-cache rebuild of both arches is
bit-identical; a config line or a patch would rebuild the amd64 kernel and what takes its outputs, nothing
else; a flavor is another build beside the default one, and boots with its change in it."""

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
        assert f"modules:{arch}: would rebuild" in why.stdout, why.stdout  # it builds against the kernel's tree
        assert f"initramfs:{arch}: would rebuild\n    modules:{arch} would rebuild first" in why.stdout, why.stdout
    assert why.stdout.count("(patches/kernel/0001-boot-banner.patch)") == 4


def test_one_config_line_and_an_amd64_patch_would_rebuild_only_the_amd64_kernel_and_initramfs(elsewhere: Path):
    config = elsewhere / "kernel-configs" / "config-amd64"
    committed = config.read_text()
    text, count = re.subn(r'^CONFIG_LOCALVERSION=".*"$', 'CONFIG_LOCALVERSION="-incr"', committed, flags=re.M)
    assert count == 1
    config.write_text(text)
    patch = elsewhere / "patches" / "kernel" / "amd64" / "0001-boot-banner.patch"
    shutil.copy(DATA / "0001-boot-banner.patch", patch)
    try:
        why = builder(elsewhere, "why", "--platform", "linux/amd64,linux/arm64")
    finally:
        config.write_text(committed)
        patch.unlink()
    assert why.code == 0, why.text
    assert "kernel:amd64: would rebuild" in why.stdout
    assert "(kernel-configs/config-amd64)" in why.stdout
    assert "(patches/kernel/amd64/0001-boot-banner.patch)" in why.stdout
    for task in ("kernel:arm64", "modules:arm64", "initramfs:arm64"):
        assert f"{task}: up to date" in why.stdout, why.stdout


def test_a_flavor_is_another_build_and_leaves_the_default_one_up_to_date(elsewhere: Path):
    (elsewhere / "kernel-configs" / "flavors" / "incr.config").write_text('CONFIG_LOCALVERSION="-incr"\n')
    before = sums(elsewhere / "out")
    why = builder(elsewhere, "why", "--platform", "linux/amd64", "-v", "FLAVOR=incr")
    assert "kernel:amd64-incr: would rebuild" in why.stdout, why.text

    result = doit(elsewhere, "kernel", "initramfs", "PLATFORM=linux/amd64", "FLAVOR=incr")
    assert result.code == 0, result.text[-3000:]
    assert result.ran("kernel:amd64-incr") and result.ran("modules:amd64-incr") and result.ran("initramfs:amd64-incr")
    after = sums(elsewhere / "out")
    for name in ("vmlinuz-amd64-incr", "config-amd64-incr", "modules-amd64-incr.tar", "initramfs-amd64-incr.xz"):
        assert name in after, sorted(after)
    assert {name: after[name] for name in before} == before  # the default build's files are untouched
    assert 'CONFIG_LOCALVERSION="-incr"' in (elsewhere / "out" / "config-amd64-incr").read_text()

    flavor = elsewhere / "kernel-configs" / "flavors" / "incr.config"
    flavor.write_text(flavor.read_text() + "CONFIG_MAGIC_SYSRQ=y\n")
    try:  # the flavor's fragment is an input of the flavored kernel only, and why names it
        why = builder(elsewhere, "why", "--platform", "linux/amd64", "-v", "FLAVOR=incr")
        plain = builder(elsewhere, "why", "--platform", "linux/amd64")
    finally:
        flavor.write_text('CONFIG_LOCALVERSION="-incr"\n')
    named = "changed: kernel/files/flavor.config (kernel-configs/flavors/incr.config)"
    assert f"kernel:amd64-incr: would rebuild\n    {named}" in why.stdout, why.stdout
    assert "kernel:amd64: up to date" in plain.stdout, plain.stdout

    default = doit(elsewhere, "kernel", "initramfs", BOTH)
    assert default.code == 0, default.text[-3000:]
    for task in ("kernel:amd64", "modules:amd64", "initramfs:amd64", "kernel:arm64", "modules:arm64",
                 "initramfs:arm64"):
        assert default.skipped(task), default.stdout


@pytest.mark.boot
def test_the_flavored_kernel_boots_with_its_release_and_the_patched_in_driver(elsewhere: Path):
    result = boot_to_marker(elsewhere, AMD64, flavor="incr")
    assert result.release.endswith("-incr")
    assert "BUILDER-EXAMPLE hello" in result.console  # patches/kernel/0001-misc-add-builder_example-driver.patch
    assert "BUILDER-VPOLL " in result.console  # the out-of-tree module, built against the flavored kernel
    assert f"BUILDER-MODULES release={result.release} count=" in result.console
