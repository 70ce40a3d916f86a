"""Boot a kernel + initramfs in QEMU under TCG, read the serial console, always end QEMU."""

from __future__ import annotations

import os
import re
import selectors
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from builder.core import run
from builder.core.errors import BuildError
from builder.core.platforms import Platform

POWEROFF_GRACE = 30  # seconds QEMU may take to end by itself after the marker (no ACPI/PSCI: we stop it)
# A whole line only: release and machine, then NAME=VALUE fields (platform=, meta.0xa= percent-encoded) and
# last cmdline=, the kernel's command line as it is
MARKER = re.compile(r"BUILDER-BOOT-OK release=(?P<release>\S+) machine=(?P<machine>\S+)(?P<rest>[^\r\n]*)\r?\n")
PANIC = re.compile(r"Kernel panic - not syncing: [^\r\n]*(?=\r?\n)")  # a whole line: its reason is the news
PANIC_GRACE = 2  # seconds of console kept after a panic line (its call trace), then QEMU is stopped


@dataclass(frozen=True)
class BootResult:
    release: str
    machine: str
    seconds: float
    console: str
    powered_off: bool  # QEMU ended by itself after the guest powered off
    fields: dict[str, str] = field(default_factory=dict)  # platform, meta.0xa (decoded), cmdline

    @property
    def cmdline(self) -> list[str]:
        return self.fields.get("cmdline", "").split()


def command(platform: Platform, kernel: Path, initrd: Path, *, memory: int = 512,
            append: str = "") -> list[str]:
    """The QEMU command line: direct kernel boot, TCG (KVM hangs on these machines), serial on stdio; only
    signed modules load (module.sig_enforce=1: a kernel without CONFIG_MODULE_SIG ignores it)."""
    return [platform.qemu_binary, *platform.qemu_machine, "-accel", "tcg", "-m", str(memory), "-nographic",
            "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", f"console={platform.console} panic=-1 module.sig_enforce=1 {append}".strip()]


def boot(platform: Platform, kernel: Path, initrd: Path, *, timeout: float = 300,
         console: Path | None = None) -> BootResult:
    """Boot a kernel and initramfs directly and wait for the marker. QEMU is killed on every path out."""
    for path in (kernel, initrd):
        if not path.is_file():
            raise BuildError(f"{path} does not exist", hint=f"build it first: doit kernel initramfs "
                                                               f"PLATFORM={platform.docker}")
    return watch(platform, command(platform, kernel, initrd), timeout=timeout, console=console)


FIRMWARE = ("bios", "uefi", "u-boot")
UBOOT_SUFFIX = "-u-boot.bin"  # a board overlay's U-Boot, published beside its image (profile.firmware_name)
DECOMPRESS_SECONDS = 600
MEDIA_FORMATS = {".iso": "raw", ".raw": "raw", ".qcow2": "qcow2", ".vhd": "vpc"}


def uboot_beside(image: Path) -> Path:
    """Where an overlay's U-Boot for ``image`` is: out/metal-arm64-qemu-uboot.raw.zst ->
    out/metal-arm64-qemu-uboot-u-boot.bin."""
    return image.with_name(image.name.split(".", 1)[0] + UBOOT_SUFFIX)


def media_command(platform: Platform, image: Path, fmt: str, firmware: str, *, cdrom: bool, scratch: Path,
                  memory: int = 512, uboot: Path | None = None) -> list[str]:
    """The QEMU command line that boots a built medium the way a machine would: from the firmware
    (SeaBIOS; UEFI: OVMF / AAVMF with a fresh variable store; or a board overlay's U-Boot as -bios), as a
    CD or as a disk. The image is never written: a disk is opened with snapshot=on."""
    argv = [platform.qemu_binary, *platform.qemu_machine, "-accel", "tcg", "-m", str(memory), "-nographic",
            "-no-reboot"]
    if firmware == "uefi":
        for path, package in ((platform.uefi_code, platform.uefi_package), (platform.uefi_vars, platform.uefi_package)):
            if not Path(path).is_file():
                raise BuildError(f"{path} is not installed", hint=f"run ./setup.sh (Debian package {package})")
        variables = scratch / "uefi-vars.fd"
        shutil.copyfile(platform.uefi_vars, variables)
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={platform.uefi_code}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={variables}"]
    elif firmware == "u-boot":
        if uboot is None or not uboot.is_file():
            raise BuildError(f"no U-Boot for {image.name} (expected {uboot}, made by a profile whose overlay brings "
                             "U-Boot)", hint="build it: doit images, or boot with --firmware uefi")
        argv += ["-bios", str(uboot)]
    elif platform.arch != "amd64":
        raise BuildError(f"{platform.arch} has no BIOS; boot it with --firmware uefi")
    if cdrom and platform.arch == "amd64":
        argv += ["-drive", f"file={image},format=raw,media=cdrom,readonly=on"]
    elif cdrom:  # the arm64 virt machine has no IDE: a CD on virtio-scsi
        argv += ["-device", "virtio-scsi-pci,id=scsi", "-drive", f"file={image},format=raw,if=none,media=cdrom,"
                 "readonly=on,id=cd", "-device", "scsi-cd,drive=cd"]
    else:
        argv += ["-drive", f"file={image},format={fmt},if=virtio,snapshot=on"]
    return argv


