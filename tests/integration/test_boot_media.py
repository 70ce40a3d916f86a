"""Boot media from the shipped profiles (profiles/*.yaml), as a user makes them: `doit images` for both
arches, each medium booted from the built file through its firmware (SeaBIOS, OVMF, AAVMF) in QEMU, its
marker showing the release, the machine, the platform, an extra kernel argument and the META 0x0a value."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from builder.core.platforms import AMD64, ARM64, Platform
from builder.host import qemu
from builder.resolve.project import Project

from .conftest import BOTH, MEDIA_OUTPUTS, MEDIA_WORDS, Built, builder, doit, kernel_release, sums

pytestmark = [pytest.mark.build]


def test_images_builds_every_shipped_profile_for_both_arches(media: Built) -> None:
    assert set(MEDIA_OUTPUTS) <= set(sums(media.out))
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=media.out, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "azure-arm64.vhd.xz" not in sums(media.out)  # the azure profile is amd64 only
    cmdline = (media.out / "cmdline-metal-arm64").read_text().split()
    assert cmdline[:4] == ["console=tty0", "console=ttyAMA0", "module.sig_enforce=1", "builder.platform=metal"]
    assert "builder.test=extra-arg" in cmdline


def test_the_vhd_is_a_fixed_vhd_whose_footer_carries_no_build_time(media: Built, tmp_path: Path) -> None:
    plain = tmp_path / "azure.vhd"
    subprocess.run(f"xz -dc {media.out / 'azure-amd64.vhd.xz'} > {plain}", shell=True, check=True)
    footer = plain.read_bytes()[-512:]
    assert footer[:8] == b"conectix" and int.from_bytes(footer[60:64], "big") == 2  # fixed disk
    assert int.from_bytes(footer[48:56], "big") == 512 * 1024 * 1024  # the profile's size, exactly
    assert int.from_bytes(footer[24:28], "big") == 1735689600 - 946684800  # SOURCE_DATE_EPOCH, VHD-based
    info = subprocess.run(["qemu-img", "info", "-f", "vpc", str(plain)], capture_output=True, text=True)
    assert info.returncode == 0 and "virtual size: 512 MiB" in info.stdout, info.stdout + info.stderr


BOOTS = [
    ("metal-amd64.iso", AMD64, "bios", "cdrom"),
    ("metal-amd64.iso", AMD64, "uefi", "cdrom"),
    ("metal-amd64.iso", AMD64, "bios", "disk"),  # hybrid: the same file as a USB stick
    ("metal-amd64.iso", AMD64, "uefi", "disk"),
    ("metal-arm64.iso", ARM64, "uefi", "cdrom"),
    ("metal-arm64.iso", ARM64, "uefi", "disk"),
    ("metal-amd64.raw.zst", AMD64, "bios", "disk"),
    ("metal-amd64.raw.zst", AMD64, "uefi", "disk"),
    ("qemu-arm64.qcow2", ARM64, "uefi", "disk"),
    ("azure-amd64.vhd.xz", AMD64, "uefi", "disk"),
    ("metal-arm64-qemu-uboot.raw.zst", ARM64, "u-boot", "disk"),  # the overlay's U-Boot, beside the image
]


@pytest.mark.boot
@pytest.mark.parametrize("name, platform, firmware, medium", BOOTS,
                         ids=[f"{n}-{f}-{m}" for n, _, f, m in BOOTS])
def test_each_medium_boots_through_its_firmware_with_the_extra_arg_and_meta(
        media: Built, name: str, platform: Platform, firmware: str, medium: str) -> None:
    console = media.root / ".builder" / "logs" / f"boot-{name}-{firmware}-{medium}.log"
    result = qemu.boot_media(platform, media.out / name, firmware=firmware, cdrom=medium == "cdrom",
                             timeout=900, console=console)
    assert result.machine == platform.carch
    assert result.release == kernel_release(media.out / f"modules-{platform.arch}.tar")
    assert result.fields["platform"] == name.split("-")[0]
    assert "builder.test=extra-arg" in result.cmdline
    assert result.fields["meta.0xa"] == "network: test/1"  # from the META partition, or the ISO's command line
    assert "BUILDER-BOOT-OK" in result.console and "BUILDER-MODULE-FAILED" not in result.console
    assert ("INSTALLER_META_BASE64=" in " ".join(result.cmdline)) == name.endswith(".iso")
    if firmware == "u-boot":  # U-Boot's distro boot read the overlay's extlinux.conf from the EFI partition
        assert "U-Boot 20" in result.console and "Retrieving file: /extlinux/extlinux.conf" in result.console
        assert "earlycon" in result.cmdline  # the overlay's extra argument
    elif firmware == "uefi":  # OVMF's / AAVMF's boot manager started it
        assert "BdsDxe: loading Boot" in result.console and "SeaBIOS" not in result.console
    else:
        assert "SeaBIOS" in result.console and "BdsDxe" not in result.console


def test_builder_boot_boots_a_built_image_by_hand(media: Built) -> None:
    result = builder(media.root, "boot", "out/metal-amd64.raw.zst", "--firmware", "uefi")
    assert result.code == 0, result.text
    assert re.search(r"booted metal-amd64\.raw\.zst \(uefi\): release=\S+ machine=x86_64 platform=metal "
                     r"meta\.0xa=network: test/1", result.stdout), result.stdout


def test_builder_meta_reads_and_writes_the_meta_partition_of_a_built_disk(media: Built, tmp_path: Path) -> None:
    disk = tmp_path / "metal-amd64.raw"
    subprocess.run(f"zstd -dcq {media.out / 'metal-amd64.raw.zst'} > {disk}", shell=True, check=True)
    read = builder(media.root, "meta", "read", str(disk))
    assert read.code == 0 and read.stdout.strip() == "0x0a: network: test/1", read.text
    wrote = builder(media.root, "meta", "write", str(disk), "0x0a=changed", "0x0b=new")
    assert wrote.code == 0, wrote.text
    assert builder(media.root, "meta", "read", str(disk)).stdout.splitlines() == ["0x0a: changed", "0x0b: new"]
    result = qemu.boot_media(AMD64, disk, firmware="bios", timeout=600)
    assert result.fields["meta.0xa"] == "changed"


def test_a_second_run_builds_nothing_and_a_profile_edit_rebuilds_only_its_outputs(media: Built) -> None:
    again = doit(media.root, "images", BOTH, *MEDIA_WORDS)
    assert again.code == 0 and ".  " not in again.stdout, again.stdout
    before = sums(media.out)
    profile = media.root / "profiles" / "qemu.yaml"
    original = profile.read_text()
    profile.write_text(original.replace("size: 2GiB", "size: 3GiB"))
    try:
        edited = doit(media.root, "images", BOTH, *MEDIA_WORDS)
        assert edited.code == 0, edited.text[-3000:]
        ran = sorted(re.findall(r"^\.  (\S+)", edited.stdout, re.M))
        assert ran == ["image-qemu:amd64", "image-qemu:arm64"], edited.stdout
        after = sums(media.out)
        assert {n for n in after if after[n] != before.get(n)} == {"qemu-amd64.qcow2", "qemu-arm64.qcow2"}
    finally:
        profile.write_text(original)
    restored = doit(media.root, "images", BOTH, *MEDIA_WORDS)
    assert restored.code == 0 and sums(media.out) == before  # the same bytes as before the edit


def test_no_image_build_step_is_privileged_or_uses_a_loop_device_or_mount(media: Built) -> None:
    project = Project.load(media.root, dict(w.split("=", 1) for w in (BOTH, *MEDIA_WORDS)))
    privileged = re.compile(r"--privileged|security[=.]insecure|--device\b|--cap-add|/dev/loop|--allow\b", re.I)
    command = re.compile(r"(^|[;&|(`]|\s)(mount|umount|losetup|kpartx|partx|nsenter|modprobe|insmod)(\s|$)", re.M)
    checked = 0
    for plan in project.plans():
        if not plan.recipe.name.startswith("image-"):
            continue
        dockerfile = plan.context.dockerfile
        assert not privileged.search(dockerfile), (plan.label, privileged.search(dockerfile))
        # RUN mounts are BuildKit's own: the context (bind), a secret or a cache; never a device or host path
        assert set(re.findall(r"--mount=type=(\w+)", dockerfile)) <= {"bind", "secret", "cache"}, plan.label
        for path, item in plan.context.files.items():
            if item.data is None or not path.endswith(".sh"):
                continue
            code = "\n".join(line for line in item.data.decode().splitlines() if not line.lstrip().startswith("#"))
            assert not privileged.search(code) and not command.search(code), (plan.label, path)
        request = plan.request(Path("/ctx"), Path("/export"))
        for argv in project.services.buildkits.select("auto").commands(request):
            assert "--network=none" in argv and not privileged.search(" ".join(argv)), argv
        checked += 1
    assert checked == sum(len(p.arch) for p in project.profiles) == 10
