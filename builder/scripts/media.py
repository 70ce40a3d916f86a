"""Boot media assembly: the one implementation of ISO, disk and file outputs, run inside the IMAGER image.

An image recipe's step (builder/resolve/images.py) carries this file in full and runs it with the image's
python3 (``python3 -I media.py KIND ...``), so the module is a build input like the rest of the step, and it
needs nothing but the standard library and the image's tools: xorriso, grub-mkimage, mkfs.fat and mtools,
sfdisk, qemu-img, xz and zstd. It imports nothing from the framework: the imager image runs it without the
framework installed (a test holds that).

Everything is made into files: no loop device, no mount, no privilege. Every identifier that a tool would
draw at random (GPT GUIDs, FAT serials, the ISO's UUID) is derived from SOURCE_DATE_EPOCH, the medium's name
and a label; every date is SOURCE_DATE_EPOCH (mtools and xorriso read it from the environment, and this
module stamps every file it lays out). docs/boot-media.md describes the layouts.

A failure prints one line, ``##builder-error## WHAT``, which the framework shows as the build's error, and
exits 1. Every tool runs under a deadline.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import struct
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

# The host imports this module on every doit, a no-op included, for its shared rules: the modules only the
# media need (argparse, tempfile) are imported where they are used.

ERROR_MARK = "##builder-error## "  # what the framework reads from a failing step (builder.sh: builder_error)
GRUB_LIB = Path("/usr/lib/grub")
GRUB_MODULES = ("part_gpt", "part_msdos", "fat", "iso9660", "normal", "linux", "configfile", "search",
                "search_fs_file", "echo", "test")
GRUB_SERIAL = ("serial", "terminal")  # amd64 media also drive the serial port (the tests read its console)
EFI_LOADER = {"amd64": "BOOTX64.EFI", "arm64": "BOOTAA64.EFI"}  # the removable-media names firmware looks for
GRUB_EFI_TARGET = {"amd64": "x86_64-efi", "arm64": "arm64-efi"}
COMPRESSORS = {  # one thread, fixed settings: the bytes depend on the input alone (builder.sh: builder_xz)
    "xz": ["xz", "-T1", "--check=crc32", "--lzma2=preset=9,dict=1MiB", "-c"],
    "zstd": ["zstd", "-T1", "-19", "-q", "-c"],
}
TOOL_DEADLINE = 1800  # seconds, for any one tool (xz -9 of a 2 GiB disk is the slowest)

# The disk layout (docs/boot-media.md; builder/model/profile.py LAYOUT_MIB checks sizes against it): GPT,
# 1 MiB alignment, partitions in this order, the backup GPT in the last MiB.
ALIGN_MIB, EFI_MIB, BIOS_MIB, META_MIB = 1, 100, 1, 1
GPT_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
GPT_BIOS = "21686148-6449-6E6F-744E-656564454649"
GPT_LINUX_DATA = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
SECTOR = 512
MIB = 1 << 20
VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z, where VHD time starts


class MediaError(Exception):
    """What went wrong, in one line: the build's error."""


# --- What the framework shares with this module: the host checks with the same code the imager runs ---------

MAX_CMDLINE = 2048  # COMMAND_LINE_SIZE on x86 and arm64, with its terminating NUL
CONSOLES = {"amd64": "ttyS0", "arm64": "ttyAMA0"}  # the serial console each architecture's machines have
META_MAGIC = b"BUILDER-META 1\n"
META_COPY_BYTES = META_MIB * MIB // 2  # a copy fills at most half the META partition
META_CMDLINE_KEY = "INSTALLER_META_BASE64"  # where an ISO's META travels (Talos's name)


def check_kernel_args(words: Sequence[str]) -> list[str]:
    """Kernel command-line words: printable, no quotes the boot loaders' parsers would take; MediaError."""
    for word in words:
        bad = next((c for c in word if ord(c) < 32 or ord(c) == 127), None)
        if bad is not None:
            raise MediaError(f"{word!r} has a control character ({bad!r})")
        if not word.strip() or any(c.isspace() for c in word):
            raise MediaError(f"{word!r} is not one word; give each argument on its own")
        if '"' in word:
            raise MediaError(f"{word!r} has a '\"', which the kernel's command-line parser takes as quoting")
    return list(words)


def kernel_cmdline(arch: str, platform: str, extra: Sequence[str], iso_meta: Mapping[int, bytes] | None = None) -> str:
    """The command line a medium boots the kernel with: the console (screen, then the serial port, which
    becomes /dev/console), module signature enforcement, the platform, then ``extra``; an ISO (which has no
    META partition) carries ``iso_meta`` as INSTALLER_META_BASE64. MediaError when it is too long."""
    words = ["console=tty0", f"console={CONSOLES[arch]}", "module.sig_enforce=1", f"builder.platform={platform}",
             *extra]
    if iso_meta:
        words.append(meta_cmdline_word(iso_meta))
    text = " ".join(words)
    if len(text) >= MAX_CMDLINE:
        what = " (META travels on an ISO's command line)" if iso_meta else ""
        raise MediaError(f"the kernel command line would be {len(text)} bytes; the kernel takes at most "
                         f"{MAX_CMDLINE - 1}{what}")
    return text


