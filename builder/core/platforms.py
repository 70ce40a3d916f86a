"""Target platforms and the names each tool knows them by (Docker, Debian, GNU, Kbuild, QEMU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from builder.core.errors import BuildError


@dataclass(frozen=True)
class Platform:
    """One target platform. ``arch`` (amd64/arm64) is the name used in output file names."""

    docker: str  # linux/amd64 - OCI / BuildKit platform
    arch: str  # amd64 - Debian, Go and OCI architecture name
    carch: str  # x86_64 - GNU triplet architecture, what `uname -m` prints
    kernel_arch: str  # x86 - Kbuild's ARCH=
    kernel_image: str  # arch/x86/boot/bzImage - where Kbuild leaves the bootable image
    gnu_triplet: str  # x86_64-linux-gnu - prefix of the cross toolchain
    qemu_binary: str  # qemu-system-x86_64
    qemu_machine: tuple[str, ...]  # -M/-cpu words for a direct kernel boot under TCG
    console: str  # the serial console device the kernel writes to (console=...)
    uefi_code: str  # the UEFI firmware Debian's ovmf / qemu-efi-aarch64 ship (read-only flash)
    uefi_vars: str  # its variable store template (each boot gets a fresh copy)
    uefi_package: str
    qemu_package: str  # the Debian package that has qemu_binary

    def cross_compile(self, host: Platform) -> str:
        """The CROSS_COMPILE prefix to build for this platform on ``host`` ('' when native)."""
        return "" if self == host else f"{self.gnu_triplet}-"

    def variables(self, host: Platform) -> dict[str, str]:
        """The platform layer of template variables."""
        return {
            "PLATFORM": self.docker,
            "ARCH": self.arch,
            "CARCH": self.carch,
            "KERNEL_ARCH": self.kernel_arch,
            "KERNEL_IMAGE": self.kernel_image,
            "KERNEL_TARGET": self.kernel_image.rsplit("/", 1)[-1],
            "CROSS_COMPILE": self.cross_compile(host),
            "BUILD_ARCH": host.arch,
            "BUILD_CARCH": host.carch,
        }


AMD64 = Platform(
    docker="linux/amd64",
    arch="amd64",
    carch="x86_64",
    kernel_arch="x86",
    kernel_image="arch/x86/boot/bzImage",
    gnu_triplet="x86_64-linux-gnu",
    qemu_binary="qemu-system-x86_64",
    qemu_machine=("-M", "q35"),
    console="ttyS0",
    uefi_code="/usr/share/OVMF/OVMF_CODE_4M.fd",
    uefi_vars="/usr/share/OVMF/OVMF_VARS_4M.fd",
    uefi_package="ovmf",
    qemu_package="qemu-system-x86",
)
ARM64 = Platform(
    docker="linux/arm64",
    arch="arm64",
    carch="aarch64",
    kernel_arch="arm64",
    kernel_image="arch/arm64/boot/Image",
    gnu_triplet="aarch64-linux-gnu",
    qemu_binary="qemu-system-aarch64",
    qemu_machine=("-M", "virt", "-cpu", "cortex-a57"),
    console="ttyAMA0",
    uefi_code="/usr/share/AAVMF/AAVMF_CODE.fd",
    uefi_vars="/usr/share/AAVMF/AAVMF_VARS.fd",
    uefi_package="qemu-efi-aarch64",
    qemu_package="qemu-system-arm",
)

PLATFORMS: dict[str, Platform] = {p.docker: p for p in (AMD64, ARM64)}
_ALIASES: dict[str, Platform] = {
    alias: p for p in PLATFORMS.values() for alias in (p.docker, p.arch, p.carch, f"linux/{p.carch}")
}


def by_any_name(name: str) -> Platform | None:
    """The platform ``name`` means, exact (linux/amd64) or an alias (amd64, x86_64, linux/x86_64); else None."""
    return _ALIASES.get(name)


def host_platform(machine: str | None = None) -> Platform:
    """The platform this machine (and so the toolchain image) runs natively; ``machine``: what uname says,
    when not this machine's."""
    machine = machine or os.uname().machine  # what platform.machine() says, without importing it
    try:
        return _ALIASES[machine]
    except KeyError:
        raise BuildError(f"unsupported build host architecture {machine!r}") from None


def parse_platforms(spec: str, *, source: str = "PLATFORM") -> list[Platform]:
    """Parse ``linux/amd64,linux/arm64`` (arch names like ``arm64`` are accepted too).

    Order is kept, duplicates are dropped; an unknown entry is a BuildError naming it.
    """
    chosen: list[Platform] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        plat = _ALIASES.get(item)
        if plat is None:
            known = ", ".join(PLATFORMS)
            raise BuildError(f"unknown platform {item!r}; expected one of {known}", where=source)
        if plat not in chosen:
            chosen.append(plat)
    if not chosen:
        raise BuildError("no platform given", where=source)
    return chosen
