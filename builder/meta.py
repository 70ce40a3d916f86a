"""META: small key/value settings a boot medium carries to the system it boots (Talos's META partition:
key 0x0a is the network configuration, seed section 10). Pure encoding and decoding, plus reading and
writing the META partition of a built disk image.

Format, version 1 (docs/boot-media.md). One *copy* is text, so that a busybox initramfs can read it::

    BUILDER-META 1\\n
    0x0a <base64 of the value>\\n       one line per key, keys ascending, 0x00-0xff
    sha256 <hex sha256 of every byte above>\\n

The META partition (1 MiB) holds the copy twice, at offset 0 and at half its size, each zero-padded to
half the partition; a writer writes the second copy first, so a torn write leaves one good copy. A reader
takes the first copy whose checksum holds. On an ISO the copy travels base64-encoded on the kernel
command line as INSTALLER_META_BASE64=... (Talos's name).
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import uuid
from collections.abc import Mapping
from pathlib import Path

from builder.errors import BuildError

MAGIC = b"BUILDER-META 1\n"
PARTITION_BYTES = 1 << 20  # the disk layout's META partition
COPY_BYTES = PARTITION_BYTES // 2
CMDLINE_KEY = "INSTALLER_META_BASE64"
KEY = re.compile(r"^0x[0-9a-fA-F]{1,2}$")


class MetaError(BuildError):
    """META that cannot be encoded, decoded or found."""


def parse_key(key: object) -> int:
    """A META key: 0..255, written as a number (YAML reads 0xa as 10) or as text "0x0a"."""
    if isinstance(key, bool):
        raise MetaError(f"META key {key!r} is not a number 0x00-0xff")
    if isinstance(key, int):
        number = key
    elif isinstance(key, str) and re.fullmatch(r"0x[0-9a-fA-F]+", key.strip()):
        number = int(key.strip(), 16)
    elif isinstance(key, str) and key.strip().isdigit():
        number = int(key.strip())
    else:
        raise MetaError(f"META key {key!r} is not a number 0x00-0xff (write it as 0x0a)")
    if not 0 <= number <= 0xFF:
        raise MetaError(f"META key {key if isinstance(key, str) else hex(number)} is outside 0x00-0xff")
    return number


def key_name(key: int) -> str:
    return f"0x{key:02x}"


def encode(values: Mapping[int, bytes]) -> bytes:
    """One copy of ``values`` (key -> bytes); MetaError when it would not fit half the partition."""
    body = MAGIC + b"".join(f"{key_name(k)} ".encode() + base64.b64encode(values[k]) + b"\n" for k in sorted(values))
    copy = body + b"sha256 " + hashlib.sha256(body).hexdigest().encode() + b"\n"
    if len(copy) > COPY_BYTES:
        raise MetaError(f"META is {len(copy)} bytes encoded; the META partition holds {COPY_BYTES} per copy")
    return copy


def decode(copy: bytes) -> dict[int, bytes] | None:
    """The values of one copy (trailing zeros allowed); None when it is not a valid copy."""
    text = copy.rstrip(b"\0")
    if not text.startswith(MAGIC):
        return None
    head, sep, tail = text.rpartition(b"sha256 ")
    if not sep or tail.strip() != hashlib.sha256(head).hexdigest().encode():
        return None
    values: dict[int, bytes] = {}
    for line in head[len(MAGIC):].splitlines():
        name, _, data = line.partition(b" ")
        try:
            values[int(name, 16)] = base64.b64decode(data, validate=True)
        except ValueError:
            return None
    return values


def partition(values: Mapping[int, bytes]) -> bytes:
    """The whole META partition: the copy twice, each zero-padded to half the partition."""
    copy = encode(values).ljust(COPY_BYTES, b"\0")
    return copy + copy


def cmdline_word(values: Mapping[int, bytes]) -> str:
    """The kernel command-line word that carries ``values`` on an ISO ("" when there are none)."""
    return f"{CMDLINE_KEY}={base64.b64encode(encode(values)).decode()}" if values else ""


# --- a built disk image -------------------------------------------------------------------------------

GPT_SIGNATURE = b"EFI PART"


def find_partition(image: Path, name: str = "META") -> tuple[int, int]:
    """(byte offset, byte size) of the GPT partition named ``name`` in a raw disk image."""
    try:
        with open(image, "rb") as f:
            f.seek(512)
            header = f.read(92)
            if header[:8] != GPT_SIGNATURE:
                raise MetaError(f"{image} has no GPT (is it a raw disk image? qcow2 and vhd: qemu-img convert "
                                "it to raw first)")
            entries_lba, count, size = struct.unpack_from("<QII", header, 72)
            if not (0 < count <= 1024 and 128 <= size <= 4096):
                raise MetaError(f"{image}: a GPT header with {count} entries of {size} bytes")
            f.seek(entries_lba * 512)
            table = f.read(count * size)
    except OSError as exc:
        raise MetaError(f"cannot read {image} ({exc.strerror})") from None
    for i in range(count):
        entry = table[i * size:(i + 1) * size]
        if uuid.UUID(bytes_le=entry[:16]).int == 0:
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        if entry[56:128].decode("utf-16-le", "replace").rstrip("\0") == name:
            return first * 512, (last - first + 1) * 512
    raise MetaError(f"{image} has no partition named {name}")


def read(image: Path) -> dict[int, bytes]:
    """The META values of a disk image: the first copy whose checksum holds ({} for an empty partition)."""
    offset, size = find_partition(image)
    with open(image, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if not data.strip(b"\0"):
        return {}
    for start in (0, size // 2):
        values = decode(data[start:start + size // 2])
        if values is not None:
            return values
    raise MetaError(f"{image}: neither copy in its META partition is valid (checksum or format)")


def write(image: Path, values: Mapping[int, bytes]) -> None:
    """Replace the META values of a disk image: the second copy first, then the first."""
    offset, size = find_partition(image)
    if size != PARTITION_BYTES:
        raise MetaError(f"{image}: its META partition is {size} bytes, not {PARTITION_BYTES}")
    data = partition(values)
    with open(image, "r+b") as f:
        for start in (COPY_BYTES, 0):
            f.seek(offset + start)
            f.write(data[start:start + COPY_BYTES])
            f.flush()
