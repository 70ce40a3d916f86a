"""META: small key/value settings a boot medium carries to the system it boots (Talos's META partition:
key 0x0a is the network configuration, seed section 10). Pure encoding and decoding, plus reading and
writing the META partition of a built disk image.

The format is the media module's (builder/scripts/media.py), which the IMAGER image runs too; this module
reads and writes it on the host. Format, version 1 (docs/boot-media.md). One *copy* is text, so that a
busybox initramfs can read it::

    BUILDER-META 1\\n
    0x0a <base64 of the value>\\n       one line per key, keys ascending, 0x00-0xff
    sha256 <hex sha256 of every byte above>\\n

The META partition (1 MiB) holds the copy twice, at offset 0 and at half its size, each zero-padded to
half the partition; a writer writes the second copy first, so a torn write leaves one good copy. A reader
takes the first copy whose checksum holds. On an ISO the copy travels base64-encoded on the kernel
command line as INSTALLER_META_BASE64=... (Talos's name).
"""

from __future__ import annotations

import os
import stat
import struct
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.core.errors import BuildError, os_reason

PARTITION_BYTES = 1 << 20  # the disk layout's META partition
COPY_BYTES = PARTITION_BYTES // 2  # the media module's META_COPY_BYTES (a test holds them equal)

# The media module is imported where it is used: model is on every doit's path, a no-op's included, and the
# module (the whole media assembly) costs milliseconds to import.


def decode(copy: bytes) -> dict[int, bytes] | None:
    """The values of one copy (trailing zeros allowed); None when it is not a valid copy."""
    from builder.scripts import media

    return media.meta_decode(copy)


def key_name(key: int) -> str:
    from builder.scripts import media

    return media.meta_key_name(key)


class MetaError(BuildError):
    """META that cannot be encoded, decoded or found."""


def parse_key(key: object) -> int:
    """A META key: 0..255, written as a number (YAML reads 0xa as 10) or as text "0x0a"."""
    from builder.scripts import media

    try:
        return media.meta_key(key)
    except media.MediaError as exc:
        raise MetaError(str(exc)) from None


def encode(values: Mapping[int, bytes]) -> bytes:
    """One copy of ``values`` (key -> bytes); MetaError when it would not fit half the partition."""
    from builder.scripts import media

    try:
        return media.meta_encode(values)
    except media.MediaError as exc:
        raise MetaError(str(exc)) from None


def partition(values: Mapping[int, bytes]) -> bytes:
    """The whole META partition: the copy twice, each zero-padded to half the partition."""
    copy = encode(values).ljust(COPY_BYTES, b"\0")
    return copy + copy


def cmdline_word(values: Mapping[int, bytes]) -> str:
    """The kernel command-line word that carries ``values`` on an ISO ("" when there are none)."""
    from builder.scripts import media

    encode(values)  # a MetaError first
    return media.meta_cmdline_word(values)


# --- a built disk image -------------------------------------------------------------------------------

GPT_SIGNATURE = b"EFI PART"
SECTOR = 512  # the images this project makes; a disk of 4096-byte sectors is refused as having no GPT at LBA 1
BLANK = None  # what read() gives for a META partition that holds nothing (all zeros)


@dataclass(frozen=True)
class Extent:
    """Where a partition is in an image, in bytes, and how big the image is."""

    offset: int
    size: int
    image_size: int


def _header(data: bytes, where: str, image: Path) -> tuple[int, int, int, int, int, int, int, int]:
    """The fields of a GPT header this needs - (its own LBA, the other header's LBA, first and last usable
    LBA, entries LBA, entry count, entry size, entries checksum) - after checking its signature, size and
    checksum."""
    if data[:8] != GPT_SIGNATURE:
        raise MetaError(f"{image}: no GPT {where} header (signature 'EFI PART' missing)")
    size = struct.unpack_from("<I", data, 12)[0]
    if not 92 <= size <= SECTOR:
        raise MetaError(f"{image}: the GPT {where} header says it is {size} bytes (92 to {SECTOR} expected)")
    stored = struct.unpack_from("<I", data, 16)[0]
    blanked = data[:16] + b"\0\0\0\0" + data[20:size]
    if zlib.crc32(blanked) != stored:
        raise MetaError(f"{image}: the GPT {where} header is damaged (its checksum does not match)")
    mine, other, first, last, entries = struct.unpack_from("<QQQQ16xQ", data, 24)
    count, entry_size, entries_crc = struct.unpack_from("<III", data, 80)
    if not (0 < count <= 1024 and 128 <= entry_size <= 4096 and entry_size % 8 == 0):
        raise MetaError(f"{image}: the GPT {where} header describes {count} entries of {entry_size} bytes")
    return mine, other, first, last, entries, count, entry_size, entries_crc


