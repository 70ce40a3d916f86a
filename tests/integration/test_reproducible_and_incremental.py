"""In another directory, through the other BuildKit path: a --no-cache rebuild of amd64 (arm64 from the
cache), signed as a release, is bit-identical, and an auditor's rebuild without the private key differs
only by valid module signatures; a config line or a patch would rebuild the amd64 kernel and what takes
its outputs, nothing else; a flavor is another build beside the default one, and boots with its change in
it; an ephemeral kernel built without the cache signs its out-of-tree module, rebuilt in the same build,
with its new key, which that kernel then loads."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from builder.core.platforms import AMD64

from ..signing import RELEASE_KEYID
from .conftest import (
    BOTH,
    DATA,
    MEDIA_OUTPUTS,
    MEDIA_WORDS,
    RELEASE_CERT,
    SHIPPED_OUTPUTS,
    Built,
    backends,
    boot_to_marker,
    builder,
    copy_project,
    doit,
    sign_releases,
    sums,
)

pytestmark = [pytest.mark.build]


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second copy at a different, longer path (Yocto's build-path variation), signing releases with the
    same key as the shipped build."""
    root = copy_project(tmp_path_factory.mktemp("another-build-directory") / "with-a-longer-path" / "project")
    sign_releases(root)
    return root


def test_a_no_cache_build_elsewhere_through_the_other_backend_is_bit_identical(media: Built, elsewhere: Path):
    other = backends()[-1]  # engine on Debian 12 (shipped used buildx); buildx again where it is the only path
    # amd64 from scratch; arm64 through BuildKit's cache (CI's time: a cross-compiled arm64 kernel rebuilt
    # with NO_CACHE=1 was bit-identical too when measured, 2026-11-27, and takes another 10 minutes)
    result = doit(elsewhere, "kernel", "initramfs", "PLATFORM=linux/amd64", "NO_CACHE=1", f"BACKEND={other}")
    assert result.code == 0, result.text[-3000:]
    assert f"building with {other}" in result.text
    cached = doit(elsewhere, "kernel", "initramfs", "PLATFORM=linux/arm64", f"BACKEND={other}")
    assert cached.code == 0, cached.text[-3000:]
    # every boot medium too, VHD included, without the cache for both arches
    images = doit(elsewhere, "images", BOTH, *MEDIA_WORDS, "NO_CACHE=1", f"BACKEND={other}")
    assert images.code == 0, images.text[-3000:]
    rebuilt, reference = sums(elsewhere / "out"), sums(media.out)
    for name in (*SHIPPED_OUTPUTS, *MEDIA_OUTPUTS):
        assert rebuilt[name] == reference[name], f"{name} differs between the two builds"
    assert (elsewhere / "out" / "SHA256SUMS").read_text() == (media.out / "SHA256SUMS").read_text()


def test_an_auditors_rebuild_without_the_key_matches_the_release_but_for_valid_signatures(
        shipped: Built, tmp_path_factory: pytest.TempPathFactory) -> None:
    auditor = copy_project(tmp_path_factory.mktemp("auditor") / "project")
    sign_releases(auditor, key=False)  # the certificate, committed; no private key anywhere
    result = doit(auditor, "kernel", "initramfs", BOTH)
    assert result.code == 0, result.text[-3000:]
    manifest = json.loads((auditor / "out" / "manifest.json").read_text())["artifacts"]
    for arch in ("amd64", "arm64"):  # no key: every module is left unsigned
        modules = manifest[f"modules-{arch}.tar"]["modules"]
        assert modules and not any(m["signed"] for m in modules), modules
    rebuilt, reference = sums(auditor / "out"), sums(shipped.out)
    for arch in ("amd64", "arm64"):  # the kernel embeds the certificate only: the very same bytes
        assert rebuilt[f"vmlinuz-{arch}"] == reference[f"vmlinuz-{arch}"]
        assert rebuilt[f"config-{arch}"] == reference[f"config-{arch}"]
        assert rebuilt[f"modules-{arch}.tar"] != reference[f"modules-{arch}.tar"]  # unsigned
    check = builder(auditor, "check-signatures", str(shipped.out), str(auditor / "out"), "--cert", RELEASE_CERT)
    assert check.code == 0, check.text
    for arch in ("amd64", "arm64"):
        assert f"vmlinuz-{arch}: identical" in check.stdout
        for name in (f"modules-{arch}.tar", f"initramfs-{arch}.xz"):
            assert re.search(rf"^{re.escape(name)}: identical but for the signatures of \d+ module\(s\), each valid",
                             check.stdout, re.M), check.stdout
    other = builder(auditor, "check-signatures", str(shipped.out), str(auditor / "out"), "--cert",
                    "tests/integration/data/signing/other.crt")
    assert other.code == 1 and "its signature is not valid for" in other.last_line(), other.text


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