def meta_key(key: object) -> int:
    """A META key: 0..255, written as a number (YAML reads 0xa as 10) or as text "0x0a"; MediaError."""
    if isinstance(key, bool):
        raise MediaError(f"META key {key!r} is not a number 0x00-0xff")
    if isinstance(key, int):
        number = key
    elif isinstance(key, str) and re.fullmatch(r"0x[0-9a-fA-F]+", key.strip(), re.ASCII):
        number = int(key.strip(), 16)
    elif isinstance(key, str) and key.strip().isascii() and key.strip().isdigit():
        number = int(key.strip())
    else:
        raise MediaError(f"META key {key!r} is not a number 0x00-0xff (write it as 0x0a)")
    if not 0 <= number <= 0xFF:
        raise MediaError(f"META key {key if isinstance(key, str) else hex(number)} is outside 0x00-0xff")
    return number


def meta_key_name(key: int) -> str:
    return f"0x{key:02x}"


def meta_encode(values: Mapping[int, bytes]) -> bytes:
    """One copy of META (docs/boot-media.md, "META"): text, so that a busybox initramfs can read it; the
    keys ascending, each value base64, then the sha256 of every byte above. MediaError when it would not
    fit half the partition."""
    body = META_MAGIC + b"".join(f"{meta_key_name(k)} ".encode() + base64.b64encode(values[k]) + b"\n"
                                 for k in sorted(values))
    copy = body + b"sha256 " + hashlib.sha256(body).hexdigest().encode() + b"\n"
    if len(copy) > META_COPY_BYTES:
        raise MediaError(f"META is {len(copy)} bytes encoded; the META partition holds {META_COPY_BYTES} per copy")
    return copy


def meta_decode(copy: bytes) -> dict[int, bytes] | None:
    """The values of one copy (trailing zeros allowed); None when it is not a valid copy."""
    text = copy.rstrip(b"\0")
    if not text.startswith(META_MAGIC):
        return None
    head, sep, tail = text.rpartition(b"sha256 ")
    if not sep or tail.strip() != hashlib.sha256(head).hexdigest().encode():
        return None
    values: dict[int, bytes] = {}
    for line in head[len(META_MAGIC):].splitlines():
        name, _, data = line.partition(b" ")
        try:
            values[int(name, 16)] = base64.b64decode(data, validate=True)
        except ValueError:
            return None
    return values


def meta_cmdline_word(values: Mapping[int, bytes]) -> str:
    """The kernel command-line word that carries ``values`` on an ISO ("" when there are none)."""
    return f"{META_CMDLINE_KEY}={base64.b64encode(meta_encode(values)).decode()}" if values else ""


# --- The media ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Medium:
    """What every medium is made of: its name (metal-amd64), its architecture, the kernel command line and
    the files to boot; ``epoch`` is SOURCE_DATE_EPOCH."""

    name: str
    arch: str
    cmdline: str
    kernel: Path
    initramfs: Path
    epoch: int

    def hex(self, label: str, size: int) -> str:
        """``size`` bytes (as hex) derived from the medium, SOURCE_DATE_EPOCH and ``label``."""
        return hashlib.sha256(f"builder-image {self.epoch} {self.name} {label}\n".encode()).hexdigest()[:size * 2]

    def uuid(self, label: str) -> str:
        """An RFC 4122 UUID (version 5 layout) derived from ``label``; never random."""
        h = self.hex(label, 16)
        return f"{h[0:8]}-{h[8:12]}-5{h[13:16]}-{(int(h[16], 16) & 0x3) | 0x8:x}{h[17:20]}-{h[20:32]}"

    @property
    def tag(self) -> str:
        """The file GRUB searches for to find this medium's boot files."""
        return f"builder-{self.uuid('boot-files')}.id"

    @property
    def serial(self) -> bool:
        return self.arch == "amd64"

    def grub_cfg(self) -> str:
        """The GRUB menu: one entry, no wait, booting /boot/vmlinuz with the command line (each word
        single-quoted for GRUB's parser; the kernel sees the word)."""
        args = "".join(" '" + word.replace("'", "'\\''") + "'" for word in self.cmdline.split())
        serial = ("serial --unit=0 --speed=115200\nterminal_input console serial\nterminal_output console serial\n"
                  if self.serial else "")
        return (f"# {self.tag}: generated by builder\nset timeout=0\nset default=0\n{serial}"
                f'menuentry "{self.name}" {{\n  linux /boot/vmlinuz{args}\n  initrd /boot/initramfs.xz\n}}\n')

    def extlinux(self) -> str:
        """The extlinux.conf U-Boot's distro boot reads from the bootable partition: one entry."""
        return (f"# {self.name}: generated by builder\ndefault builder\nprompt 0\ntimeout 1\nlabel builder\n"
                f"  kernel /boot/vmlinuz\n  initrd /boot/initramfs.xz\n  append {self.cmdline}\n")

    def grub_early(self) -> str:
        """The config built into every GRUB image: find the file system holding /boot/TAG (the ISO's, or the
        disk's EFI partition), whatever device the firmware started GRUB from."""
        return (f"search --no-floppy --set=root --file /boot/{self.tag}\nset prefix=($root)/boot/grub\n"
                "configfile $prefix/grub.cfg\n")

    @property
    def volume_id(self) -> str:
        return self.name.translate(str.maketrans("abcdefghijklmnopqrstuvwxyz-", "ABCDEFGHIJKLMNOPQRSTUVWXYZ_"))[:32]


