"""setup.sh's Python step under the system python of stock Debian 12 and 13, in real chroots.

Debian's python3 is externally managed (PEP 668): `pip install` outside a virtual environment fails there.
For each release, mmdebstrap makes a minbase chroot with python3 (the mirror is this machine's, read from its
apt sources at run time, as the README's --simulate recipe does), the project (its git files) is copied in,
with this machine's /etc/pip.conf and the files it names (so that pip reaches its index), and in the chroot:

  1. without python3-venv, `./setup.sh --python-only` is one line naming python3-venv, and leaves no .venv;
  2. after `apt-get install python3-venv`, it makes .venv with the chroot's /usr/bin/python3, installs the
     package, links /usr/local/bin/doit and builder, and `doit list` (the README's `doit`, found on PATH)
     lists the kernel task;
  3. a second run reuses .venv and runs no pip;
  4. a .venv whose python no longer runs is made again;
  5. a /usr/local/bin/builder that is not a link into a .venv is named and left alone.

The chroot shares this machine's network (resolv.conf copied) and its /proc is mounted; everything under it
is unmounted and it is removed afterwards, also after a failure (never while something is still mounted).
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.model.aptsources import AptSources

from .conftest import ROOT

pytestmark = [pytest.mark.build]  # slow: about a minute or two per release, and the network

CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # Debian root's default
PROJECT = "/root/project"  # where the project lies in the chroot
MMDEBSTRAP_SECONDS = 600
APT_SECONDS = 300
SETUP_SECONDS = 900  # pip downloads the package's dependencies and dev tools
SHORT_SECONDS = 120


@pytest.fixture(scope="session", autouse=True)
def engine_and_toolchain() -> None:
    """Overrides conftest's: a chroot needs neither the engine nor the toolchain image."""


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def _mounts_under(root: Path) -> list[Path]:
    """Mount points at or under ``root``, deepest first (from /proc/self/mountinfo)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = Path(line.split()[4].encode().decode("unicode_escape"))
        if point == root or root in point.parents:
            found.append(point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


@pytest.fixture
def chroot_dir() -> Iterator[Path]:
    """An empty directory for a chroot; afterwards everything mounted under it is unmounted, then it is removed."""
    root = Path(tempfile.mkdtemp(prefix="builder-setup-chroot-", dir="/var/tmp"))
    try:
        yield root
    finally:
        for point in _mounts_under(root):
            subprocess.run(["umount", str(point)], capture_output=True, timeout=SHORT_SECONDS)
        for point in _mounts_under(root):  # busy: detach it, so it cannot be reached through the tree
            subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=SHORT_SECONDS)
        left = _mounts_under(root)
        assert not left, f"still mounted, so {root} is kept: {left}"
        shutil.rmtree(root)


def mmdebstrap(suite: str, root: Path, mirror: str) -> None:
    """A minbase chroot of ``suite`` with python3 and no python3-venv; apt's lists are kept for step 2."""
    done = subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", "--include=python3",
                           "--skip=cleanup/apt/lists", suite, str(root), mirror],
                          env={"PATH": CHROOT_PATH, "HOME": "/root", "LC_ALL": "C.UTF-8"}, capture_output=True,
                          text=True, timeout=MMDEBSTRAP_SECONDS, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"mmdebstrap {suite}: {done.stderr[-3000:]}"


