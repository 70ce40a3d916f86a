"""Profiles (profiles/*.yaml) -> typed objects -> one image recipe per platform; META encoding. Every
mistake is one line naming the file and line (or the command-line word)."""

from __future__ import annotations

import base64
import json
import shlex
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from builder.core.errors import BuildError, RecipeError
from builder.core.platforms import AMD64, ARM64
from builder.model import meta
from builder.model.profile import MIN_DISK_MIB, Profile, load_profile, load_profiles
from builder.model.recipe import Recipe
from builder.model.settings import Settings, doit_words
from builder.resolve.images import image_recipe, imager_recipe, kernel_cmdline, table_entry

from ..gpt import make_disk

METAL = """\
platform: metal
output:
  kind: disk
  format: raw
  compression: zstd
  size: 1GiB
customization:
  extraKernelArgs: [extra.arg=hello]
  meta:
    0xa: "net: config"
"""


OUTPUTS = {"kernel": ["vmlinuz-arm64", "config-arm64", "modules-arm64.tar"], "initramfs": ["initramfs-arm64.xz"]}


def load(tmp_path: Path, text: str, name: str = "metal") -> Profile:
    path = tmp_path / "profiles" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return load_profile(path, f"profiles/{name}.yaml")


def test_a_profile_is_parsed_once_into_typed_values(tmp_path: Path) -> None:
    profile = load(tmp_path, METAL)
    assert profile.name == "metal" and profile.arch == ["amd64", "arm64"]
    assert profile.output.size == 1024 and profile.output.compression == "zstd"
    assert profile.customization.meta == {0x0A: "net: config"}
    assert profile.output_name("amd64") == "metal-amd64.raw.zst"
    assert profile.output_name("arm64", "-debug") == "metal-arm64-debug.raw.zst"


@pytest.mark.parametrize("output, name", [
    ("{kind: iso}", "metal-amd64.iso"),
    ("{kind: disk, format: qcow2}", "metal-amd64.qcow2"),
    ("{kind: disk, format: vhd, compression: xz}", "metal-amd64.vhd.xz"),
    ("{kind: cmdline}", "cmdline-metal-amd64"),
    ("{kind: kernel}", "kernel-metal-amd64"),
    ("{kind: initramfs}", "initramfs-metal-amd64.xz"),
])
def test_outputs_have_talos_names(tmp_path: Path, output: str, name: str) -> None:
    assert load(tmp_path, f"platform: metal\noutput: {output}\n").output_name("amd64") == name


@pytest.mark.parametrize("text, line, message", [
    ("platform: metal\noutput:\n  kind: iso\n  formt: raw\n",
     4, "unknown key 'output.formt'; expected one of: kind, format, compression, size"),
    ("platform: metal\nmystery: 1\noutput: {kind: iso}\n", 2, "unknown key 'mystery'"),
    ("platform: metal\noutput:\n  kind: disk\n  size: 64MiB\n",
     4, f"output.size: 64MiB is too small: the disk layout needs at least {MIN_DISK_MIB} MiB"),
    ("platform: metal\noutput:\n  kind: disk\n  size: 999999TiB\n", 4, "output.size: 999999TiB is more than 2 TiB"),
    ("platform: metal\noutput:\n  kind: disk\n  size: lots\n", 4, "output.size: expected a size such as 2GiB"),
    ("platform: metal\noutput:\n  kind: tarball\n", 3, "output.kind: Input should be 'iso', 'disk'"),
    ("platform: metal\noutput:\n  kind: disk\n  format: vmdk\n", 4, "output.format: Input should be 'raw'"),
    ("platform: metal\noutput: {kind: iso, format: raw}\n", 2, "output: format: only a disk has a format"),
    ("platform: metal\narch: riscv64\noutput: {kind: iso}\n", 2, "arch.0: Input should be 'amd64' or 'arm64'"),
    ("platform: metal\nbootloader: lilo\noutput: {kind: iso}\n", 2, "bootloader: Input should be"),
    ("platform: metal\noutput: {kind: iso}\ncustomization:\n  meta: {0x100: x}\n",
     4, "customization.meta: META key 0x100 is outside 0x00-0xff"),
    ("platform: metal\noutput: {kind: iso}\ncustomization:\n  meta: {'0x0a': 5}\n",
     4, "customization.meta: META 0x0a: expected a string value (quote it)"),
    ("platform: metal\noutput: {kind: iso}\ncustomization:\n  meta: {0x0a: '" + "x" * 400_000 + "'}\n",
     4, "customization.meta: META is 533"),
    ("platform: metal\noutput: {kind: iso}\ncustomization: {extraKernelArgs: ['a b']}\n",
     3, "customization.extraKernelArgs: 'a b' is not one word"),
    ("platform: Metal!\noutput: {kind: iso}\n", 1, "platform: String should match pattern"),
    ("- a list\n", 1, "a profile must be a YAML mapping"),
    ("a: &x [1]\nb: *x\n", 2, "YAML alias *x is not supported"),
])
def test_bad_profiles_are_one_line_naming_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    with pytest.raises(RecipeError) as caught:
        load(tmp_path, text)
    shown = str(caught.value)
    assert shown.startswith(f"profiles/metal.yaml:{line}: ") and message in shown, shown
    assert "\n" not in shown