def run(args: Sequence[str | Path], what: str, *, stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None,
        text_input: str | None = None) -> None:
    """Run a tool to make ``what``; on failure its output, then one line naming the tool and ``what``."""
    try:
        if text_input is not None:
            done = subprocess.run([str(a) for a in args], input=text_input.encode(), capture_output=True,
                                  timeout=TOOL_DEADLINE, check=False)
        else:
            done = subprocess.run([str(a) for a in args], stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                  stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE,
                                  timeout=TOOL_DEADLINE, check=False)
    except FileNotFoundError:
        raise MediaError(f"{args[0]} is not in the imager image (needed for {what})") from None
    except subprocess.TimeoutExpired:
        raise MediaError(f"{args[0]} did not finish {what} within {TOOL_DEADLINE} s") from None
    if done.returncode != 0:
        sys.stderr.write(((done.stdout or b"") + done.stderr).decode(errors="replace"))
        raise MediaError(f"{args[0]} could not make {what} (exit status {done.returncode})")


def stamp(tree: Path, epoch: int) -> None:
    """Every date under ``tree``, ``tree`` included, at SOURCE_DATE_EPOCH (what touch --date does)."""
    for path in [tree, *sorted(tree.rglob("*"))]:
        os.utime(path, (epoch, epoch), follow_symlinks=False)


def put(path: Path, data: bytes | None = None, *, source: Path | None = None) -> None:
    """A file of mode 0644 at ``path`` (its directories 0755) holding ``data`` or a copy of ``source``."""
    for parent in reversed(path.parents):
        if not parent.exists():
            parent.mkdir(mode=0o755)
    if source is not None:
        copy(source, path)
    else:
        path.write_bytes(data or b"")
    path.chmod(0o644)


def copy(source: Path, dest: Path) -> None:
    with open(source, "rb") as src, open(dest, "wb") as dst:
        while block := src.read(MIB):
            dst.write(block)


def directory(path: Path) -> Path:
    for each in [*reversed(path.parents), path]:
        if not each.exists():
            each.mkdir(mode=0o755)
    return path


def grub_image(medium: Medium, work: Path, fmt: str, lib: str, out: Path, modules: Sequence[str]) -> None:
    """grub-mkimage with the early config (reproducible: no dates or random bytes go into a GRUB image)."""
    early = work / "grub-early.cfg"
    early.write_text(medium.grub_early())
    run(["grub-mkimage", "-O", fmt, "-d", GRUB_LIB / lib, "-p", "/boot/grub", "-c", early, "-o", out, *modules],
        f"GRUB's {fmt} image")


def efi_loader(medium: Medium, work: Path, out: Path) -> None:
    """GRUB for UEFI, as the removable-media loader."""
    target = GRUB_EFI_TARGET[medium.arch]
    grub_image(medium, work, target, target, out, [*GRUB_MODULES, *(GRUB_SERIAL if medium.serial else ())])


def boot_tree(medium: Medium, tree: Path, *, grub: bool = True) -> None:
    """The files every medium carries: the kernel, the initramfs, the GRUB menu (unless another boot loader
    starts it) and the tag."""
    put(tree / "boot" / "vmlinuz", source=medium.kernel)
    put(tree / "boot" / "initramfs.xz", source=medium.initramfs)
    if grub:
        put(tree / "boot" / "grub" / "grub.cfg", medium.grub_cfg().encode())
    put(tree / "boot" / medium.tag, f"{medium.name}\n".encode())


