"""QEMU command lines come from the platform's own names; a boot with a missing file says how to get it."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder import qemu
from builder.errors import BuildError
from builder.platforms import AMD64, ARM64


def test_amd64_boots_q35_under_tcg_with_the_serial_console() -> None:
    assert qemu.command(AMD64, Path("k"), Path("i")) == [
        "qemu-system-x86_64", "-M", "q35", "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot",
        "-kernel", "k", "-initrd", "i", "-append", "console=ttyS0 panic=-1"]


def test_arm64_boots_virt_with_a_cortex_a57_and_the_pl011_console() -> None:
    argv = qemu.command(ARM64, Path("k"), Path("i"), memory=256, append="quiet")
    assert argv[:5] == ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57"]
    assert argv[argv.index("-m") + 1] == "256"
    assert argv[-2:] == ["-append", "console=ttyAMA0 panic=-1 quiet"]
    assert "-enable-kvm" not in argv  # KVM hangs on these machines


def test_booting_without_a_kernel_names_it_and_the_build_command(tmp_path: Path) -> None:
    with pytest.raises(BuildError) as info:
        qemu.boot(ARM64, tmp_path / "vmlinuz-arm64", tmp_path / "initramfs-arm64.xz")
    assert str(info.value) == (f"{tmp_path}/vmlinuz-arm64 does not exist (build it first: doit kernel initramfs "
                               "PLATFORM=linux/arm64)")


def test_a_guest_that_never_prints_the_marker_is_an_error_with_its_last_lines(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("k", "i"):
        (tmp_path / name).write_bytes(b"x")
    script = tmp_path / "fake-qemu"
    script.write_text("#!/bin/sh\necho 'Booting Linux'\necho 'Kernel panic - not syncing: VFS'\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setattr(qemu, "command", lambda *args, **kwargs: [str(script)])
    with pytest.raises(BuildError, match=r"amd64 did not boot to the marker \(QEMU exited with 1\); last console "
                                         r"lines: Booting Linux \| Kernel panic - not syncing: VFS"):
        qemu.boot(AMD64, tmp_path / "k", tmp_path / "i", timeout=30)