def test_two_profiles_making_one_file_is_an_error(tmp_path: Path) -> None:
    load(tmp_path, "platform: metal\noutput: {kind: iso}\n", "a")
    load(tmp_path, "platform: metal\narch: arm64\noutput: {kind: iso}\n", "b")
    with pytest.raises(RecipeError, match=r"profiles/b.yaml:1: out/metal-arm64.iso would be made by profiles/a.yaml"):
        load_profiles(tmp_path)


def _media_command(recipe: Recipe) -> tuple[list[str], dict[str, Any]]:
    """The media module's arguments in an image recipe's step (its last line: python3 -I MODULE ARGS...)
    and the one profile of the table the step writes."""
    script = recipe.steps[0].install[0].rstrip()
    words = shlex.split(script.splitlines()[-1])
    assert words[:3] == ["python3", "-I", "/tmp/media.py"]
    document = script.split("cat >/tmp/media.json <<'BUILDER_MEDIA'\n", 1)[1].split("\nBUILDER_MEDIA\n", 1)[0]
    (entry,) = json.loads(document)["profiles"]
    return words[3:], entry


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_a_profile_becomes_an_imager_recipe_taking_the_kernel_and_initramfs_as_artifacts(tmp_path: Path) -> None:
    profile = load(tmp_path, METAL)
    recipe = image_recipe(profile, ARM64, {"FLAVOR_SUFFIX": "", "EXTRA_KERNEL_ARGS": "more=1"}, {}, OUTPUTS)
    assert recipe.name == "image-metal" and recipe.variant == "imager"
    assert recipe.outputs == ["metal-arm64.raw.zst"]
    assert [(d.artifact, d.outputs) for d in recipe.dependencies] == [
        ("kernel", ["vmlinuz-arm64"]), ("initramfs", ["initramfs-arm64.xz"])]
    assert [f.src for f in recipe.files] == ["profiles/metal.yaml"]  # a profile edit rebuilds this image alone
    args, entry = _media_command(recipe)
    assert args[0] == "metal" and _option(args, "--arch") == "arm64" and _option(args, "--output") == "/out"
    assert _option(args, "--kernel") == "/artifacts/vmlinuz-arm64"
    assert _option(args, "--extra-kernel-arg") == "more=1"  # EXTRA_KERNEL_ARGS, after the profile's
    assert entry["extra_kernel_args"] == ["extra.arg=hello"] and entry["meta"] == {"0x0a": "net: config"}
    assert entry["outputs"] == {"amd64": "metal-amd64.raw.zst", "arm64": "metal-arm64.raw.zst"}
    assert (entry["kind"], entry["format"], entry["size_mib"], entry["compression"]) == ("disk", "raw", 1024, "zstd")
    assert kernel_cmdline(profile, ARM64, "more=1", {}) == (
        "console=tty0 console=ttyAMA0 module.sig_enforce=1 builder.platform=metal extra.arg=hello more=1")
    script = recipe.steps[0].install[0]
    assert resources.files("builder").joinpath("scripts/media.py").read_text().rstrip() in script  # carried in full
    for forbidden in ("losetup", "mount ", "--privileged", "/dev/loop"):
        assert forbidden not in script


def test_an_iso_carries_meta_on_the_command_line(tmp_path: Path) -> None:
    profile = load(tmp_path, "platform: metal\noutput: {kind: iso}\n")
    line = kernel_cmdline(profile, AMD64, "", {0x0A: b"net"})
    word = line.split()[-1]
    assert word.startswith("INSTALLER_META_BASE64=")
    assert meta.decode(base64.b64decode(word.split("=", 1)[1])) == {0x0A: b"net"}


@pytest.mark.parametrize("extra, message", [
    ('a="b c"', "has a '\"'"),
])
def test_bad_extra_kernel_args_are_one_line(tmp_path: Path, extra: str, message: str) -> None:
    profile = load(tmp_path, "platform: metal\noutput: {kind: iso}\n")
    with pytest.raises(RecipeError, match="command line: EXTRA_KERNEL_ARGS: .*" + message):
        kernel_cmdline(profile, AMD64, extra, {})


