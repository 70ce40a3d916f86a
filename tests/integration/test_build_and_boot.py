"""The main job, as the README gives it: `doit kernel initramfs`, then both arches boot in QEMU."""

from __future__ import annotations

import subprocess

import pytest

from builder.platforms import AMD64, ARM64, host_platform

from .conftest import ROOT, boot_to_marker, doit, sums

pytestmark = [pytest.mark.build]
OUT = ROOT / "out"
HOST = host_platform().arch


def test_main_job_builds_the_shipped_default_kernel_and_initramfs():
    result = doit(ROOT, "kernel", "initramfs")
    assert result.code == 0, result.text[-3000:]
    for name in (f"vmlinuz-{HOST}", f"config-{HOST}", f"modules-{HOST}.tar", f"initramfs-{HOST}.xz"):
        assert (OUT / name).is_file(), name
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=OUT, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_effective_config_is_the_shipped_one():
    def options(text: str) -> set[str]:
        return {line for line in text.splitlines() if line.startswith("CONFIG_")}

    shipped = (ROOT / "kernel-configs" / f"config-{HOST}").read_text()
    assert options((OUT / f"config-{HOST}").read_text()) == options(shipped)


def test_a_second_run_with_nothing_changed_builds_nothing():
    result = doit(ROOT, "kernel", "initramfs")
    assert result.code == 0, result.text[-3000:]
    assert result.skipped(f"kernel:{HOST}") and result.skipped(f"initramfs:{HOST}"), result.stdout
    assert ".  " not in result.stdout


@pytest.mark.boot
def test_amd64_kernel_boots_to_the_marker():
    assert boot_to_marker(ROOT, AMD64).machine == "x86_64"


def test_arm64_is_cross_compiled_on_request():
    result = doit(ROOT, "kernel", "initramfs", "PLATFORM=linux/arm64")
    assert result.code == 0, result.text[-3000:]
    assert not result.ran("kernel:amd64") and not result.ran("initramfs:amd64")
    names = sums(OUT)
    assert {"vmlinuz-arm64", "config-arm64", "modules-arm64.tar", "initramfs-arm64.xz"} <= set(names)
    header = (OUT / "vmlinuz-arm64").read_bytes()[:64]
    assert header[0x38:0x3C] == b"ARM\x64", "not an arm64 Image"


@pytest.mark.boot
def test_arm64_kernel_boots_to_the_marker():
    assert boot_to_marker(ROOT, ARM64).machine == "aarch64"


def test_both_platforms_at_once_are_up_to_date_now():
    result = doit(ROOT, "kernel", "initramfs", "PLATFORM=linux/amd64,linux/arm64")
    assert result.code == 0, result.text[-3000:]
    for task in ("kernel:amd64", "kernel:arm64", "initramfs:amd64", "initramfs:arm64"):
        assert result.skipped(task), result.stdout
