"""The media module (builder/scripts/media.py) on the host, loaded from its file as the IMAGER image runs it:
without the framework. Its pure parts are tested here; the media it makes are booted by
tests/integration/test_boot_media.py.

The GRUB BIOS install runs on a real disk file made by sfdisk: the core image lands in the BIOS boot
partition with its block list pointing after its first sector, and the MBR gets GRUB's code while keeping
its partition table."""

from __future__ import annotations

import ast
import importlib.util
import json
import lzma
import os
import struct
import subprocess
import sys
import uuid
from importlib import resources
from pathlib import Path
from types import ModuleType

import pytest

MODULE = Path(str(resources.files("builder").joinpath("scripts/media.py")))
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("media_under_test", MODULE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


media = _load()


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", str(MODULE), *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], **(env if env is not None else {"SOURCE_DATE_EPOCH": "1"})})


def test_the_module_needs_nothing_but_the_standard_library() -> None:
    tree = ast.parse(MODULE.read_text())
    names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert names - {"__future__"} <= set(sys.stdlib_module_names), names - set(sys.stdlib_module_names)


def _medium(**changes: object) -> object:
    fields = {"name": "metal-amd64", "arch": "amd64", "cmdline": "console=ttyS0", "kernel": Path("k"),
              "initramfs": Path("i"), "epoch": 1700000000, **changes}
    return media.Medium(**fields)


def test_identifiers_are_rfc_4122_uuids_derived_from_the_medium_never_random() -> None:
    first = _medium().uuid("disk")
    parsed = uuid.UUID(first)
    assert parsed.version == 5 and parsed.variant == uuid.RFC_4122
    assert _medium().uuid("disk") == first
    assert len({first, _medium().uuid("part-EFI"), _medium(epoch=1).uuid("disk"), _medium(name="x").uuid("disk")}) == 4


def test_the_grub_menu_quotes_each_word_for_grub_and_drives_the_serial_port_on_amd64() -> None:
    cfg = _medium(cmdline="console=ttyS0 a='b'").grub_cfg()
    assert "  linux /boot/vmlinuz 'console=ttyS0' 'a='\\''b'\\'''\n" in cfg
    assert "serial --unit=0 --speed=115200\n" in cfg
    assert "serial" not in _medium(arch="arm64").grub_cfg().replace(_medium(arch="arm64").tag, "")
    assert _medium(name="metal-arm64-qemu-uboot").volume_id == "METAL_ARM64_QEMU_UBOOT"


def _disk(path: Path, partitions: str) -> None:
    _blank(path, 8 << 20)
    subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(path)], check=True, timeout=60,
                   input=f"label: gpt\nunit: sectors\n{partitions}", text=True, capture_output=True)