def tree_kib(tree: Path, block: int = 4096) -> int:
    """The KiB ``tree`` takes in blocks of ``block`` bytes, one block per directory: du -sk's answer on
    ext4, computed from the files themselves so that it does not depend on the build's file system."""
    total = block  # the tree itself
    for path in tree.rglob("*"):
        size = block if path.is_dir() else path.stat().st_size
        total += -(-size // block) * block
    return total // 1024


def apparent_kib(tree: Path) -> int:
    """The KiB ``tree``'s files hold, 4 KiB per directory: what a FAT file system needs room for."""
    total = 4096 + sum(4096 if p.is_dir() else p.stat().st_size for p in tree.rglob("*"))
    return -(-total // 1024)


def fat(medium: Medium, out: Path, kib: int, label: str, tree: Path) -> None:
    """A FAT file system of ``kib`` KiB holding ``tree``, made into the file ``out``: the serial from the
    label, every date SOURCE_DATE_EPOCH (mkfs.fat --invariant; mtools reads the variable), the directories
    and then the files copied in byte order of their paths."""
    out.unlink(missing_ok=True)
    run(["mkfs.fat", "--invariant", "-i", medium.hex(f"fat {label}", 4), "-n", label, "-C", out, str(kib)],
        f"the {label} file system")
    stamp(tree, medium.epoch)
    entries = sorted(tree.rglob("*"), key=lambda p: p.relative_to(tree).as_posix())
    for path in entries:
        if path.is_dir() and not path.is_symlink():
            run(["mmd", "-i", out, f"::/{path.relative_to(tree).as_posix()}"], f"the {label} file system")
    for path in entries:
        if path.is_file() and not path.is_symlink():
            rel = path.relative_to(tree).as_posix()
            run(["mcopy", "-m", "-i", out, path, f"::/{rel}"], f"the {label} file system")


def iso(medium: Medium, work: Path, out: Path) -> None:
    """A hybrid ISO 9660 image (a CD and a disk at once). amd64: BIOS through El Torito and GRUB's hybrid
    MBR, UEFI through the appended EFI partition; arm64: UEFI only."""
    tree = directory(work / "iso-tree")
    boot_tree(medium, tree)
    efi_tree = directory(work / "efi-tree")
    efi_loader(medium, work, directory(efi_tree / "EFI" / "BOOT") / EFI_LOADER[medium.arch])
    efi = work / "efi.img"
    fat(medium, efi, (tree_kib(efi_tree) + 1023) // 1024 * 1024 + 1024, "EFIBOOT", efi_tree)  # whole MiB, 1 spare
    args: list[str | Path] = ["-as", "mkisofs", "-iso-level", "3", "-full-iso9660-filenames", "-joliet",
                              "-joliet-long", "-rational-rock", "-volid", medium.volume_id]
    if medium.arch == "amd64":
        eltorito = directory(tree / "boot" / "grub" / "i386-pc") / "eltorito.img"
        grub_image(medium, work, "i386-pc-eltorito", "i386-pc", eltorito, [*GRUB_MODULES, "biosdisk", *GRUB_SERIAL])
        args += ["-b", "boot/grub/i386-pc/eltorito.img", "-no-emul-boot", "-boot-load-size", "4",
                 "-boot-info-table", "--grub2-boot-info", "--grub2-mbr", GRUB_LIB / "i386-pc" / "boot_hybrid.img",
                 "-eltorito-alt-boot"]
    stamp(tree, medium.epoch)
    # the GPT's disk GUID from the medium (xorriso's default derives it from the volume date alone, the same
    # for every ISO of one SOURCE_DATE_EPOCH); xorriso derives the partition GUIDs from it
    args += ["-e", "--interval:appended_partition_2:all::", "-no-emul-boot", "-append_partition", "2", "0xef", efi,
             "-appended_part_as_gpt", "--gpt_disk_guid", medium.uuid("iso-gpt"), "-output", out, tree]
    run(["xorriso", *args], out.name)


def bios_install(disk: Path, core_path: Path, boot_path: Path, first: int, last: int) -> None:
    """What grub-bios-setup (Debian's grub-pc, which a build image should not carry: it installs itself as the
    machine's boot loader) does for a GPT disk, on a file. GRUB's boot sector (boot.img) goes into the
    protective MBR's code area (bytes 0-2 and 0x5a-0x1b7: the BPB area and the partition table stay), with
    the LBA of the core image at 0x5c; the core image goes into the BIOS boot partition (sectors ``first`` to
    ``last``), its first sector's block list (the last 12 bytes: start LBA, sector count, segment) pointing
    at the rest of it."""
    core = bytearray(core_path.read_bytes())
    sectors = -(-len(core) // SECTOR)
    if sectors > last - first + 1:
        raise MediaError(f"GRUB's core image ({len(core)} bytes) does not fit the BIOS boot partition")
    _, length, _ = struct.unpack_from("<QHH", core, SECTOR - 12)
    if length != sectors - 1:
        raise MediaError(f"unexpected GRUB core image: its block list says {length} sectors, not {sectors - 1}")
    struct.pack_into("<Q", core, SECTOR - 12, first + 1)
    boot = bytearray(boot_path.read_bytes())
    struct.pack_into("<Q", boot, 0x5C, first)
    with open(disk, "r+b") as f:
        f.seek(first * SECTOR)
        f.write(bytes(core))
        f.seek(0)
        mbr = bytearray(f.read(SECTOR))
        mbr[0:3] = boot[0:3]
        mbr[0x5A:0x1B8] = boot[0x5A:0x1B8]
        f.seek(0)
        f.write(bytes(mbr))


def write_at(disk: Path, source: Path, offset: int) -> None:
    """``source``'s bytes into ``disk`` at ``offset``, leaving holes where a MiB of it is zeros (dd
    conv=notrunc,sparse)."""
    with open(source, "rb") as src, open(disk, "r+b") as dst:
        position = offset
        while block := src.read(MIB):
            if block.count(0) != len(block):
                dst.seek(position)
                dst.write(block)
            position += len(block)


@dataclass(frozen=True)
class Asset:
    """An overlay's file: ``to`` is efi/PATH (into the EFI partition) or out/NAME (published beside the
    medium); ``what`` names it in the project for an error."""

    source: Path
    to: str
    what: str


def disk(medium: Medium, work: Path, out: Path, mib: int, bootloader: str, assets: Sequence[Asset] = (),
         meta_copy: bytes = b"") -> None:
    """A raw GPT disk of ``mib`` MiB: EFI (FAT: the kernel, the initramfs and the boot loader's files, plus the
    overlay's efi/ assets), BIOS boot, and META (zeros, or ``meta_copy`` twice). grub: GRUB for UEFI on the EFI
    partition, and on amd64 GRUB's boot sector in the protective MBR with its core image in the BIOS boot
    partition. u-boot: /extlinux/extlinux.conf, the EFI partition marked legacy-bootable (where U-Boot's
    distro boot looks)."""
    efi_start, bios_start = ALIGN_MIB, ALIGN_MIB + EFI_MIB
    meta_start = bios_start + BIOS_MIB
    tree = directory(work / "disk-tree")
    if bootloader not in ("grub", "u-boot"):
        raise MediaError(f"unknown boot loader {bootloader!r}; expected grub or u-boot")
    boot_tree(medium, tree, grub=bootloader == "grub")
    attrs = ""
    if bootloader == "u-boot":
        put(tree / "extlinux" / "extlinux.conf", medium.extlinux().encode())
        attrs = ', attrs="LegacyBIOSBootable"'
    else:
        efi_loader(medium, work, directory(tree / "EFI" / "BOOT") / EFI_LOADER[medium.arch])
    for asset in assets:
        if asset.to.startswith("efi/"):
            put(tree / asset.to.removeprefix("efi/"), source=asset.source)
    need = apparent_kib(tree)
    if need > EFI_MIB * 1024 * 9 // 10:
        raise MediaError(f"the EFI partition ({EFI_MIB} MiB) cannot hold the boot files ({need // 1024 + 1} MiB, "
                         "with 10% for FAT)")
    efi = work / "efi.fat"
    fat(medium, efi, EFI_MIB * 1024, "EFI", tree)
    with open(out, "r+b" if out.exists() else "wb") as f:  # an existing file keeps its inode (a bind mount)
        f.truncate(0)
        f.truncate(mib * MIB)
    sectors = MIB // SECTOR
    table = (f"label: gpt\nlabel-id: {medium.uuid('disk')}\nunit: sectors\nfirst-lba: 34\n"
             f"start={efi_start * sectors}, size={EFI_MIB * sectors}, type={GPT_ESP}, uuid={medium.uuid('part-EFI')}, "
             f"name=EFI{attrs}\n"
             f"start={bios_start * sectors}, size={BIOS_MIB * sectors}, type={GPT_BIOS}, "
             f"uuid={medium.uuid('part-BIOS')}, name=BIOS\n"
             f"start={meta_start * sectors}, size={META_MIB * sectors}, type={GPT_LINUX_DATA}, "
             f"uuid={medium.uuid('part-META')}, name=META\n")
    run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", out], "the partition table", text_input=table)
    write_at(out, efi, efi_start * MIB)
    if bootloader == "grub" and medium.arch == "amd64":
        core = work / "core.img"
        grub_image(medium, work, "i386-pc", "i386-pc", core, [*GRUB_MODULES, "biosdisk", *GRUB_SERIAL])
        first = bios_start * sectors
        bios_install(out, core, GRUB_LIB / "i386-pc" / "boot.img", first, first + BIOS_MIB * sectors - 1)
    if meta_copy:
        write_meta(out, meta_copy, meta_start * MIB, META_MIB * MIB)


def write_meta(disk: Path, copy: bytes, start: int, size: int) -> None:
    """META (builder/model/meta.py: one copy) into the META partition at byte ``start`` of ``size`` bytes: the
    second copy (at half the partition) first, then the first."""
    half = size // 2
    if len(copy) > half:
        raise MediaError("META does not fit half the META partition")
    with open(disk, "r+b") as f:
        for offset in (start + half, start):
            f.seek(offset)
            f.write(copy)


def vhd_footer(path: Path, epoch: int, unique: bytes) -> None:
    """qemu-img stamps a VHD's footer with the time and a random unique ID: the time becomes
    SOURCE_DATE_EPOCH, the ID one derived from the medium, and the checksum is redone. The footer is a format
    of 512 bytes no maintained Python library writes; it is patched by hand, at the offsets of the VHD
    specification."""
    with open(path, "r+b") as f:
        f.seek(-SECTOR, os.SEEK_END)
        footer = bytearray(f.read(SECTOR))
        if footer[:8] != b"conectix":
            raise MediaError(f"{path.name}: no VHD footer")
        struct.pack_into(">I", footer, 24, max(epoch - VHD_EPOCH, 0))
        footer[68:84] = unique
        struct.pack_into(">I", footer, 64, 0)
        struct.pack_into(">I", footer, 64, ~sum(footer) & 0xFFFFFFFF)
        f.seek(-SECTOR, os.SEEK_END)
        f.write(bytes(footer))


def convert(medium: Medium, raw: Path, fmt: str) -> Path:
    """The raw disk as ``fmt``: qcow2 (qemu-img writes no dates or random bytes into it), or a fixed-size VHD
    (Azure's kind: its virtual size exactly the raw size, a whole number of MiB)."""
    if fmt == "raw":
        return raw
    made = raw.with_suffix(f".{fmt}")
    if fmt == "qcow2":
        run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1", raw, made], made.name)
    elif fmt == "vhd":
        run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on", raw, made],
            made.name)
        vhd_footer(made, medium.epoch, bytes.fromhex(medium.uuid("vhd").replace("-", "")))
    else:
        raise MediaError(f"unknown disk format {fmt!r}; expected raw, qcow2 or vhd")
    raw.unlink()
    return made


def publish(made: Path, out: Path, compression: str) -> None:
    """``made`` compressed as asked (single-threaded, fixed settings) at ``out``, through a temporary name in
    the same directory, so that ``out`` is whole or absent."""
    if compression != "none" and compression not in COMPRESSORS:
        raise MediaError(f"unknown compression {compression!r}; expected none, xz or zstd")
    directory(out.parent)
    part = out.with_name(f".{out.name}.part")
    try:
        if compression == "none":
            copy(made, part)
        else:
            with open(made, "rb") as src, open(part, "wb") as dst:
                run(COMPRESSORS[compression], out.name, stdin=src, stdout=dst)
        part.chmod(0o644)
        part.replace(out)
    except BaseException:  # a full disk, a tool that failed, a signal: no half-written file is left
        part.unlink(missing_ok=True)
        raise


def place_assets(assets: Sequence[Asset]) -> None:
    """Check that every asset is there, and publish the out/ ones (the firmware a board starts with)."""
    for asset in assets:
        if not asset.source.is_file():
            raise MediaError(f"{asset.what}: {asset.source} does not exist")
        if not (asset.to.startswith("efi/") or asset.to.startswith("/")):
            raise MediaError(f"{asset.what}: to is {asset.to!r}; expected efi/PATH or an absolute path")
    for asset in assets:
        if asset.to.startswith("/"):
            publish(asset.source, Path(asset.to), "none")


# --- The imager's interface: a profile from the table, the command line's arguments and META over it --------

TABLE = Path("/usr/lib/builder/media.json")  # the profile table the imager image carries
FILES = Path("/usr/lib/builder")  # the project files the table names (overlays/NAME/FILE)
ASSETS = Path("/usr/install")  # the boot assets: ARCH/vmlinuz, ARCH/initramfs.xz (Talos's layout)
KINDS = ("iso", "disk", "kernel", "initramfs", "cmdline")
MACHINES = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "amd64": "amd64"}


@dataclass(frozen=True)
class Request:
    """One medium asked for: a profile of the table and what the command line adds."""

    profile: str
    arch: str | None = None
    platform: str | None = None
    extra_kernel_args: tuple[str, ...] = ()
    meta: tuple[str, ...] = ()  # KEY=VALUE
    kernel: Path | None = None  # default: ASSETS/ARCH/vmlinuz
    initramfs: Path | None = None
    files: Path = FILES
    output: Path = Path("/out")


@dataclass(frozen=True)
class Entry:
    """One profile of the table (made by the framework from profiles/NAME.yaml: builder/resolve/images.py)."""

    name: str
    platform: str
    kind: str
    arch: tuple[str, ...]
    outputs: Mapping[str, str]  # arch -> the file it makes
    compression: str = "none"
    overlay: str | None = None
    format: str = "raw"
    size_mib: int = 1024
    bootloader: str = "grub"
    extra_kernel_args: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)  # "0x0a" -> the value
    assets: tuple[TableAsset, ...] = ()

    @classmethod
    def parse(cls, data: object, where: str) -> Entry:
        if not isinstance(data, dict):
            raise MediaError(f"{where}: expected an object")
        try:
            assets = tuple(TableAsset(str(a["source"]), str(a.get("what") or a["source"]), a.get("efi"),
                                      dict(a.get("out") or {})) for a in data.get("assets") or [])
            entry = cls(str(data["name"]), str(data["platform"]), str(data["kind"]), tuple(data["arch"]),
                        dict(data["outputs"]), str(data.get("compression") or "none"), data.get("overlay"),
                        str(data.get("format") or "raw"), int(data.get("size_mib") or 1024),
                        str(data.get("bootloader") or "grub"), tuple(map(str, data.get("extra_kernel_args") or [])),
                        {str(k): str(v) for k, v in dict(data.get("meta") or {}).items()}, assets)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MediaError(f"{where}: not a profile entry ({type(exc).__name__}: {exc})") from None
        if entry.kind not in KINDS:
            raise MediaError(f"{where}: kind {entry.kind!r}; expected one of {', '.join(KINDS)}")
        return entry


@dataclass(frozen=True)
class TableAsset:
    """An overlay's file: ``source`` absolute (a file of the imager image) or relative to the project files;
    ``efi`` a path in the EFI partition, or ``out`` the file per arch it is published as."""

    source: str
    what: str
    efi: str | None
    out: Mapping[str, str]

    def placed(self, arch: str, request: Request) -> Asset:
        source = Path(self.source) if self.source.startswith("/") else request.files / self.source
        if self.efi:
            return Asset(source, f"efi/{self.efi}", self.what)
        if arch not in self.out:
            raise MediaError(f"{self.what}: no file named for {arch}")
        return Asset(source, str(request.output / self.out[arch]), self.what)


def parse_table(data: object, where: str) -> list[Entry]:
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), list):
        raise MediaError(f"{where}: not a profile table (expected an object with a profiles list)")
    return [Entry.parse(item, f"{where}: profiles.{index}") for index, item in enumerate(data["profiles"])]