def test_a_command_line_too_long_for_the_kernel_is_an_error(tmp_path: Path) -> None:
    profile = load(tmp_path, "platform: metal\noutput: {kind: iso}\n")
    with pytest.raises(RecipeError, match="the kernel takes at most 2047"):
        kernel_cmdline(profile, AMD64, "x=" + "y" * 2100, {})


def test_meta_round_trips_and_a_damaged_copy_is_refused() -> None:
    values = {0x0A: b"net config\nline two", 0x00: b"", 0xFF: bytes(range(256))}
    copy = meta.encode(values)
    assert copy.startswith(b"BUILDER-META 1\n0x00 \n0x0a ")
    assert meta.decode(copy + b"\0" * 100) == values
    damaged = copy.replace(b"0x0a", b"0x0b")
    assert meta.decode(damaged) is None


def _gpt_with_meta(path: Path) -> None:
    """A GPT disk of 3 MiB with META as its first partition, at 1 MiB."""
    make_disk(path, 3, (("META", 1),))


def test_meta_is_written_twice_and_read_back_from_a_disk_image(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    _gpt_with_meta(disk)
    assert meta.read(disk) is meta.BLANK
    meta.write(disk, {0x0A: b"hello"})
    assert meta.read(disk) == {0x0A: b"hello"}
    raw = bytearray(disk.read_bytes())  # a torn first copy: the second one is read
    raw[1024 * 1024:1024 * 1024 + 4] = b"XXXX"
    disk.write_bytes(bytes(raw))
    assert meta.read(disk) == {0x0A: b"hello"}


def test_meta_words_on_the_command_line() -> None:
    words = doit_words(["images", "META=0x0a=a=b", "META=0xb=two", "META=0x0a=last"])
    assert Settings.parse(words).meta == {0x0A: "last", 0x0B: "two"}
    for bad, message in (("0x100=x", "outside 0x00-0xff"), ("hello", "expected 0xKEY=VALUE")):
        with pytest.raises(BuildError, match=message):
            Settings.parse({"META": bad})


def test_a_meta_file(tmp_path: Path) -> None:
    (tmp_path / "meta.yaml").write_text("0x0a: |\n  machine:\n    network: {}\n")
    assert Settings.parse({"META": str(tmp_path / "meta.yaml")}).meta == {0x0A: "machine:\n  network: {}\n"}


OVERLAY = """\
arch: [arm64]
bootloader: u-boot
extraKernelArgs: [earlycon]
assets:
  - imager: /usr/lib/u-boot/qemu_arm64/u-boot.bin
    to: firmware/u-boot.bin
  - file: board.dtb
    to: efi/dtb/board.dtb
profile:
  output: {kind: disk, compression: zstd, size: 256MiB}
"""


BOARD = "platform: metal\narch: arm64\noverlay: board\n"


def with_overlay(tmp_path: Path, overlay: str = OVERLAY, profile: str = BOARD,
                 files: tuple[str, ...] = ("board.dtb",)) -> Profile:
    (tmp_path / "overlays" / "board").mkdir(parents=True, exist_ok=True)
    (tmp_path / "overlays" / "board" / "overlay.yaml").write_text(overlay)
    for name in files:
        (tmp_path / "overlays" / "board" / name).write_text("asset\n")
    path = tmp_path / "profiles" / "board.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(profile)
    return load_profile(path, "profiles/board.yaml", tmp_path)


def test_an_overlay_brings_its_boot_loader_files_arguments_and_profile_defaults(tmp_path: Path) -> None:
    profile = with_overlay(tmp_path)
    assert profile.bootloader == "u-boot" and profile.output.size == 256 and profile.output.kind == "disk"
    assert profile.output_name("arm64") == "metal-arm64-board.raw.zst"
    assert [name for _, name in profile.firmware("arm64")] == ["metal-arm64-board-u-boot.bin"]
    recipe = image_recipe(profile, ARM64, {"FLAVOR_SUFFIX": ""}, {}, OUTPUTS)
    assert recipe.outputs == ["metal-arm64-board.raw.zst", "metal-arm64-board-u-boot.bin"]
    assert [f.src for f in recipe.files] == ["profiles/board.yaml", "overlays/board/overlay.yaml",
                                             "overlays/board/board.dtb"]  # the overlay is an input
    args, entry = _media_command(recipe)
    assert args[0] == "board" and "earlycon" in entry["extra_kernel_args"]
    assert entry["size_mib"] == 256 and entry["bootloader"] == "u-boot" and entry["overlay"] == "board"
    assert [(a["source"], a.get("efi"), a.get("out")) for a in entry["assets"]] == [
        ("/usr/lib/u-boot/qemu_arm64/u-boot.bin", None, {"arm64": "metal-arm64-board-u-boot.bin"}),
        ("overlays/board/board.dtb", "dtb/board.dtb", None)]


@pytest.mark.parametrize("overlay, profile, files, message", [
    (OVERLAY, "platform: metal\narch: arm64\noverlay: nosuch\n", ("board.dtb",),
     "profiles/board.yaml:3: no overlay 'nosuch' (overlays/nosuch/overlay.yaml)"),
    (OVERLAY, "platform: metal\narch: arm64\noverlay: board\n", (),
     "overlays/board/overlay.yaml:7: assets.1.file: overlays/board/board.dtb does not exist"),
    (OVERLAY, "platform: metal\narch: [amd64, arm64]\noverlay: board\n", ("board.dtb",),
     "profiles/board.yaml:2: overlay board serves arm64, not amd64"),
    (OVERLAY.replace("arch: [arm64]", "arch: [amd64, arm64]"), "platform: metal\noverlay: board\n", ("board.dtb",),
     "profiles/board.yaml:1: bootloader: u-boot does not boot amd64 (it boots arm64)"),
    (OVERLAY.replace("    to: firmware/u-boot.bin", "    to: firmware/../u-boot.bin"),
     "platform: metal\narch: arm64\noverlay: board\n", ("board.dtb",),
     "overlays/board/overlay.yaml:6: assets.0.to: expected efi/PATH"),
    (OVERLAY.replace("arch: [arm64]", "arch: [arm64]\nunknown: 1"), "platform: metal\narch: arm64\noverlay: board\n",
     ("board.dtb",), "overlays/board/overlay.yaml:2: unknown key 'unknown'"),
])
def test_bad_overlays_are_one_line(tmp_path: Path, overlay: str, profile: str, files: tuple[str, ...],
                                   message: str) -> None:
    with pytest.raises(RecipeError) as caught:
        with_overlay(tmp_path, overlay, profile, files)
    assert str(caught.value).startswith(message), str(caught.value)


def test_an_overlay_s_arches_are_the_profile_s_default(tmp_path: Path) -> None:
    assert with_overlay(tmp_path, profile="platform: metal\noverlay: board\n").arch == ["arm64"]


def test_u_boot_needs_an_overlay_and_a_disk(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="profiles/metal.yaml:3: bootloader: u-boot needs an overlay"):
        load(tmp_path, "platform: metal\narch: arm64\nbootloader: u-boot\noutput: {kind: disk}\n")
    with pytest.raises(RecipeError, match="u-boot boots disks"):
        load(tmp_path, "platform: metal\narch: arm64\nbootloader: u-boot\noutput: {kind: iso}\n")


def test_the_imager_image_carries_the_module_the_table_of_its_arch_and_the_boot_assets(tmp_path: Path) -> None:
    board = with_overlay(tmp_path)
    iso = load(tmp_path, "platform: metal\noutput: {kind: iso}\n", "iso")
    amd64_only = load(tmp_path, "platform: azure\narch: amd64\noutput: {kind: disk, format: vhd}\n", "azure")
    recipe = imager_recipe([board, iso, amd64_only], ARM64, {"FLAVOR_SUFFIX": ""}, OUTPUTS, "reg/builder/imager:v1")
    assert recipe.outputs == ["imager-arm64.tar"] and recipe.image is not None
    assert (recipe.image.base, recipe.image.name) == ("IMAGER", "reg/builder/imager:v1")
    assert recipe.image.entrypoint == ["python3", "-I", "/usr/lib/builder/media.py"]
    assert [(d.artifact, d.outputs) for d in recipe.dependencies] == [
        ("kernel", ["vmlinuz-arm64"]), ("initramfs", ["initramfs-arm64.xz"])]
    assert [(f.src, f.dest) for f in recipe.files] == [("overlays/board/board.dtb", "overlays/board/board.dtb")]
    script = recipe.steps[0].install[0]
    assert resources.files("builder").joinpath("scripts/media.py").read_text().rstrip() in script
    document = script.split("cat >/out/usr/lib/builder/media.json <<'BUILDER_MEDIA'\n", 1)[1].split(
        "\nBUILDER_MEDIA\n", 1)[0]
    entries = json.loads(document)["profiles"]
    assert [e["name"] for e in entries] == ["board", "iso"]  # azure is amd64 only: not in the arm64 imager
    assert all(e["arch"] == ["arm64"] and list(e["outputs"]) == ["arm64"] for e in entries)
    assert entries[1] == {**table_entry(iso), "arch": ["arm64"], "outputs": {"arm64": "metal-arm64.iso"}}
    assert "install -m 0644 /artifacts/vmlinuz-arm64 /out/usr/install/arm64/vmlinuz" in script
