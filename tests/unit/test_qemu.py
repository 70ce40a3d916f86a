"""QEMU command lines come from the platform's own names; a boot with a missing file says how to get it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.core.errors import BuildError
from builder.core.platforms import AMD64, ARM64
from builder.host import qemu


def test_amd64_boots_q35_under_tcg_with_the_serial_console() -> None:
    assert qemu.command(AMD64, Path("k"), Path("i")) == [
        "qemu-system-x86_64", "-M", "q35", "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot",
        "-kernel", "k", "-initrd", "i", "-append", "console=ttyS0 panic=-1 module.sig_enforce=1"]


def test_arm64_boots_virt_with_a_cortex_a57_and_the_pl011_console() -> None:
    argv = qemu.command(ARM64, Path("k"), Path("i"), memory=256, append="quiet")
    assert argv[:5] == ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57"]
    assert argv[argv.index("-m") + 1] == "256"
    assert argv[-2:] == ["-append", "console=ttyAMA0 panic=-1 module.sig_enforce=1 quiet"]
    assert "-enable-kvm" not in argv  # KVM hangs on these machines


def test_booting_without_a_kernel_names_it_and_the_build_command(tmp_path: Path) -> None:
    with pytest.raises(BuildError) as info:
        qemu.boot(ARM64, tmp_path / "vmlinuz-arm64", tmp_path / "initramfs-arm64.xz")
    assert str(info.value) == (f"{tmp_path}/vmlinuz-arm64 does not exist (build it first: doit kernel initramfs "
                               "PLATFORM=linux/arm64)")


@pytest.fixture
def fake_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """fake_qemu(script body): QEMU replaced by a shell script; kernel and initrd exist."""
    for name in ("k", "i"):
        (tmp_path / name).write_bytes(b"x")

    def make(body: str) -> None:
        script = tmp_path / "fake-qemu"
        script.write_text("#!/bin/sh\n" + body)
        script.chmod(0o755)
        monkeypatch.setattr(qemu, "command", lambda *args, **kwargs: [str(script)])

    return make


def test_a_guest_that_never_prints_the_marker_is_an_error_with_its_last_lines(
        tmp_path: Path, fake_qemu: Callable[[str], None]) -> None:
    fake_qemu("echo 'Booting Linux'\necho 'Run /init as init process'\nexit 1\n")
    with pytest.raises(BuildError, match=r"amd64 did not boot to the marker \(QEMU exited with 1\); last console "
                                         r"lines: Booting Linux \| Run /init as init process"):
        qemu.boot(AMD64, tmp_path / "k", tmp_path / "i", timeout=30)


def test_a_kernel_panic_stops_the_boot_early_and_is_the_error(tmp_path: Path, fake_qemu: Callable[[str], None]) -> None:
    # a guest that panics and then hangs (no panic=-1 reboot): QEMU is stopped within the grace, not the timeout
    fake_qemu("echo 'Booting Linux'\n"
              "printf 'Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\\r\\n'\n"
              "echo 'CPU: 0 PID: 1 Comm: swapper'\nexec sleep 60\n")
    console = tmp_path / "boot.log"
    started = time.monotonic()
    with pytest.raises(BuildError) as info:
        qemu.boot(AMD64, tmp_path / "k", tmp_path / "i", timeout=60, console=console)
    assert str(info.value) == (f"{console}: amd64 kernel panicked: Kernel panic - not syncing: VFS: Unable to "
                               "mount root fs on unknown-block(0,0)")
    assert time.monotonic() - started < 10
    assert "CPU: 0 PID: 1 Comm: swapper" in console.read_text()  # the trace after the panic line is kept


def test_the_marker_s_fields_are_read_with_the_command_line_last() -> None:
    fields = qemu.marker_fields(" platform=metal meta.0xa=network%3A%20a/b cmdline=console=ttyS0 a=b c")
    assert fields == {"platform": "metal", "meta.0xa": "network: a/b", "cmdline": "console=ttyS0 a=b c"}
    assert qemu.marker_fields("") == {}


def test_a_medium_boots_from_its_firmware_with_a_fresh_variable_store_and_is_never_written(tmp_path: Path) -> None:
    if not Path(AMD64.uefi_vars).is_file():
        pytest.skip("no OVMF here (./setup.sh installs ovmf)")
    argv = qemu.media_command(AMD64, Path("d.raw"), "raw", "uefi", cdrom=False, scratch=tmp_path)
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={AMD64.uefi_code}" in argv
    assert f"if=pflash,format=raw,unit=1,file={tmp_path / 'uefi-vars.fd'}" in argv  # a copy, per boot
    assert (tmp_path / "uefi-vars.fd").read_bytes() == Path(AMD64.uefi_vars).read_bytes()
    assert "file=d.raw,format=raw,if=virtio,snapshot=on" in argv
    bios = qemu.media_command(AMD64, Path("m.iso"), "raw", "bios", cdrom=True, scratch=tmp_path)
    assert "pflash" not in " ".join(bios) and "file=m.iso,format=raw,media=cdrom,readonly=on" in bios


def test_arm64_has_no_bios_and_u_boot_must_be_beside_the_image(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="arm64 has no BIOS; boot it with --firmware uefi"):
        qemu.media_command(ARM64, Path("d.raw"), "raw", "bios", cdrom=False, scratch=tmp_path)
    image = tmp_path / "metal-arm64-board.raw.zst"
    assert qemu.uboot_beside(image) == tmp_path / "metal-arm64-board-u-boot.bin"
    with pytest.raises(BuildError, match="no U-Boot for metal-arm64-board.raw.zst"):
        qemu.media_command(ARM64, image, "raw", "u-boot", cdrom=False, scratch=tmp_path,
                           uboot=qemu.uboot_beside(image))
    qemu.uboot_beside(image).write_bytes(b"u-boot")
    argv = qemu.media_command(ARM64, image, "raw", "u-boot", cdrom=False, scratch=tmp_path,
                              uboot=qemu.uboot_beside(image))
    assert argv[argv.index("-bios") + 1] == str(qemu.uboot_beside(image))


def test_an_unknown_medium_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "x.vmdk").write_bytes(b"")
    with pytest.raises(BuildError, match=r"not a boot medium this can boot \(expected \.iso, \.raw, \.qcow2 or \.vhd"):
        qemu.boot_media(AMD64, tmp_path / "x.vmdk", firmware="bios")
    with pytest.raises(BuildError, match="does not exist"):
        qemu.boot_media(AMD64, tmp_path / "nope.iso", firmware="bios")
