"""The toolchain image, bootstrapped without any image hub: debootstrap -> docker import.

Its exact package list (name=version) is recorded inside the image at LOCK_PATH and as a label
holding that list's sha256, so builds and audits can read what compiled an artifact.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from builder import engine
from builder.errors import BuildError
from builder.log import step
from builder.run import run
from builder.variables import DEFAULTS, debian_mirror

PACKAGES = (
    "build-essential", "bc", "bison", "flex", "libelf-dev", "libssl-dev", "cpio", "kmod", "xz-utils",
    "zstd", "python3", "gcc-aarch64-linux-gnu", "rsync", "patch",
)
LOCK_PATH = "/usr/share/builder/toolchain.lock"
LABEL = "org.builder.toolchain.packages-sha256"


def ensure(ref: str = DEFAULTS["TOOLCHAIN"], *, suite: str = DEFAULTS["DEBIAN_SUITE"],
           mirror: str | None = None, force: bool = False) -> str:
    """The image ID of ``ref``, creating the image first when it is absent (or ``force``)."""
    if not force and (existing := engine.image_id(ref)):
        print(f"toolchain {ref} present: {existing}")
        return existing
    mirror = mirror or debian_mirror(suite)
    if not mirror:
        raise BuildError(f"no Debian mirror for {suite!r} in this machine's apt sources",
                         hint="pass --mirror URL")
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is not installed", hint="run ./setup.sh")
    with tempfile.TemporaryDirectory(prefix="builder-toolchain-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        with step(f"debootstrap {suite} ({len(PACKAGES)} packages) into {rootfs}"):
            run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", suite, rootfs, mirror],
                log=Path(tmp) / "debootstrap.log")
        lock = run(["chroot", rootfs, "dpkg-query", "-W", "-f", "${Package}=${Version}\n"],
                   capture=True).stdout.decode()
        lock = "".join(sorted(lock.splitlines(keepends=True)))
        lock_file = rootfs / LOCK_PATH.lstrip("/")
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        lock_file.write_text(lock)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        digest = hashlib.sha256(lock.encode()).hexdigest()
        with step(f"docker import -> {ref}"):
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."],
                                   stdout=subprocess.PIPE)
            assert tar.stdout is not None
            image = engine.import_rootfs(tar.stdout, ref, changes=[f"LABEL {LABEL}={digest}"])
            if tar.wait() != 0:
                raise BuildError(f"tar of the toolchain rootfs failed (exit {tar.returncode})")
    return image


def packages(ref: str = DEFAULTS["TOOLCHAIN"]) -> str:
    """The recorded name=version list of the toolchain image."""
    engine.require_image(ref)
    return engine.run_once(ref, ["cat", LOCK_PATH]).decode()