def choose(entries: Sequence[Entry], request: Request) -> Entry:
    """The table's profile for ``request``: one named PROFILE, or for a kind (iso, disk, ...) the one of that
    kind for --platform (default metal) with no overlay."""
    named = [e for e in entries if e.name == request.profile]
    platform = request.platform or "metal"
    if not named and request.profile in KINDS:
        named = [e for e in entries if e.kind == request.profile and e.platform == platform and not e.overlay]
        if len(named) > 1:
            raise MediaError(f"several {request.profile} profiles for platform {platform}: "
                             f"{', '.join(e.name for e in named)}; name one")
    if not named:
        have = ", ".join(sorted(e.name for e in entries)) or "none"
        what = (f"no {request.profile} profile for platform {platform}" if request.profile in KINDS
                else f"no profile {request.profile!r}")
        raise MediaError(f"{what}; the profiles are: {have}")
    if request.platform and named[0].platform != request.platform:
        raise MediaError(f"profile {request.profile} is for platform {named[0].platform}, not {request.platform}")
    return named[0]


def merged_meta(entry: Entry, pairs: Sequence[str]) -> dict[int, bytes]:
    """The profile's META with the command line's KEY=VALUE pairs over it, per key."""
    values = {meta_key(k): v for k, v in entry.meta.items()}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise MediaError(f"--meta {pair!r}: expected KEY=VALUE, e.g. 0x0a=VALUE")
        values[meta_key(key)] = value
    return {key: value.encode() for key, value in sorted(values.items())}