def find_partition(image: Path, name: str = "META") -> Extent:
    """Where the GPT partition named ``name`` is in a raw disk image (a file or a block device), after
    checking both GPT headers and their entry tables: a damaged or truncated image is refused, naming what
    is wrong, so that nothing is ever read from or written to a partition that is not there whole.

    The GPT is read here, not by ``sfdisk --json`` (util-linux 2.38) or a library, because they recover where
    this must refuse: sfdisk takes the backup when the primary header or table is damaged, the primary when
    the backup is damaged or cut off, and reads a disk cut short before its backup header as an MBR disk,
    each with exit status 0 and a warning. So all the checks below would stay (each header's signature,
    size and checksum; each table's checksum; the primary at LBA 1; the backup inside the file and pointing
    back; both tables equal; the partition inside the usable space and the file), and sfdisk would replace
    only the loop over the entries, as a second reader of the disk. pyparted (libparted) recovers as well,
    and PyPI has no maintained GPT reader. tests/unit/test_meta_disks.py checks both claims against sfdisk.
    """
    try:
        fd = os.open(image, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise MetaError(f"cannot read {image} ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISBLK(info.st_mode)):
            raise MetaError(f"{image} is not a disk image (not a regular file or a block device)")
        try:
            total = f.seek(0, os.SEEK_END)
            f.seek(0)
            head = f.read(2 * SECTOR)
            primary = _header(head[SECTOR:], "primary", image) if len(head) == 2 * SECTOR and \
                head[SECTOR:SECTOR + 8] == GPT_SIGNATURE else None
            if primary is None:
                raise MetaError(f"{image} has no GPT{_what_it_is(head)}")
            mine, other, first, last, entries, count, entry_size, entries_crc = primary
            if mine != 1:
                raise MetaError(f"{image}: the GPT primary header says it is at LBA {mine}, not 1")
            needed = (other + 1) * SECTOR
            if needed > total:
                raise MetaError(f"{image} is truncated: it is {total} bytes, and its backup GPT header is at byte "
                                f"{other * SECTOR} (the image was cut short, or grown without moving the backup GPT)")
            table = _read_at(f, entries * SECTOR, count * entry_size)
            if len(table) != count * entry_size or zlib.crc32(table) != entries_crc:
                raise MetaError(f"{image}: the GPT partition table is damaged (its checksum does not match)")
            backup = _header(_read_at(f, other * SECTOR, SECTOR), "backup", image)
            if backup[0] != other or backup[1] != 1:
                raise MetaError(f"{image}: the GPT backup header at LBA {other} does not point back at the primary")
            copy = _read_at(f, backup[4] * SECTOR, backup[5] * backup[6])
            if (backup[5], backup[6]) != (count, entry_size) or copy != table:
                raise MetaError(f"{image}: the GPT backup partition table differs from the primary one")
        except OSError as exc:
            raise MetaError(f"cannot read {image} ({exc.strerror})") from None
    for i in range(count):
        entry = table[i * entry_size:(i + 1) * entry_size]
        if uuid.UUID(bytes_le=entry[:16]).int == 0:
            continue
        start, end = struct.unpack_from("<QQ", entry, 32)
        if entry[56:128].decode("utf-16-le", "replace").rstrip("\0") != name:
            continue
        if not first <= start <= end <= last or (end + 1) * SECTOR > total:
            raise MetaError(f"{image}: its {name} partition (LBA {start}-{end}) lies outside the disk's usable "
                            f"space (LBA {first}-{last}, {total} bytes)")
        return Extent(start * SECTOR, (end - start + 1) * SECTOR, total)
    raise MetaError(f"{image} has no partition named {name}")


def _read_at(f: Any, offset: int, size: int) -> bytes:
    f.seek(offset)
    return bytes(f.read(size))


def _what_it_is(head: bytes) -> str:
    """Why an image has no GPT, when its first bytes say so."""
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return " (it is zstd-compressed: zstd -d it first)"
    if head.startswith(b"\xfd7zXZ\x00"):
        return " (it is xz-compressed: xz -d it first)"
    if head.startswith(b"QFI\xfb"):
        return " (it is a qcow2 image: qemu-img convert -O raw it first)"
    if len(head) < 2 * SECTOR:
        return f" (it is only {len(head)} bytes)"
    return " (is it a raw disk image? qcow2 and vhd: qemu-img convert it to raw first)"


def read(image: Path) -> dict[int, bytes] | None:
    """The META values of a disk image: the first copy whose checksum holds; None (BLANK) for a META
    partition that holds nothing. MetaError when both copies are damaged."""
    extent = find_partition(image)
    try:
        with open(image, "rb") as f:
            data = _read_at(f, extent.offset, extent.size)
    except OSError as exc:
        raise MetaError(f"cannot read {image} ({exc.strerror})") from None
    if not data.strip(b"\0"):
        return BLANK
    for start in (0, extent.size // 2):
        values = decode(data[start:start + extent.size // 2])
        if values is not None:
            return values
    raise MetaError(f"{image}: neither copy in its META partition is valid (checksum or format)")


def write(image: Path, values: Mapping[int, bytes]) -> None:
    """Replace the META values of a disk image: the second copy first, then the first. Only inside the META
    partition, which find_partition checked is whole; the image is opened without creating or truncating
    it, and its size never changes."""
    extent = find_partition(image)
    if extent.size != PARTITION_BYTES:
        raise MetaError(f"{image}: its META partition is {extent.size} bytes, not {PARTITION_BYTES}")
    data = partition(values)
    try:
        fd = os.open(image, os.O_WRONLY | os.O_NOCTTY)
    except OSError as exc:
        raise MetaError(f"cannot write {image}: {os_reason(exc)}") from None
    try:
        if os.fstat(fd).st_size not in (extent.image_size, 0):  # 0: a block device
            raise MetaError(f"{image} changed size while being written; nothing was written")
        for start in (COPY_BYTES, 0):
            written = os.pwrite(fd, data[start:start + COPY_BYTES], extent.offset + start)
            if written != COPY_BYTES:
                raise MetaError(f"{image}: a short write ({written} of {COPY_BYTES} bytes)")
            os.fsync(fd)
    except OSError as exc:
        raise MetaError(f"cannot write {image}: {os_reason(exc)}") from None
    finally:
        os.close(fd)


