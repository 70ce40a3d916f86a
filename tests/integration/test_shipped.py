"""The main job, as the README gives it, on the shipped default configs: both arches build, boot in QEMU with
the kernel's modules in the initramfs, and a second run builds nothing. In a scratch copy of the project."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from builder.core.platforms import AMD64, ARM64, Platform

from ..signing import RELEASE_KEYID
from .conftest import BOTH, SHIPPED_OUTPUTS, Built, boot_to_marker, doit, kernel_release, snapshot, sums

pytestmark = [pytest.mark.build]


def test_the_main_job_builds_both_arches_and_out_verifies_with_sha256sum(shipped: Built) -> None:
    assert set(SHIPPED_OUTPUTS) <= set(sums(shipped.out))
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=shipped.out, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_the_effective_config_is_the_shipped_one(shipped: Built, arch: str) -> None:
    def options(text: str) -> set[str]:
        return {line for line in text.splitlines() if line.startswith("CONFIG_")}

    shipped_config = (shipped.root / "kernel-configs" / f"config-{arch}").read_text()
    assert options((shipped.out / f"config-{arch}").read_text()) == options(shipped_config)


def test_the_arm64_kernel_is_an_arm64_image(shipped: Built) -> None:
    header = (shipped.out / "vmlinuz-arm64").read_bytes()[:64]
    assert header[0x38:0x3C] == b"ARM\x64", "not an arm64 Image"


def test_exporting_a_kernel_copies_only_its_outputs_not_its_build_tree(shipped: Built) -> None:
    for arch in ("amd64", "arm64"):
        names = (f"vmlinuz-{arch}", f"config-{arch}", f"modules-{arch}.tar")
        exported = f"kernel:{arch}: exported {len(names)} file(s), "
        assert exported in shipped.result.text, shipped.result.text[-3000:]
        size = int(shipped.result.text.split(exported, 1)[1].split(" ", 1)[0])
        assert size == sum((shipped.out / name).stat().st_size for name in names)


def test_the_manifest_and_input_signatures_name_the_toolchain_portably(shipped: Built) -> None:
    manifest = json.loads((shipped.out / "manifest.json").read_text())
    for name in SHIPPED_OUTPUTS:
        (identity,) = manifest["artifacts"][name]["toolchain"].values()
        assert identity.startswith("rootfs:sha256:"), identity
    for task in ("kernel-amd64", "kernel-arm64", "initramfs-amd64", "initramfs-arm64"):
        signature = json.loads((shipped.out / ".inputs" / f"{task}.json").read_text())
        assert signature["inputs"]["toolchain builder-toolchain:bookworm"].startswith("rootfs:sha256:")
        assert "local-id:" not in json.dumps(signature)
    initramfs = json.loads((shipped.out / ".inputs" / "initramfs-amd64.json").read_text())
    assert initramfs["inputs"]["initramfs/artifacts/1/modules-amd64.tar"] == sums(shipped.out)["modules-amd64.tar"]


def test_a_second_run_with_nothing_changed_builds_nothing(shipped: Built) -> None:
    result = doit(shipped.root, "kernel", "initramfs", BOTH)
    assert result.code == 0, result.text[-3000:]
    for task in ("kernel:amd64", "kernel:arm64", "initramfs:amd64", "initramfs:arm64"):
        assert result.skipped(task), result.stdout
    assert ".  " not in result.stdout


def test_a_no_cache_initramfs_after_a_kernel_build_takes_its_modules_without_recompiling_it(shipped: Built) -> None:
    before = sums(shipped.out)
    (shipped.out / "initramfs-amd64.xz").unlink()
    result = doit(shipped.root, "initramfs", "NO_CACHE=1")
    assert result.code == 0, result.text[-3000:]
    assert result.skipped("kernel:amd64"), result.stdout
    assert result.ran("initramfs:amd64"), result.stdout
    log = (shipped.root / ".builder" / "logs" / "initramfs-amd64.log").read_text()
    assert "--no-cache" in log.splitlines()[0]
    # no kernel step ran: the kernel is not part of the initramfs build at all (stage names in BuildKit's
    # progress are no proof: a vertex shared with a concurrent build keeps the name that build gave it)
    assert "==> kernel:" not in log
    assert sums(shipped.out) == before  # and the rebuilt initramfs is bit-identical


@pytest.mark.boot
@pytest.mark.parametrize("platform", [AMD64, ARM64], ids=["amd64", "arm64"])
def test_the_kernel_boots_to_the_marker_with_its_modules_in_the_initramfs(shipped: Built, platform: Platform) -> None:
    result = boot_to_marker(shipped.root, platform)
    assert result.machine == platform.carch
    release = kernel_release(shipped.out / f"modules-{platform.arch}.tar")
    marker = re.search(rf"BUILDER-MODULES release={re.escape(release)} count=(\d+) loaded=(\S*)", result.console)
    assert marker, result.console[-3000:]
    # kernel-configs/modules-ARCH.txt lists vfat, squashfs, overlay, loop and the patched-in example driver;
    # modules.dep brings fat for vfat
    assert sorted(marker.group(2).split(",")) == ["builder_example", "fat", "loop", "overlay", "squashfs", "vfat",
                                                  "vpoll"], marker.group(0)
    assert int(marker.group(1)) == 7  # only what is listed (and needed) is carried
    assert "BUILDER-MODULE-FAILED" not in result.console
    # every one was checked: signed by the release key, which the kernel trusts, and only signed ones load
    assert "module.sig_enforce=1" in result.console
    # patches/kernel/0001-misc-add-builder_example-driver.patch, enabled by fragments/builder-example.config
    assert "builder_example: loaded: greeting=hello repeat=1" in result.console
    assert "BUILDER-EXAMPLE hello\n" in result.console.replace("\r", "")
    # recipes/vpoll: Debian's vpoll-dkms, built against this kernel's build tree, makes /dev/vpoll
    assert re.search(r"BUILDER-VPOLL \d+:0", result.console), result.console[-3000:]


def test_the_manifest_names_each_module_with_its_recipe_version_and_source(shipped: Built) -> None:
    manifest = json.loads((shipped.out / "manifest.json").read_text())["artifacts"]
    for arch in ("amd64", "arm64"):
        modules = {m["path"]: m for m in manifest[f"modules-{arch}.tar"]["modules"]}
        vpoll = modules["extra/vpoll/vpoll.ko"]
        assert (vpoll["recipe"], vpoll["version"], vpoll["signed"]) == ("vpoll", "0.1-3", True)
        assert vpoll["signed_by"] == f"keyid:{RELEASE_KEYID}"  # tests/integration/data/signing/release.crt
        assert all(m["signed_by"] == f"keyid:{RELEASE_KEYID}" for m in modules.values())
        assert vpoll["source"] == ["sha256:8d76f1411fbe8a2f539ee1539774c6668f58e7d0026ee295fbb278d9f5312fdb"]
        example = modules["kernel/drivers/misc/builder_example.ko"]
        release = kernel_release(shipped.out / f"modules-{arch}.tar")
        assert (example["recipe"], example["version"]) == ("kernel-build", release)
    for name in SHIPPED_OUTPUTS:  # MODULE_SIGNING=release: nothing in them changes from build to build
        assert manifest[name]["reproducible"] is True, manifest[name]


def test_a_listed_module_the_kernel_did_not_build_is_named_with_its_line(shipped: Built) -> None:
    modules = shipped.root / "kernel-configs" / "modules-amd64.txt"
    listed = modules.read_text()
    before = snapshot(shipped.out)
    try:
        modules.write_text(listed + "nosuchmod\n")
        result = doit(shipped.root, "initramfs")
    finally:
        modules.write_text(listed)
    assert result.code == 1, result.text[-3000:]
    line = len(listed.splitlines()) + 1
    assert result.last_line() == (f"error: initramfs:amd64: kernel-configs/modules-amd64.txt:{line}: module nosuchmod "
                                  f"was not built by kernel 6.1.176 (amd64); enable it (=m) in "
                                  f"kernel-configs/config-amd64 or drop the line"), result.last_line()
    assert snapshot(shipped.out) == before


def test_an_out_of_tree_module_that_does_not_compile_names_itself_and_the_kernel(shipped: Built) -> None:
    recipe = shipped.root / "recipes" / "vpoll" / "pkg.yaml"
    text = recipe.read_text()
    before = snapshot(shipped.out)
    try:
        broken = "rm vpoll-dkms.deb\n      echo 'not C;' >>usr/src/vpoll-0.1/vpoll.c"
        recipe.write_text(text.replace("rm vpoll-dkms.deb", broken))
        result = doit(shipped.root, "kernel", "PLATFORM=linux/amd64")
    finally:
        recipe.write_text(text)
    assert result.code != 0
    release = kernel_release(shipped.out / "modules-amd64.tar")
    assert result.last_line() == (f"error: kernel:amd64: module vpoll does not build against kernel {release} "
                                  "(amd64); its compiler output is above"), result.text[-3000:]
    assert "vpoll.c" in result.text  # the compiler's own words are shown
    assert snapshot(shipped.out) == before