def test_one_config_line_and_an_amd64_patch_would_rebuild_only_the_amd64_kernel_initramfs_and_media(elsewhere: Path):
    config = elsewhere / "kernel-configs" / "config-amd64"
    committed = config.read_text()
    text, count = re.subn(r'^CONFIG_LOCALVERSION=".*"$', 'CONFIG_LOCALVERSION="-incr"', committed, flags=re.M)
    assert count == 1
    config.write_text(text)
    patch = elsewhere / "patches" / "kernel" / "amd64" / "0001-boot-banner.patch"
    shutil.copy(DATA / "0001-boot-banner.patch", patch)
    media = [arg for word in MEDIA_WORDS for arg in ("-v", word)]  # the words the images were built with
    try:
        why = builder(elsewhere, "why", "--platform", "linux/amd64,linux/arm64", *media)
    finally:
        config.write_text(committed)
        patch.unlink()
    assert why.code == 0, why.text
    assert "kernel:amd64: would rebuild" in why.stdout
    assert "(kernel-configs/config-amd64)" in why.stdout
    assert "(patches/kernel/amd64/0001-boot-banner.patch)" in why.stdout
    for task in ("kernel:arm64", "initramfs:arm64", "image-iso:arm64", "image-metal:arm64", "image-uboot:arm64"):
        assert f"{task}: up to date" in why.stdout, why.stdout
    for task in ("image-iso:amd64", "image-metal:amd64", "image-azure:amd64"):  # the kernel, then its media
        assert re.search(rf"^{task}: would rebuild\n(    .*\n)*    kernel:amd64 would rebuild first", why.stdout,
                         re.M), why.stdout
    assert "image-cmdline:amd64: up to date" in why.stdout  # the command line takes no kernel


