"""Choosing target platforms, and the names each tool knows them by."""

from __future__ import annotations

import os

import pytest

from builder.core import platforms
from builder.core.errors import BuildError
from builder.core.platforms import AMD64, ARM64, PLATFORMS, host_platform, parse_platforms


def test_a_docker_platform_name_selects_that_platform() -> None:
    assert parse_platforms("linux/amd64") == [AMD64]
    assert parse_platforms("linux/arm64") == [ARM64]


@pytest.mark.parametrize("alias", ["arm64", "aarch64", "linux/aarch64", "linux/arm64"])
def test_arm64_can_be_named_by_any_of_its_arch_names(alias: str) -> None:
    assert parse_platforms(alias) == [ARM64]


@pytest.mark.parametrize("alias", ["amd64", "x86_64", "linux/x86_64", "linux/amd64"])
def test_amd64_can_be_named_by_any_of_its_arch_names(alias: str) -> None:
    assert parse_platforms(alias) == [AMD64]


def test_a_comma_list_keeps_its_order_and_ignores_spaces_and_empty_items() -> None:
    assert parse_platforms("linux/arm64, linux/amd64,") == [ARM64, AMD64]


def test_a_platform_given_twice_under_different_names_is_built_once() -> None:
    assert parse_platforms("amd64,linux/amd64,x86_64,arm64,aarch64") == [AMD64, ARM64]


def test_an_unknown_platform_is_an_error_naming_it_and_listing_the_known_ones() -> None:
    with pytest.raises(BuildError) as info:
        parse_platforms("linux/amd64,linux/riscv64")
    text = str(info.value)
    assert text.startswith("PLATFORM: ")
    assert "'linux/riscv64'" in text
    for known in PLATFORMS:
        assert known in text


def test_the_error_names_where_the_platform_list_came_from() -> None:
    with pytest.raises(BuildError, match=r"^--platform: unknown platform 'mips'"):
        parse_platforms("mips", source="--platform")


def test_an_empty_platform_list_is_an_error() -> None:
    with pytest.raises(BuildError, match="no platform given"):
        parse_platforms(" , ")


def test_amd64_is_x86_64_to_gnu_and_x86_to_kbuild() -> None:
    assert (AMD64.docker, AMD64.arch, AMD64.carch, AMD64.kernel_arch) == ("linux/amd64", "amd64", "x86_64", "x86")
    assert AMD64.gnu_triplet == "x86_64-linux-gnu"
    assert AMD64.kernel_image == "arch/x86/boot/bzImage"


def test_arm64_is_aarch64_to_gnu_and_arm64_to_kbuild() -> None:
    assert (ARM64.docker, ARM64.arch, ARM64.carch, ARM64.kernel_arch) == ("linux/arm64", "arm64", "aarch64", "arm64")
    assert ARM64.gnu_triplet == "aarch64-linux-gnu"
    assert ARM64.kernel_image == "arch/arm64/boot/Image"


def test_a_native_build_needs_no_cross_compile_prefix() -> None:
    assert AMD64.cross_compile(AMD64) == ""
    assert ARM64.cross_compile(ARM64) == ""


def test_arm64_on_an_amd64_host_cross_compiles_with_the_aarch64_gnu_prefix() -> None:
    assert ARM64.cross_compile(AMD64) == "aarch64-linux-gnu-"
    assert AMD64.cross_compile(ARM64) == "x86_64-linux-gnu-"


def test_platform_variables_describe_the_target_and_the_build_host() -> None:
    assert ARM64.variables(AMD64) == {
        "PLATFORM": "linux/arm64",
        "ARCH": "arm64",
        "CARCH": "aarch64",
        "KERNEL_ARCH": "arm64",
        "KERNEL_IMAGE": "arch/arm64/boot/Image",
        "KERNEL_TARGET": "Image",
        "CROSS_COMPILE": "aarch64-linux-gnu-",
        "BUILD_ARCH": "amd64",
        "BUILD_CARCH": "x86_64",
    }
    assert AMD64.variables(AMD64)["KERNEL_TARGET"] == "bzImage"
    assert AMD64.variables(AMD64)["CROSS_COMPILE"] == ""


@pytest.mark.parametrize(("machine", "expected"), [("x86_64", AMD64), ("aarch64", ARM64), ("arm64", ARM64)])
def test_the_host_platform_follows_what_uname_reports(machine: str, expected: platforms.Platform) -> None:
    assert host_platform(machine) == expected


def test_this_machines_platform_is_what_uname_says() -> None:
    assert host_platform() == host_platform(os.uname().machine)


def test_an_unsupported_build_host_is_an_error_naming_its_architecture() -> None:
    with pytest.raises(BuildError, match="unsupported build host architecture 'riscv64'"):
        host_platform("riscv64")