def machine_arch() -> str:
    machine = os.uname().machine
    if machine not in MACHINES:
        raise MediaError(f"this machine is {machine}; give --arch amd64 or --arch arm64")
    return MACHINES[machine]


def make(entries: Sequence[Entry], request: Request, epoch: int, work: Path) -> Path:
    """Make the medium ``request`` asks for into its output directory; the path it was published at."""
    entry = choose(entries, request)
    arch = request.arch or machine_arch()
    if arch not in entry.arch or arch not in entry.outputs:
        raise MediaError(f"profile {entry.name} is for {', '.join(entry.arch)}, not {arch}")
    values = merged_meta(entry, request.meta)
    extra = [*entry.extra_kernel_args, *check_kernel_args(request.extra_kernel_args)]
    cmdline = kernel_cmdline(arch, entry.platform, extra, values if entry.kind == "iso" else None)
    out = request.output / entry.outputs[arch]
    if entry.kind == "cmdline":
        made = work / "cmdline"
        made.write_text(f"{cmdline}\n")
        publish(made, out, entry.compression)
        return out
    kernel = request.kernel or ASSETS / arch / "vmlinuz"
    initramfs = request.initramfs or ASSETS / arch / "initramfs.xz"
    needs = {"kernel": [kernel], "initramfs": [initramfs]}.get(entry.kind, [kernel, initramfs])
    for path in needs:
        if not path.is_file():
            raise MediaError(f"{path} does not exist")
    if entry.kind in ("kernel", "initramfs"):
        publish(needs[0], out, "none" if entry.kind == "initramfs" else entry.compression)  # initramfs: xz already
        return out
    medium = Medium(entry.outputs[arch].split(".", 1)[0], arch, cmdline, kernel, initramfs, epoch)
    if entry.kind == "iso":
        made = work / "image.iso"
        iso(medium, work, made)
    else:
        assets = [asset.placed(arch, request) for asset in entry.assets]
        place_assets(assets)
        made = work / "image.raw"
        disk(medium, work, made, entry.size_mib, entry.bootloader, assets, meta_encode(values) if values else b"")
        made = convert(medium, made, entry.format)
    publish(made, out, entry.compression)
    return out


