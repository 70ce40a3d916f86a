"""Small GPT disk images for tests, written here from the UEFI specification (independently of builder/model/meta.py,
which reads them): a protective MBR, both headers with their checksums, both partition tables."""

from __future__ import annotations

import struct
import uuid
import zlib
from pathlib import Path

SECTOR = 512
ENTRIES = 128
ENTRY_SIZE = 128
LINUX_DATA = uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
EFI_SYSTEM = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
MIB = 1024 * 1024


def _header(mine: int, other: int, first: int, last: int, entries_lba: int, table: bytes) -> bytes:
    header = bytearray(92)
    header[:8] = b"EFI PART"
    struct.pack_into("<IIII", header, 8, 0x00010000, 92, 0, 0)
    struct.pack_into("<QQQQ", header, 24, mine, other, first, last)
    header[56:72] = uuid.UUID("11111111-2222-3333-4444-555555555555").bytes_le
    struct.pack_into("<QIII", header, 72, entries_lba, ENTRIES, ENTRY_SIZE, zlib.crc32(table))
    struct.pack_into("<I", header, 16, zlib.crc32(bytes(header)))
    return bytes(header).ljust(SECTOR, b"\0")


def make_disk(path: Path, size_mib: int = 8, partitions: tuple[tuple[str, int], ...] = (("EFI", 1), ("META", 1))
              ) -> None:
    """A sparse raw image of ``size_mib`` with ``partitions`` (name, MiB) from 1 MiB on, in order."""
    sectors = size_mib * MIB // SECTOR
    table = bytearray(ENTRIES * ENTRY_SIZE)
    start = MIB // SECTOR
    for index, (name, mib) in enumerate(partitions):
        entry = bytearray(ENTRY_SIZE)
        entry[:16] = (EFI_SYSTEM if name == "EFI" else LINUX_DATA).bytes_le
        entry[16:32] = uuid.uuid5(uuid.NAMESPACE_OID, name).bytes_le
        end = start + mib * MIB // SECTOR - 1
        struct.pack_into("<QQ", entry, 32, start, end)
        entry[56:56 + 2 * len(name)] = name.encode("utf-16-le")
        table[index * ENTRY_SIZE:(index + 1) * ENTRY_SIZE] = entry
        start = end + 1
    table_sectors = len(table) // SECTOR
    first, last = 2 + table_sectors, sectors - 2 - table_sectors
    mbr = bytearray(SECTOR)
    mbr[446:462] = struct.pack("<BBBBBBBBII", 0, 0, 2, 0, 0xEE, 0xFF, 0xFF, 0xFF, 1, min(sectors - 1, 0xFFFFFFFF))
    mbr[510:512] = b"\x55\xaa"
    with open(path, "wb") as f:
        f.truncate(sectors * SECTOR)
        f.write(bytes(mbr))
        f.write(_header(1, sectors - 1, first, last, 2, bytes(table)))
        f.write(bytes(table))
        f.seek((sectors - 1 - table_sectors) * SECTOR)
        f.write(bytes(table))
        f.write(_header(sectors - 1, 1, first, last, sectors - 1 - table_sectors, bytes(table)))