def copy_project(root: Path) -> None:
    """The project's git files (tracked, and untracked ones not ignored) into ``root``/PROJECT."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True, timeout=SHORT_SECONDS).stdout
    dest = root / PROJECT.lstrip("/")
    for name in sorted(set(os.fsdecode(n) for n in listed.split(b"\0") if n)):
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest / name, follow_symlinks=False)


def copy_host_files(root: Path, files: list[Path]) -> None:
    for path in files:
        if path.exists():
            target = root / str(path).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path.resolve(), target)


def copy_pip_config(root: Path) -> None:
    """/etc/pip.conf with every file it names (its cert), at the same paths. After apt: python3-venv brings
    ca-certificates, whose postinst writes /etc/ssl/certs/ca-certificates.crt anew."""
    files = []
    pip_conf = Path("/etc/pip.conf")
    if pip_conf.is_file():
        files.append(pip_conf)
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(pip_conf)
        for section in parser.sections():
            for value in parser[section].values():
                files += [Path(word) for word in value.split() if word.startswith("/") and Path(word).is_file()]
    copy_host_files(root, files)


def in_chroot(root: Path, script: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``script`` run by bash in the chroot as root, with Debian's default PATH and nothing of ours."""
    return subprocess.run(["chroot", str(root), "/usr/bin/env", "-i", f"PATH={CHROOT_PATH}", "HOME=/root",
                           "LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive", "bash", "-euc", script],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def setup(root: Path, timeout: float = SETUP_SECONDS) -> subprocess.CompletedProcess[str]:
    return in_chroot(root, f"cd {PROJECT} && ./setup.sh --python-only", timeout)


def shown(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_setup_installs_under_the_system_python(suite: str, chroot_dir: Path) -> None:
    if os.geteuid() != 0:
        _unavailable("a chroot needs root")
    if shutil.which("mmdebstrap") is None:
        _unavailable("mmdebstrap is not installed (./setup.sh installs it)")
    mirror = AptSources.read().mirror(suite)
    if mirror is None:
        _unavailable(f"no Debian mirror for {suite} in this machine's apt sources")
    root, times = chroot_dir, {}
    started = time.monotonic()
    mmdebstrap(suite, root, mirror)
    times["mmdebstrap"] = time.monotonic() - started
    copy_project(root)
    copy_host_files(root, [Path("/etc/resolv.conf")])
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True, timeout=SHORT_SECONDS)
    venv = root / PROJECT.lstrip("/") / ".venv"

    # 1. the system python without its venv module: one line, and nothing made
    done = setup(root, SHORT_SECONDS)
    assert done.returncode == 1, shown(done)
    assert done.stderr.strip().splitlines()[-1] == (
        "error: '/usr/bin/python3 -m venv' cannot install pip into /root/project/.venv (no ensurepip): "
        "apt-get install python3-venv"), shown(done)
    assert "Traceback" not in done.stdout + done.stderr, shown(done)
    assert not venv.exists() and not venv.is_symlink()

    # 2. with python3-venv, as setup.sh's package list has it
    done = in_chroot(root, "apt-get install -y -qq --no-install-recommends python3-venv", APT_SECONDS)
    assert done.returncode == 0, shown(done)
    copy_pip_config(root)
    started = time.monotonic()
    done = setup(root)
    times["first setup"] = time.monotonic() - started
    assert done.returncode == 0, shown(done)
    assert "externally-managed-environment" not in done.stdout + done.stderr
    system = in_chroot(root, "realpath /usr/bin/python3", SHORT_SECONDS).stdout.strip()
    assert system.startswith("/usr/bin/python3."), system
    made_by = in_chroot(root, f"{PROJECT}/.venv/bin/python -c 'import os, sys; "
                              "print(os.path.realpath(sys._base_executable), sys.prefix != sys.base_prefix)'",
                        SHORT_SECONDS)
    assert made_by.stdout.split() == [system, "True"], shown(made_by)  # a venv, of the chroot's own python3
    assert "home = /usr/bin\n" in (venv / "pyvenv.cfg").read_text()
    for name in ("doit", "builder"):
        assert os.readlink(root / "usr/local/bin" / name) == f"{PROJECT}/.venv/bin/{name}"
    listed = in_chroot(root, f"cd {PROJECT} && command -v doit && doit list", SHORT_SECONDS)
    assert listed.returncode == 0, shown(listed)
    lines = listed.stdout.splitlines()
    assert lines[0] == "/usr/local/bin/doit", shown(listed)
    assert any(line.split()[:1] == ["kernel"] for line in lines[1:]), shown(listed)

    # 3. a second run reuses it
    before = (venv / "pyvenv.cfg").stat().st_ino
    started = time.monotonic()
    again = setup(root)
    times["second setup"] = time.monotonic() - started
    assert again.returncode == 0, shown(again)
    assert "making the virtual environment" not in again.stdout and "pip install" not in again.stdout, shown(again)
    assert "is installed in /root/project/.venv (pyproject.toml unchanged)" in again.stdout, shown(again)
    assert (venv / "pyvenv.cfg").stat().st_ino == before

    # 4. a .venv whose python no longer runs (as when the python that made it is removed) is made again
    (venv / "bin" / "python").unlink()
    (venv / "bin" / "python").symlink_to("/usr/bin/python3.0-removed")
    started = time.monotonic()
    remade = setup(root)
    times["setup of a broken .venv"] = time.monotonic() - started
    assert remade.returncode == 0, shown(remade)
    assert "making the virtual environment /root/project/.venv with /usr/bin/python3" in remade.stdout, shown(remade)
    assert ": its python no longer runs" in remade.stdout, shown(remade)
    listed = in_chroot(root, f"cd {PROJECT} && doit list", SHORT_SECONDS)
    assert listed.returncode == 0 and "\nkernel " in listed.stdout, shown(listed)

    # 5. a builder in /usr/local/bin that is someone else's
    other = root / "usr/local/bin/builder"
    other.unlink()
    other.write_text("#!/bin/sh\necho another builder\n")
    refused = setup(root, SHORT_SECONDS)
    assert refused.returncode == 1, shown(refused)
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: /usr/local/bin/builder is not a link into a project's .venv (it is someone else's): move it away, "
        "so that /usr/local/bin/builder -> /root/project/.venv/bin/builder"), shown(refused)
    assert other.read_text() == "#!/bin/sh\necho another builder\n"
    print(f"{suite}: " + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in times.items()))