MIN_DISK_MIB = ALIGN_MIB + EFI_MIB + BIOS_MIB + META_MIB + 1  # the layout and the backup GPT
MAX_DISK_MIB = 2 * 1024 * 1024  # 2 TiB, as profiles allow: a larger disk is a typo
MAX_EPOCH = 253402300799  # 9999-12-31T23:59:59Z
SIZE_UNITS = {"": 1, "m": 1, "mib": 1, "g": 1024, "gib": 1024, "t": 1024 * 1024, "tib": 1024 * 1024}


def parse_size(text: str) -> int:
    """A disk size in MiB: 512MiB, 1GiB, 2G, 1024 (MiB)."""
    match = re.fullmatch(r"\s*([0-9]{1,9})\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in SIZE_UNITS:
        raise MediaError(f"--size {text!r}: expected MiB, GiB or TiB, e.g. 1GiB")
    mib = int(match.group(1)) * SIZE_UNITS[match.group(2).lower()]
    if mib > MAX_DISK_MIB:
        raise MediaError(f"--size {text.strip()} is more than 2 TiB")
    return mib


def install(entries: Sequence[Entry], request: Request, target: Path, size: str | None, epoch: int,
            work: Path) -> Path:
    """Write the disk layout of ``doit disk`` (the platform's disk profile, raw) onto ``target``: a file, made
    when it does not exist (of --size, else the profile's size), or an existing file whose size is the disk's.
    Nothing needs privileges: the layout is written into the file."""
    entry = choose(entries, Request("disk", request.arch, request.platform))
    arch = request.arch or machine_arch()
    if arch not in entry.arch:
        raise MediaError(f"profile {entry.name} is for {', '.join(entry.arch)}, not {arch}")
    if target.is_block_device():
        raise MediaError(f"{target} is a block device; the installer writes onto a file (not yet onto a device)")
    if target.exists() and not target.is_file():
        raise MediaError(f"{target} is not a file")
    if not target.parent.is_dir():
        raise MediaError(f"{target}: its directory {target.parent} does not exist")
    length = target.stat().st_size if target.is_file() else None  # an existing file keeps its length
    have = length // MIB if length is not None else None
    mib = parse_size(size) if size else (have if have is not None else entry.size_mib)
    if have is not None and mib > have:
        raise MediaError(f"{target} is {have} MiB, smaller than --size {mib} MiB")
    if mib < MIN_DISK_MIB:
        raise MediaError(f"{target}: {mib} MiB is too small; the disk layout needs at least {MIN_DISK_MIB} MiB")
    if entry.format != "raw":
        raise MediaError(f"profile {entry.name} makes {entry.format} disks; the installer writes raw ones")
    values = merged_meta(entry, request.meta)
    extra = [*entry.extra_kernel_args, *check_kernel_args(request.extra_kernel_args)]
    cmdline = kernel_cmdline(arch, entry.platform, extra, None)
    kernel = request.kernel or ASSETS / arch / "vmlinuz"
    initramfs = request.initramfs or ASSETS / arch / "initramfs.xz"
    for path in (kernel, initramfs):
        if not path.is_file():
            raise MediaError(f"{path} does not exist")
    medium = Medium(entry.outputs[arch].split(".", 1)[0], arch, cmdline, kernel, initramfs, epoch)
    assets = [asset.placed(arch, request) for asset in entry.assets]
    place_assets(assets)
    made = work / "disk.raw"
    disk(medium, work, made, mib, entry.bootloader, assets, meta_encode(values) if values else b"")
    with open(made, "rb") as src, open(target, "r+b" if target.exists() else "wb") as dst:
        dst.truncate(0)
        dst.truncate(max(mib * MIB, length or 0))
        for start, end in data_extents(src.fileno(), mib * MIB):  # the layout's holes stay holes, unread
            src.seek(start)
            dst.seek(start)
            while start < end and (block := src.read(min(MIB, end - start))):
                dst.write(block)
                start += len(block)
    return target


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """The (start, end) byte ranges of ``fd`` that hold data (SEEK_DATA / SEEK_HOLE; the whole file where the
    file system cannot say)."""
    extents, position = [], 0
    try:
        while position < size:
            start = os.lseek(fd, position, os.SEEK_DATA)
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            extents.append((start, end))
            position = end
    except OSError as exc:  # ENXIO: no data after position
        if exc.errno != 6:
            return [(0, size)]
    return extents


def _parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog="imager", description="Make a boot medium from a profile: imager iso|disk|PROFILE --arch ARCH ...; "
                                   "or install a disk: install --disk FILE [--size 1GiB]")
    parser.add_argument("profile", metavar="iso|disk|install|PROFILE",
                        help="a kind (the profile of that kind for --platform), a profile's name, or install")
    parser.add_argument("--disk", type=Path, help="install: the file to write the disk layout onto")
    parser.add_argument("--size", help="install: the disk's size (default: the file's, else the profile's)")
    parser.add_argument("--arch", choices=sorted(EFI_LOADER), help="default: this machine's")
    parser.add_argument("--platform", help="the platform whose profile a kind means (default metal)")
    parser.add_argument("--extra-kernel-arg", action="append", default=[], dest="extra_kernel_args",
                        help="one more kernel argument, after the profile's (repeatable)")
    parser.add_argument("--meta", action="append", default=[], help="KEY=VALUE, over the profile's (repeatable)")
    parser.add_argument("--table", type=Path, default=TABLE, help=f"the profile table (default {TABLE})")
    parser.add_argument("--files", type=Path, default=FILES, help="where the table's project files are")
    parser.add_argument("--kernel", type=Path, help=f"default {ASSETS}/ARCH/vmlinuz")
    parser.add_argument("--initramfs", type=Path, help=f"default {ASSETS}/ARCH/initramfs.xz")
    parser.add_argument("--output", type=Path, default=Path("/out"), help="the directory to write to")
    return parser


