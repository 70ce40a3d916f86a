"""`builder meta` on damaged disks: both GPT headers and their tables are checked, a truncated or damaged image
is refused naming what is wrong, a write never changes the file's size nor writes outside a whole partition,
and a read that finds no META says so (exit 1)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from builder.model import meta

from ..gpt import MIB, SECTOR, make_disk

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    make_disk(path, 8, (("EFI", 1), ("META", 1)))
    meta.write(path, {0x0A: b"net"})
    return path


def builder(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "builder", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)


def test_a_good_disk_reads_back(disk: Path) -> None:
    assert meta.read(disk) == {0x0A: b"net"}
    extent = meta.find_partition(disk)
    assert (extent.offset, extent.size, extent.image_size) == (2 * MIB, MIB, 8 * MIB)


@pytest.mark.parametrize("size", [2 * MIB + 1000, 3 * MIB - 1, 8 * MIB - SECTOR, 1000, 0])
def test_a_truncated_disk_is_refused_by_read_and_write_and_keeps_its_size(disk: Path, size: int) -> None:
    os.truncate(disk, size)
    with pytest.raises(meta.MetaError, match="truncated|has no GPT"):
        meta.read(disk)
    with pytest.raises(meta.MetaError, match="truncated|has no GPT"):
        meta.write(disk, {0x0A: b"other"})
    assert disk.stat().st_size == size


@pytest.mark.parametrize("offset, what", [
    (SECTOR + 40, "primary header is damaged"),  # a byte of the primary header
    (2 * SECTOR + 200, "partition table is damaged"),  # the primary entries
    (8 * MIB - SECTOR + 40, "backup header is damaged"),  # the backup header
    (8 * MIB - 33 * SECTOR + 56, "backup partition table differs"),  # the backup entries
])
def test_a_damaged_gpt_is_refused_naming_the_part(disk: Path, offset: int, what: str) -> None:
    with open(disk, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    before = disk.read_bytes()
    with pytest.raises(meta.MetaError, match=what):
        meta.read(disk)
    with pytest.raises(meta.MetaError, match=what):
        meta.write(disk, {0x0A: b"other"})
    assert disk.read_bytes() == before


def test_a_partition_beyond_the_usable_space_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "disk.raw"
    make_disk(path, 8, (("EFI", 1), ("META", 1)))
    with open(path, "r+b") as f:  # META's last LBA past the end, with every checksum made to match
        table = bytearray(_read(f, 2 * SECTOR, 128 * 128))
        struct.pack_into("<Q", table, 128 + 40, 20000)
        for at in (2 * SECTOR, 8 * MIB - 33 * SECTOR):
            f.seek(at)
            f.write(table)
        for header_at in (SECTOR, 8 * MIB - SECTOR):
            header = bytearray(_read(f, header_at, 92))
            struct.pack_into("<I", header, 88, zlib.crc32(table))
            struct.pack_into("<I", header, 16, 0)
            struct.pack_into("<I", header, 16, zlib.crc32(header))
            f.seek(header_at)
            f.write(header)
    with pytest.raises(meta.MetaError, match="META partition .* lies outside the disk's usable space"):
        meta.read(path)


def _read(f: object, at: int, size: int) -> bytes:
    f.seek(at)  # type: ignore[attr-defined]
    return f.read(size)  # type: ignore[attr-defined, no-any-return]


def test_compressed_images_are_named(tmp_path: Path) -> None:
    for magic, word in ((b"\x28\xb5\x2f\xfd", "zstd"), (b"\xfd7zXZ\x00", "xz"), (b"QFI\xfb", "qcow2")):
        path = tmp_path / "image"
        path.write_bytes(magic + b"\0" * 4096)
        with pytest.raises(meta.MetaError, match=word):
            meta.read(path)


def test_read_without_meta_says_so_with_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "blank.raw"
    make_disk(path, 8, (("EFI", 1), ("META", 1)))
    done = builder("meta", "read", str(path), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().startswith(f"error: {path} has no META: its META partition is blank")
    meta.write(path, {})
    done = builder("meta", "read", str(path), cwd=tmp_path)
    assert done.returncode == 1 and "has no META values" in done.stderr, done.stderr


def test_write_leaves_everything_outside_the_meta_partition_alone(disk: Path) -> None:
    before = disk.read_bytes()
    meta.write(disk, {0x0A: b"a new value", 0x0B: b"two"})
    after = disk.read_bytes()
    assert len(after) == len(before)
    assert after[:2 * MIB] == before[:2 * MIB] and after[3 * MIB:] == before[3 * MIB:]
    assert meta.read(disk) == {0x0A: b"a new value", 0x0B: b"two"}


# --- against sfdisk: the same partitions on a good disk; sfdisk accepts the damage refused above ----------

def _sfdisk(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sfdisk", "--json", str(path)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LC_ALL": "C"})


def test_a_good_disk_reads_as_sfdisk_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "disk.raw"
    make_disk(path, 16, (("EFI", 3), ("BIOS", 1), ("META", 1)))
    done = _sfdisk(path)
    assert done.returncode == 0 and not done.stderr, done.stderr
    table = json.loads(done.stdout)["partitiontable"]
    assert table["label"] == "gpt" and table["sectorsize"] == SECTOR
    for part in table["partitions"]:
        extent = meta.find_partition(path, part["name"])
        assert (extent.offset, extent.size) == (part["start"] * SECTOR, part["size"] * SECTOR), part


@pytest.mark.parametrize("offset, label", [
    (SECTOR + 40, "gpt"), (2 * SECTOR + 200, "gpt"), (8 * MIB - SECTOR + 40, "gpt"),
    (8 * MIB - 33 * SECTOR + 56, "gpt"), (None, "dos"),  # cut short inside META: read as an MBR disk
], ids=["primary-header", "primary-table", "backup-header", "backup-table", "truncated"])
def test_sfdisk_recovers_from_the_damage_builder_meta_refuses(disk: Path, offset: int | None, label: str) -> None:
    """Why meta.py reads the GPT itself: each of these is refused by builder meta, and sfdisk exits 0."""
    if offset is None:
        os.truncate(disk, 2500000)
    else:
        with open(disk, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(meta.MetaError):
        meta.find_partition(disk)
    done = _sfdisk(disk)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["partitiontable"]["label"] == label
