"""Boot a kernel + initramfs in QEMU under TCG, read the serial console, always end QEMU."""

from __future__ import annotations

import os
import re
import selectors
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from builder import run
from builder.errors import BuildError
from builder.platforms import Platform

POWEROFF_GRACE = 30  # seconds QEMU may take to end by itself after the marker (no ACPI/PSCI: we stop it)
MARKER = re.compile(r"BUILDER-BOOT-OK release=(?P<release>\S+) machine=(?P<machine>\S+)\r?\n")  # whole line only
PANIC = re.compile(r"Kernel panic - not syncing: [^\r\n]*(?=\r?\n)")  # a whole line: its reason is the news
PANIC_GRACE = 2  # seconds of console kept after a panic line (its call trace), then QEMU is stopped


@dataclass(frozen=True)
class BootResult:
    release: str
    machine: str
    seconds: float
    console: str
    powered_off: bool  # QEMU ended by itself after the guest powered off


def command(platform: Platform, kernel: Path, initrd: Path, *, memory: int = 512,
            append: str = "") -> list[str]:
    """The QEMU command line: direct kernel boot, TCG (KVM hangs on these machines), serial on stdio; only
    signed modules load (module.sig_enforce=1: a kernel without CONFIG_MODULE_SIG ignores it)."""
    return [platform.qemu_binary, *platform.qemu_machine, "-accel", "tcg", "-m", str(memory), "-nographic",
            "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", f"console={platform.console} panic=-1 module.sig_enforce=1 {append}".strip()]


def boot(platform: Platform, kernel: Path, initrd: Path, *, timeout: float = 300,
         console: Path | None = None) -> BootResult:
    """Boot and wait for the marker. QEMU is killed on every path out of here."""
    for path in (kernel, initrd):
        if not path.is_file():
            raise BuildError(f"{path} does not exist", hint=f"build it first: doit kernel initramfs "
                                                               f"PLATFORM={platform.docker}")
    argv = command(platform, kernel, initrd)
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
    return BootResult(found["release"], found["machine"], time.monotonic() - start, text, powered_off)