def boot_media(platform: Platform, image: Path, *, firmware: str, cdrom: bool | None = None,
               timeout: float = 600, console: Path | None = None) -> BootResult:
    """Boot a built ISO or disk image (compressed ones are decompressed into a scratch file first)."""
    if not image.is_file():
        raise BuildError(f"{image} does not exist", hint="build it first: doit images")
    if firmware not in FIRMWARE:
        raise BuildError(f"unknown firmware {firmware!r}; expected {', '.join(FIRMWARE)}")
    uboot = uboot_beside(image)
    name = image.name
    compressor = {".zst": ["zstd", "-dcq"], ".xz": ["xz", "-dc"]}.get(image.suffix)
    if compressor:
        name = name[: -len(image.suffix)]
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    if suffix not in MEDIA_FORMATS:
        raise BuildError(f"{image}: not a boot medium this can boot (expected .iso, .raw, .qcow2 or .vhd, "
                         "optionally .zst or .xz)")
    with tempfile.TemporaryDirectory(prefix="builder-boot-") as tmp:
        scratch = Path(tmp)
        if compressor:
            plain = scratch / name
            try:
                with open(plain, "wb") as out:
                    done = subprocess.run([*compressor, str(image)], stdout=out, stderr=subprocess.PIPE,
                                          timeout=DECOMPRESS_SECONDS, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise BuildError(f"cannot decompress {image} ({exc})") from None
            if done.returncode != 0:
                raise BuildError(f"cannot decompress {image}: {done.stderr.decode(errors='replace').strip()[:200]}")
            image = plain
        argv = media_command(platform, image, MEDIA_FORMATS[suffix], firmware,
                             cdrom=suffix == ".iso" if cdrom is None else cdrom, scratch=scratch, uboot=uboot)
        return watch(platform, argv, timeout=timeout, console=console)


def watch(platform: Platform, argv: list[str], *, timeout: float, console: Path | None) -> BootResult:
    """Run QEMU, read its console until the marker (or a panic, or the deadline); QEMU always ends."""
    if shutil.which(argv[0]) is None:
        raise BuildError(f"{argv[0]} is not installed", hint=f"run ./setup.sh (Debian package {platform.qemu_package})")
    start = time.monotonic()
    proc = run.start(argv)
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    buffer = b""
    found: re.Match[str] | None = None
    panic: re.Match[str] | None = None
    found_at = panic_at = 0.0
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while (now := time.monotonic()) < start + timeout:
                exited = proc.poll() is not None
                if found and (exited or now > found_at + POWEROFF_GRACE):
                    break
                if panic and (exited or now > panic_at + PANIC_GRACE):  # a panicked kernel never boots
                    break
                if sel.select(timeout=0.5) or exited:
                    buffer += proc.stdout.read() or b""
                if not (found or panic):
                    text = buffer.decode(errors="replace")
                    if found := MARKER.search(text):
                        found_at = now
                    elif panic := PANIC.search(text):
                        panic_at = now
                    elif exited:
                        break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    powered_off = found is not None and proc.returncode == 0
    text = buffer.decode(errors="replace").replace("\r\n", "\n")
    if console is not None:
        console.parent.mkdir(parents=True, exist_ok=True)
        console.write_text(text)
    if panic and not found:
        raise BuildError(f"{platform.arch} kernel panicked: {panic.group(0).strip()}",
                         where=str(console) if console else None)
    if not found:
        last = " | ".join(line for line in text.strip().splitlines()[-3:])
        why = f"QEMU exited with {proc.returncode}" if time.monotonic() - start < timeout else f"{timeout:.0f}s passed"
        raise BuildError(f"{platform.arch} did not boot to the marker ({why}); last console lines: {last}",
                         where=str(console) if console else None)
    return BootResult(found["release"], found["machine"], time.monotonic() - start, text, powered_off,
                      marker_fields(found["rest"]))


def marker_fields(rest: str) -> dict[str, str]:
    """The marker's fields after the machine: ' platform=metal meta.0xa=a%20b cmdline=console=ttyS0 ...'."""
    fields: dict[str, str] = {}
    head, sep, cmdline = rest.partition(" cmdline=")
    if sep:
        fields["cmdline"] = cmdline.strip()
    for word in head.split():
        name, eq, value = word.partition("=")
        if eq:
            fields[name] = unquote(value)
    return fields
