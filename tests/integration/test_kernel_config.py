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


def test_a_fragment_that_drifts_fails_before_compiling_with_a_report_by_kind(project: Path) -> None:
    fragment = project / "kernel-configs" / "fragments" / "zz-drift.config"
    fragment.write_text("CONFIG_NOT_A_REAL_SYMBOL=y\nCONFIG_DRM_I915=m\n")
    try:
        result = doit(project, "kernel", "PLATFORM=linux/amd64", timeout=1800)
    finally:
        fragment.unlink()
    assert result.code != 0
    report = ".builder/reports/kernel-amd64/kconfig-drift.txt"
    assert result.last_line() == (
        "error: kernel:amd64: kernel-configs/config-amd64 with its fragments: Kconfig drift: 1 not in this kernel, "
        "1 dependency unmet; first: CONFIG_NOT_A_REAL_SYMBOL=y (kernel-configs/fragments/zz-drift.config:1): "
        "not in this kernel (fix the lines named, or normalize the config: doit kernel-olddefconfig "
        f"PLATFORM=linux/amd64) (report: {report})"), result.text[-3000:]
    text = (project / report).read_text()
    assert "## not in this kernel" in text and "## dependency unmet" in text
    unmet = next(line for line in text.splitlines() if "CONFIG_DRM_I915=m" in line)
    assert "kernel-configs/fragments/zz-drift.config:2" in unmet and "depends on (DRM)" in unmet and "DRM=n" in unmet
    assert not (project / "out").exists()
    assert "kernel:amd64: [kernel-build 7/9] build" not in result.text  # stopped before the compile step


def test_a_flavor_that_drifts_names_its_file_and_what_kconfig_chose(project: Path) -> None:
    flavor = project / "kernel-configs" / "flavors" / "broken.config"
    flavor.write_text("# on x86 the generic PCI host needs OF (device tree)\nCONFIG_PCI_HOST_GENERIC=y\n")
    try:
        result = doit(project, "kernel", "PLATFORM=linux/amd64", "FLAVOR=broken", timeout=1800)
    finally:
        flavor.unlink()
    assert result.code != 0
    assert result.last_line() == (
        "error: kernel:amd64-broken: flavor broken: Kconfig drift: 1 dependency unmet; first: "
        "CONFIG_PCI_HOST_GENERIC=y (kernel-configs/flavors/broken.config:2  depends on (OF)  [OF=n]): dependency unmet "
        "(fix kernel-configs/flavors/broken.config) (report: .builder/reports/kernel-amd64-broken/kconfig-drift.txt)"
    ), result.text[-3000:]



def _on_a_terminal(cwd: Path, argv: list[str], keys: list[tuple[str, bytes]], timeout: float = 900) -> tuple[int, str]:
    """Run ``argv`` on a pseudo-terminal (120x40), and each time the screen shows a key's text, type its bytes.
    (exit status, everything the terminal showed, escape sequences stripped)."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import sys
    import termios
    import time

    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, on the terminal
        os.chdir(cwd)
        os.execvp(sys.executable, [sys.executable, "-m", *argv])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    shown, seen, deadline = b"", 0, time.monotonic() + timeout
    pending = list(keys)
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                shown += chunk
            plain = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\x1b[=>]", b"", shown)
            if pending and pending[0][0].encode() in plain[seen:]:
                seen = plain.index(pending[0][0].encode(), seen) + 1
                time.sleep(1)  # let the screen settle: ncurses reads an ESC alone only after a pause
                for byte in pending.pop(0)[1]:
                    os.write(fd, bytes([byte]))
                    time.sleep(0.3)
        else:
            os.kill(pid, 9)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\x1b[=>]", b"", shown).decode(errors="replace")
    return os.waitstatus_to_exitcode(status), text


def test_menuconfig_left_without_saving_writes_nothing_back(project: Path) -> None:
    config = project / "kernel-configs" / "config-amd64"
    committed = config.read_text()
    code, shown = _on_a_terminal(project, ["doit", "kernel-menuconfig", "PLATFORM=linux/amd64"],
                                 [("Kernel Configuration", b"\x1b\x1b")])
    assert code == 0, shown[-3000:]
    assert "kernel-configs/config-amd64: not saved, nothing written back (kernel-menuconfig:amd64)" in shown
    assert config.read_text() == committed


def test_menuconfig_saved_writes_the_config_back(project: Path) -> None:
    config = project / "kernel-configs" / "config-amd64"
    committed = config.read_text()
    keys = [("Kernel Configuration", b"/"),  # search
            ("Search Configuration Parameter", b"LOCALVERSION_AUTO\r"),
            ("Symbol: LOCALVERSION_AUTO", b"1"),  # jump to it, in General setup
            ("lq General setup qk", b" "),  # toggle it
            ("] Automatically append version information", b"\x1b\x1b"),  # back to the search results
            ("Search Results", b"\x1b\x1b"),  # back to the main menu
            ("Kernel Configuration", b"\x1b\x1b"),  # leave
            ("Do you wish to save your new configuration?", b"\r")]  # Yes
    try:
        code, shown = _on_a_terminal(project, ["builder", "kernel-config", "menuconfig", "--platform", "linux/amd64"],
                                     keys)
        assert code == 0, shown[-3000:]
        assert "kernel-configs/config-amd64: written back by kernel-menuconfig:amd64" in shown, shown[-3000:]
        written = config.read_text()
        was = "# CONFIG_LOCALVERSION_AUTO is not set" in committed
        assert ("CONFIG_LOCALVERSION_AUTO=y" in written) == was, written
    finally:
        config.write_text(committed)
