"""Kernel config write-back, for real: make olddefconfig in the toolchain on the patched source. The
committed configs are normalized (the check passes for both arches); a hand edit that leaves one
unnormalized is named with its first differing line, and `doit kernel-olddefconfig` writes it back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import builder, copy_project, doit

pytestmark = [pytest.mark.build]
BOTH = "linux/amd64,linux/arm64"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("kernel-config") / "project")


def test_the_committed_configs_are_normalized(project: Path) -> None:
    result = builder(project, "kernel-config", "check", "--platform", BOTH, timeout=1200)
    assert result.code == 0, result.text[-3000:]
    for arch in ("amd64", "arm64"):
        assert f"kernel-configs/config-{arch}: unchanged (kernel-olddefconfig:{arch})" in result.text


def test_an_unnormalized_config_is_named_and_written_back(project: Path) -> None:
    config = project / "kernel-configs" / "config-arm64"
    committed = config.read_text()
    dropped = re.search(r"^# CONFIG_\w+ is not set$", committed, re.M)
    assert dropped is not None
    config.write_text(committed.replace(dropped.group(0) + "\n", "", 1))
    check = builder(project, "kernel-config", "check", "--platform", "linux/arm64", timeout=1200)
    assert check.code == 1, check.text[-3000:]
    assert check.last_line() == (f"error: kernel-configs/config-arm64 differs from what kernel-olddefconfig:arm64 "
                                 f"makes of it: 1 line(s) change, first: +{dropped.group(0)} (write it back: doit "
                                 f"kernel-olddefconfig PLATFORM=linux/arm64)")
    written = doit(project, "kernel-olddefconfig", "PLATFORM=linux/arm64", timeout=1200)
    assert written.code == 0, written.text[-3000:]
    assert "kernel-configs/config-arm64: written back by kernel-olddefconfig:arm64" in written.text
    assert config.read_text() == committed
    again = doit(project, "kernel-olddefconfig", "PLATFORM=linux/arm64", timeout=1200)
    assert "kernel-configs/config-arm64: unchanged" in again.text