def _epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    if not value.isdigit() or len(value) > 12 or int(value) > MAX_EPOCH:
        raise MediaError(f"SOURCE_DATE_EPOCH is {value[:40]!r}; expected a whole number of seconds up to {MAX_EPOCH} "
                         "(9999-12-31)")
    return int(value)


def _table(path: Path) -> list[Entry]:
    import json

    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise MediaError(f"{path}: no profile table (give --table FILE)") from None
    except ValueError as exc:
        raise MediaError(f"{path}: not a profile table ({exc})") from None
    return parse_table(data, str(path))


def main(argv: Sequence[str] | None = None) -> int:
    import signal

    for number in (signal.SIGINT, signal.SIGTERM):  # as a container's PID 1, SIGTERM is ignored unless handled
        signal.signal(number, _stop)
    args = _parser().parse_args(argv)
    request = Request(args.profile, args.arch, args.platform, tuple(args.extra_kernel_args), tuple(args.meta),
                      args.kernel, args.initramfs, args.files, args.output)
    try:
        epoch = _epoch()
        table = _table(args.table)
        import tempfile

        with tempfile.TemporaryDirectory(prefix="media-") as scratch:
            if args.profile == "install":
                if args.disk is None:
                    raise MediaError("install: give the disk to write: --disk FILE")
                install(table, request, args.disk, args.size, epoch, Path(scratch))
            elif args.disk is not None or args.size is not None:
                raise MediaError(f"--disk and --size are for install, not {args.profile}")
            else:
                make(table, request, epoch, Path(scratch))
    except MediaError as exc:
        sys.stderr.write(f"{ERROR_MARK}{exc}\n")
        return 1
    except OSError as exc:  # a full disk, a read-only mount: the file and the reason, in one line
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"{ERROR_MARK}{where}{exc.strerror or exc}\n")
        return 1
    except Stopped as exc:
        sys.stderr.write(f"{ERROR_MARK}stopped by {exc.name}; nothing was published\n")
        return 128 + exc.number
    return 0


class Stopped(BaseException):
    """SIGINT or SIGTERM: the work is abandoned, every ``finally`` runs (temporary files go)."""

    def __init__(self, number: int) -> None:
        import signal

        self.number, self.name = number, signal.Signals(number).name
        super().__init__(self.name)


def _stop(number: int, _frame: object) -> None:
    raise Stopped(number)


if __name__ == "__main__":
    sys.exit(main())