def test_a_flavor_is_another_build_and_leaves_the_default_one_up_to_date(elsewhere: Path):
    (elsewhere / "kernel-configs" / "flavors" / "incr.config").write_text('CONFIG_LOCALVERSION="-incr"\n')
    before = sums(elsewhere / "out")
    why = builder(elsewhere, "why", "--platform", "linux/amd64", "-v", "FLAVOR=incr", "-v", "MODULE_SIGNING=ephemeral")
    assert "kernel:amd64-incr: would rebuild" in why.stdout, why.text

    # a developer's build on a release checkout: the command line's policy wins over recipes/vars.yaml. The
    # cache is disabled: this also rebuilds the ephemeral kernel alone from scratch (see the last tests)
    result = doit(elsewhere, "kernel", "initramfs", *EPHEMERAL_INCR, "NO_CACHE=1")
    assert result.code == 0, result.text[-3000:]
    assert result.ran("kernel:amd64-incr") and result.ran("initramfs:amd64-incr")
    after = sums(elsewhere / "out")
    for name in ("vmlinuz-amd64-incr", "config-amd64-incr", "modules-amd64-incr.tar", "initramfs-amd64-incr.xz"):
        assert name in after, sorted(after)
    assert {name: after[name] for name in before} == before  # the default build's files are untouched
    assert 'CONFIG_LOCALVERSION="-incr"' in (elsewhere / "out" / "config-amd64-incr").read_text()

    flavor = elsewhere / "kernel-configs" / "flavors" / "incr.config"
    flavor.write_text(flavor.read_text() + "CONFIG_MAGIC_SYSRQ=y\n")
    try:  # the flavor's fragment is an input of the flavored kernel only, and why names it
        why = builder(elsewhere, "why", "--platform", "linux/amd64", "-v", "FLAVOR=incr", "-v",
                      "MODULE_SIGNING=ephemeral")
        plain = builder(elsewhere, "why", "--platform", "linux/amd64")
    finally:
        flavor.write_text('CONFIG_LOCALVERSION="-incr"\n')
    named = "changed: kernel-build/files/flavor.config (kernel-configs/flavors/incr.config)"
    assert f"kernel:amd64-incr: would rebuild\n    {named}" in why.stdout, why.stdout
    assert "kernel:amd64: up to date" in plain.stdout, plain.stdout

    default = doit(elsewhere, "kernel", "initramfs", BOTH)
    assert default.code == 0, default.text[-3000:]
    for task in ("kernel:amd64", "initramfs:amd64", "kernel:arm64", "initramfs:arm64"):
        assert default.skipped(task), default.stdout


EPHEMERAL_INCR = ("PLATFORM=linux/amd64", "FLAVOR=incr", "MODULE_SIGNING=ephemeral")


@pytest.mark.boot
def test_the_flavored_kernel_boots_with_its_release_and_the_patched_in_driver(elsewhere: Path):
    result = boot_to_marker(elsewhere, AMD64, flavor="incr")
    assert result.release.endswith("-incr")
    assert "BUILDER-EXAMPLE hello" in result.console  # patches/kernel/0001-misc-add-builder_example-driver.patch
    assert "BUILDER-VPOLL " in result.console  # the out-of-tree module, built against the flavored kernel
    assert f"BUILDER-MODULES release={result.release} count=" in result.console
    assert "BUILDER-MODULE-FAILED" not in result.console  # signed by its ephemeral key, checked at load


def test_an_ephemeral_kernel_built_without_its_cache_signs_its_external_module_with_its_new_key(elsewhere: Path):
    out = elsewhere / "out"
    manifest = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert manifest["vmlinuz-amd64-incr"]["reproducible"] is False  # said, not hidden
    assert "MODULE_SIGNING=ephemeral" in manifest["vmlinuz-amd64-incr"]["unreproducible"][0]
    signers = {module["signed_by"] for module in manifest["modules-amd64-incr.tar"]["modules"]}
    assert len(signers) == 1 and signers != {f"keyid:{RELEASE_KEYID}"}, signers  # one new key signed them all
    log = (elsewhere / ".builder" / "logs" / "kernel-amd64-incr.log").read_text()
    assert "--no-cache" in log.splitlines()[0]
    assert "==> kernel-build: build" in log and "==> vpoll: build" in log  # both compiled in the kernel's build


@pytest.mark.boot
def test_the_external_module_loads_in_the_kernel_whose_key_signed_it(elsewhere: Path):
    result = boot_to_marker(elsewhere, AMD64, flavor="incr")
    console = result.console.replace("\r", "")
    trusted = re.search(r"Loaded X\.509 cert '[^']*: ([0-9a-f]+)'", console)
    assert trusted, console[-3000:]
    manifest = json.loads((elsewhere / "out" / "manifest.json").read_text())["artifacts"]
    vpoll = next(m for m in manifest["modules-amd64-incr.tar"]["modules"] if m["name"] == "vpoll")
    assert vpoll["signed_by"] == f"keyid:{trusted.group(1)}"  # the key this kernel trusts signed it
    assert "module.sig_enforce=1" in console
    assert "BUILDER-VPOLL " in console and "BUILDER-MODULE-FAILED" not in console
