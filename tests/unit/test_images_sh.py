"""images.sh's GRUB BIOS install on a real disk file made by sfdisk, on the host: the BIOS boot partition is
found through sfdisk --json, the core image lands there with its block list pointing after its first sector,
and the MBR gets GRUB's code while keeping its partition table."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from importlib import resources
from pathlib import Path

BUILDER_SH = str(resources.files("builder").joinpath("scripts/builder.sh"))
IMAGES_SH = str(resources.files("builder").joinpath("scripts/images.sh"))
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


def _disk(path: Path, partitions: str) -> None:
    _blank(path, 8 << 20)
    subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(path)], check=True, timeout=60,
                   input=f"label: gpt\nunit: sectors\n{partitions}", text=True, capture_output=True)


def _blank(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def _grub(lib: Path) -> tuple[bytes, bytes]:
    """A stand-in for GRUB's boot.img and a 3-sector core.img whose block list says 2 more sectors."""
    (lib / "i386-pc").mkdir(parents=True)
    boot = bytes(range(256)) * 2
    core = bytearray(b"\xc0" * 3 * 512)
    struct.pack_into("<QHH", core, 512 - 12, 0, 2, 0x820)
    (lib / "i386-pc" / "boot.img").write_bytes(boot)
    (lib / "core.img").write_bytes(core)
    return boot, bytes(core)


def _install(disk: Path, lib: Path) -> subprocess.CompletedProcess[str]:
    script = f'. "{BUILDER_SH}"; . "{IMAGES_SH}"; GRUB_LIB="$1"; image_bios_install "$2" "$1/core.img"'
    return subprocess.run(["bash", "-c", script, "bash", str(lib), str(disk)], capture_output=True, text=True,
                          timeout=60, env={"PATH": os.environ["PATH"], "LC_ALL": "C"})


def test_the_core_image_goes_where_sfdisk_says_the_bios_boot_partition_is(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    _disk(disk, f"start=2048, size=4096, type={ESP}, name=EFI\nstart=6144, size=2048, type={BIOS_BOOT}, name=BIOS\n")
    boot, core = _grub(tmp_path / "grub")
    before = disk.read_bytes()
    done = _install(disk, tmp_path / "grub")
    assert done.returncode == 0, done.stderr
    after = disk.read_bytes()
    placed = after[6144 * 512:6147 * 512]
    assert struct.unpack_from("<QHH", placed, 512 - 12) == (6145, 2, 0x820)  # the rest follows the first sector
    assert placed[:500] == core[:500] and placed[512:] == core[512:]
    assert struct.unpack_from("<Q", after, 0x5C)[0] == 6144  # the boot sector finds the core image
    assert after[0:3] == boot[0:3] and after[0x5A:0x5C] == boot[0x5A:0x5C] and after[0x64:0x1B8] == boot[0x64:0x1B8]
    assert after[0x1B8:512] == before[0x1B8:512]  # disk signature, protective partition entry, 55aa
    assert after[3:0x5A] == before[3:0x5A]
    assert after[512:6144 * 512] == before[512:6144 * 512] and after[6147 * 512:] == before[6147 * 512:]
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, text=True,
                                      check=True, timeout=60).stdout)["partitiontable"]
    assert [p["name"] for p in table["partitions"]] == ["EFI", "BIOS"]  # the GPT is whole


def test_a_disk_without_a_bios_boot_partition_is_one_error_and_unchanged(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    _disk(disk, f"start=2048, size=4096, type={ESP}, name=EFI\n")
    _grub(tmp_path / "grub")
    before = disk.read_bytes()
    done = _install(disk, tmp_path / "grub")
    assert done.returncode == 1
    assert done.stderr.splitlines() == ["no BIOS boot partition",
                                        f"##builder-error## could not install GRUB's BIOS boot code into {disk}"]
    assert disk.read_bytes() == before


def test_a_file_with_no_partition_table_is_named(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    _blank(disk, 1 << 20)
    _grub(tmp_path / "grub")
    done = _install(disk, tmp_path / "grub")
    assert done.returncode == 1
    assert f"##builder-error## sfdisk cannot read the partition table of {disk}" in done.stderr