def _blank(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def _grub(lib: Path, sectors: int = 3, says: int = 2) -> tuple[Path, Path]:
    """A stand-in for GRUB's boot.img and a core.img of ``sectors`` sectors whose block list says ``says``."""
    lib.mkdir(parents=True)
    core = bytearray(b"\xc0" * sectors * 512)
    struct.pack_into("<QHH", core, 512 - 12, 0, says, 0x820)
    (lib / "boot.img").write_bytes(bytes(range(256)) * 2)
    (lib / "core.img").write_bytes(core)
    return lib / "core.img", lib / "boot.img"


def test_the_core_image_goes_into_the_bios_boot_partition_and_the_mbr_keeps_its_table(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    _disk(disk, f"start=2048, size=4096, type={ESP}, name=EFI\nstart=6144, size=2048, type={BIOS_BOOT}, name=BIOS\n")
    core_path, boot_path = _grub(tmp_path / "grub")
    core, boot = core_path.read_bytes(), boot_path.read_bytes()
    before = disk.read_bytes()
    media.bios_install(disk, core_path, boot_path, 6144, 8191)
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


@pytest.mark.parametrize("sectors, says, message", [
    (5, 4, "GRUB's core image (2560 bytes) does not fit the BIOS boot partition"),
    (3, 7, "unexpected GRUB core image: its block list says 7 sectors, not 2"),
])
def test_a_core_image_that_does_not_fit_or_is_not_grubs_is_one_error_and_the_disk_is_unchanged(
        tmp_path: Path, sectors: int, says: int, message: str) -> None:
    disk = tmp_path / "disk.raw"
    _disk(disk, f"start=2048, size=4, type={BIOS_BOOT}, name=BIOS\n")
    core, boot = _grub(tmp_path / "grub", sectors, says)
    before = disk.read_bytes()
    with pytest.raises(media.MediaError, match=f"^{message.replace('(', '.').replace(')', '.')}$"):
        media.bios_install(disk, core, boot, 2048, 2051)
    assert disk.read_bytes() == before


def _vhd(path: Path, stamp: int = 12345) -> None:
    footer = bytearray(512)
    footer[:8] = b"conectix"
    struct.pack_into(">I", footer, 24, stamp)
    footer[68:84] = os.urandom(16)
    struct.pack_into(">I", footer, 64, ~sum(footer) & 0xFFFFFFFF)
    path.write_bytes(b"\x01" * 4096 + bytes(footer))


def test_the_vhd_footer_carries_source_date_epoch_a_derived_id_and_a_valid_checksum(tmp_path: Path) -> None:
    path = tmp_path / "disk.vhd"
    _vhd(path)
    unique = uuid.UUID(_medium().uuid("vhd")).bytes
    media.vhd_footer(path, 1700000000, unique)
    data = path.read_bytes()
    footer = bytearray(data[-512:])
    assert data[:4096] == b"\x01" * 4096
    assert struct.unpack_from(">I", footer, 24)[0] == 1700000000 - 946684800
    assert bytes(footer[68:84]) == unique
    checksum = struct.unpack_from(">I", footer, 64)[0]
    struct.pack_into(">I", footer, 64, 0)
    assert checksum == ~sum(footer) & 0xFFFFFFFF
    path.write_bytes(b"\x00" * 1024)
    with pytest.raises(media.MediaError, match="^disk.vhd: no VHD footer$"):
        media.vhd_footer(path, 1, unique)


def test_meta_is_written_twice_the_second_copy_first_and_a_copy_too_large_is_refused(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    _blank(disk, 4 << 20)
    media.write_meta(disk, b"META", 1 << 20, 1 << 20)
    data = disk.read_bytes()
    assert data[1 << 20:(1 << 20) + 4] == b"META" and data[(3 << 19):(3 << 19) + 4] == b"META"
    assert data.count(b"META") == 2
    with pytest.raises(media.MediaError, match="^META does not fit half the META partition$"):
        media.write_meta(disk, b"x" * ((1 << 19) + 1), 1 << 20, 1 << 20)


def test_writing_the_efi_partition_leaves_its_zero_mebibytes_as_holes(tmp_path: Path) -> None:
    disk, fat = tmp_path / "disk.raw", tmp_path / "efi.fat"
    _blank(disk, 8 << 20)
    fat.write_bytes(b"\x07" * 100 + bytes((3 << 20) - 100) + b"\x08")
    media.write_at(disk, fat, 1 << 20)
    data = disk.read_bytes()
    assert data[1 << 20:(1 << 20) + 3 * (1 << 20) + 1] == fat.read_bytes() and len(data) == 8 << 20
    assert disk.stat().st_blocks * 512 <= (1 << 20) + 8192  # the first MiB and the last byte: the zeros are holes


TABLE = {"profiles": [
    {"name": "kernel", "platform": "metal", "kind": "kernel", "arch": ["amd64"], "outputs": {"amd64": "vmlinuz-amd64"}},
    {"name": "kernel-xz", "platform": "metal", "kind": "kernel", "arch": ["amd64"], "compression": "xz",
     "outputs": {"amd64": "vmlinuz-amd64.xz"}},
    {"name": "cmdline", "platform": "metal", "kind": "cmdline", "arch": ["amd64", "arm64"],
     "outputs": {"amd64": "cmdline-metal-amd64", "arm64": "cmdline-metal-arm64"}, "extra_kernel_args": ["p=1"]},
    {"name": "iso", "platform": "metal", "kind": "iso", "arch": ["amd64", "arm64"],
     "outputs": {"amd64": "metal-amd64.iso", "arm64": "metal-arm64.iso"}, "meta": {"0x0a": "net"}},
    {"name": "metal", "platform": "metal", "kind": "disk", "arch": ["amd64"], "outputs": {"amd64": "metal-amd64.raw"}},
    {"name": "uboot", "platform": "metal", "kind": "disk", "arch": ["arm64"], "overlay": "b",
     "outputs": {"arm64": "metal-arm64-b.raw"},
     "assets": [{"source": "/nonexistent/u-boot.bin", "what": "overlays/b/overlay.yaml: assets.0",
                 "out": {"arm64": "metal-arm64-b-u-boot.bin"}}]},
]}


def _imager(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    table = tmp_path / "media.json"
    if not table.exists():
        table.write_text(json.dumps(TABLE))
    return _run(*args, "--table", str(table), "--output", str(tmp_path / "out"), env=env)


def test_a_kernel_profile_publishes_the_file_whole_or_compressed_with_pinned_settings(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel" * 1000)
    out = tmp_path / "out"
    for profile in ("kernel", "kernel-xz"):
        done = _imager(tmp_path, profile, "--arch", "amd64", "--kernel", str(kernel))
        assert done.returncode == 0, done.stderr
    assert (out / "vmlinuz-amd64").read_bytes() == kernel.read_bytes()
    assert lzma.decompress((out / "vmlinuz-amd64.xz").read_bytes()) == kernel.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["vmlinuz-amd64", "vmlinuz-amd64.xz"]  # no temporary left
    assert (out / "vmlinuz-amd64").stat().st_mode & 0o777 == 0o644


def test_the_command_line_is_composed_by_the_module_from_the_profile_and_the_arguments(tmp_path: Path) -> None:
    done = _imager(tmp_path, "cmdline", "--arch", "arm64", "--extra-kernel-arg", "q=2", "--extra-kernel-arg", "r")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "cmdline-metal-arm64").read_text() == (
        "console=tty0 console=ttyAMA0 module.sig_enforce=1 builder.platform=metal p=1 q=2 r\n")


def test_a_kind_means_the_profile_of_that_kind_for_the_platform_without_an_overlay() -> None:
    entries = media.parse_table(TABLE, "t")
    assert media.choose(entries, media.Request("disk", platform="metal")).name == "metal"
    assert media.choose(entries, media.Request("uboot")).name == "uboot"
    with pytest.raises(media.MediaError, match="^no disk profile for platform aws; the profiles are: cmdline, iso, "):
        media.choose(entries, media.Request("disk", platform="aws"))
    with pytest.raises(media.MediaError, match="^profile uboot is for platform metal, not aws$"):
        media.choose(entries, media.Request("uboot", platform="aws"))


def test_the_command_lines_meta_goes_over_the_profiles_per_key() -> None:
    (iso,) = [e for e in media.parse_table(TABLE, "t") if e.name == "iso"]
    assert media.merged_meta(iso, ["0x0b=x", "0xa=mine"]) == {0x0A: b"mine", 0x0B: b"x"}
    assert media.merged_meta(iso, []) == {0x0A: b"net"}


@pytest.mark.parametrize("args, env, message", [
    (["kernel", "--arch", "amd64", "--kernel", "/nonexistent/vmlinuz"], None, "/nonexistent/vmlinuz does not exist"),
    (["iso", "--arch", "amd64", "--kernel", "/nonexistent/k", "--initramfs", "K"], None,
     "/nonexistent/k does not exist"),
    (["cmdline", "--arch", "amd64"], {}, "SOURCE_DATE_EPOCH is ''; expected a whole number of seconds up to "
     "253402300799 (9999-12-31)"),
    (["cmdline", "--arch", "amd64"], {"SOURCE_DATE_EPOCH": "99999999999999999999"},
     "SOURCE_DATE_EPOCH is '99999999999999999999'; expected a whole number of seconds up to 253402300799 "
     "(9999-12-31)"),
    (["uboot", "--arch", "arm64", "--kernel", "K", "--initramfs", "K"], None,
     "overlays/b/overlay.yaml: assets.0: /nonexistent/u-boot.bin does not exist"),
    (["kernel", "--arch", "arm64"], None, "profile kernel is for amd64, not arm64"),
    (["nosuch", "--arch", "amd64"], None,
     "no profile 'nosuch'; the profiles are: cmdline, iso, kernel, kernel-xz, metal, uboot"),
    (["iso", "--arch", "amd64", "--meta", "0x100=x"], None, "META key 0x100 is outside 0x00-0xff"),
    (["iso", "--arch", "amd64", "--meta", "novalue"], None, "--meta 'novalue': expected KEY=VALUE, e.g. 0x0a=VALUE"),
    (["cmdline", "--arch", "amd64", "--extra-kernel-arg", 'a="b c"'], None,
     "'a=\"b c\"' is not one word; give each argument on its own"),
    (["cmdline", "--arch", "amd64", "--extra-kernel-arg", "x" * 2100], None,
     "the kernel command line would be 2175 bytes; the kernel takes at most 2047"),
])
def test_bad_input_is_one_error_line_the_framework_shows_and_nothing_is_published(
        tmp_path: Path, args: list[str], env: dict[str, str] | None, message: str) -> None:
    (tmp_path / "K").write_bytes(b"k")
    args = [str(tmp_path / a) if a == "K" else a for a in args]
    done = _imager(tmp_path, *args, env=env)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"##builder-error## {message}"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("table, message", [
    ("{", "not a profile table (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
    ('{"profiles": [{"name": "x"}]}', "profiles.0: not a profile entry (KeyError: 'platform')"),
    ('{"profiles": [{"name": "x", "platform": "p", "kind": "tar", "arch": [], "outputs": {}}]}',
     "profiles.0: kind 'tar'; expected one of iso, disk, kernel, initramfs, cmdline"),
])
def test_a_table_that_is_not_one_is_named(tmp_path: Path, table: str, message: str) -> None:
    (tmp_path / "media.json").write_text(table)
    done = _imager(tmp_path, "iso", "--arch", "amd64")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"##builder-error## {tmp_path / 'media.json'}: {message}"]


@pytest.mark.parametrize("args, message", [
    (["install", "--arch", "amd64"], "install: give the disk to write: --disk FILE"),
    (["install", "--arch", "amd64", "--disk", "OUT/d.raw", "--size", "50MiB"],
     "OUT/d.raw: 50 MiB is too small; the disk layout needs at least 104 MiB"),
    (["install", "--arch", "amd64", "--disk", "SMALL", "--size", "1GiB"],
     "SMALL is 200 MiB, smaller than --size 1024 MiB"),
    (["install", "--arch", "amd64", "--disk", "OUT/d.raw", "--size", "lots"],
     "--size 'lots': expected MiB, GiB or TiB, e.g. 1GiB"),
    (["install", "--arch", "amd64", "--disk", "OUT"], "OUT is not a file"),
    (["install", "--arch", "amd64", "--disk", "/dev/null"], "/dev/null is not a file"),
    (["install", "--arch", "arm64", "--disk", "OUT/d.raw"], "profile metal is for amd64, not arm64"),
    (["iso", "--arch", "amd64", "--disk", "OUT/d.raw"], "--disk and --size are for install, not iso"),
    (["install", "--arch", "amd64", "--disk", "OUT/d.raw", "--size", "99999999TiB"], "--size 99999999TiB is more "
     "than 2 TiB"),
    (["install", "--arch", "amd64", "--disk", "OUT/nodir/d.raw"], "OUT/nodir/d.raw: its directory OUT/nodir does not "
     "exist"),
])
def test_an_install_that_cannot_be_done_is_one_line_before_anything_is_written(
        tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    small = tmp_path / "small.raw"
    _blank(small, 200 << 20)
    names = {"OUT": str(out), "SMALL": str(small)}
    args = [names.get(a, a.replace("OUT/", f"{out}/")) for a in args]
    message = message.replace("OUT/", f"{out}/").replace("OUT ", f"{out} ").replace("SMALL", str(small))
    done = _imager(tmp_path, *args)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"##builder-error## {message}"]
    assert list(out.iterdir()) == [] and small.stat().st_size == 200 << 20


def test_sizes_are_mebibytes_gibibytes_or_tebibytes() -> None:
    assert [media.parse_size(t) for t in ("512MiB", "1GiB", "2G", "1024", " 3 gib ")] == [512, 1024, 2048, 1024, 3072]


def test_the_hosts_copies_of_the_modules_constants_agree_with_it() -> None:
    """The host keeps two of the module's facts as literals, so that a no-op (which imports model and core,
    not the module) stays cheap: each must be the module's."""
    from builder.core.platforms import AMD64, ARM64
    from builder.model import meta

    assert {p.arch: p.console for p in (AMD64, ARM64)} == media.CONSOLES
    assert meta.COPY_BYTES == media.META_COPY_BYTES and meta.PARTITION_BYTES == media.META_MIB * media.MIB


def test_a_file_is_published_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    made = tmp_path / "made"
    made.write_bytes(b"x" * 1000)
    with pytest.raises(media.MediaError):
        media.publish(made, out / "a.xz", "lzip")
    with pytest.raises(media.MediaError, match="could not make a.xz"):  # a compressor that fails midway
        media.COMPRESSORS["broken"] = ["sh", "-c", "head -c 10; exit 3"]
        try:
            media.publish(made, out / "a.xz", "broken")
        finally:
            del media.COMPRESSORS["broken"]
    assert list(out.iterdir()) == []  # no .part left


def test_only_the_data_of_a_sparse_layout_is_copied(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.write(b"a" * 4096)
        f.seek(100 << 20)
        f.write(b"b" * 4096)
        f.truncate(200 << 20)
    with open(path, "rb") as f:
        extents = media.data_extents(f.fileno(), 200 << 20)
    assert sum(end - start for start, end in extents) < 2 << 20  # the holes are not read
    assert extents[0][0] == 0 and any(start <= 100 << 20 < end for start, end in extents)


def test_a_meta_key_is_written_in_ascii_digits_or_hex() -> None:
    assert media.meta_key("0x0a") == 10 and media.meta_key("12") == 12 and media.meta_key(7) == 7
    for key in ("١٢", "0x٠a", "-1", "0x100"):
        with pytest.raises(media.MediaError):
            media.meta_key(key)
