"""The toolchain image, bootstrapped without any image hub: mmdebstrap -> canonical tar -> docker import.

mmdebstrap runs with a fixed, minimal environment that inherits nothing from the caller's (mmdebstrap_env: a
standard PATH, HOME=/root, LC_ALL=C.UTF-8, TZ=UTC, a fixed SOURCE_DATE_EPOCH) and umask 022, so the same
package versions give the same files whoever runs it: the maintainer scripts in the chroot see that
environment (a caller's PYTHONDONTWRITEBYTECODE=1 made python3-minimal write hash-based .pyc files instead
of timestamp-based ones: another rootfs for the same lock). The host-side steps after it (the canonical tar,
the lock's digest) are in-process Python that reads and writes bytes and depends on no locale, umask or time
zone; docker import sends the canonical tar as it is. The tar mmdebstrap writes is then rewritten in one
canonical form (canonical_tar), because its bytes also depend on the host's mmdebstrap and GNU tar versions
(Debian 12 and 13 differ). The exact package list (name=version) is recorded inside the image at LOCK_PATH
and as the label LABEL (that list's sha256); the label ROOTFS_LABEL holds the canonical tar's sha256, which
is also the image's layer diff-ID: an identity that holds across imports and machines, unlike the image ID
(the import time is in the image config)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from builder.core.errors import BuildError
from builder.core.log import say, step
from builder.core.run import run
from builder.host.engine import Engine
from builder.model.aptsources import AptSources
from builder.model.variables import DEFAULTS
from builder.resolve.identity import PACKAGES_LABEL, REQUESTED_LABEL, ROOTFS_LABEL

PACKAGES = (
    "build-essential", "bc", "bison", "flex", "libelf-dev", "libssl-dev", "cpio", "kmod", "xz-utils",
    "zstd", "python3", "gcc-aarch64-linux-gnu", "rsync", "patch",
    "openssl",  # module signing: the ephemeral key (openssl req) and certificate checks
    "libncurses-dev",  # make menuconfig
)
# The image that boot media are assembled in (the IMAGER variable): its own image, so that a tool added
# for ISOs or disks never changes the toolchain's identity (which would rebuild every kernel). Foreign
# packages (name:arch) come from that architecture's archive: GRUB's arm64 UEFI modules.
IMAGER_PACKAGES = (
    "xorriso", "grub-common", "grub-pc-bin", "grub-efi-amd64-bin", "grub-efi-arm64-bin:arm64",
    "mtools", "dosfstools", "fdisk", "e2fsprogs", "qemu-utils", "python3", "xz-utils", "zstd",
    "u-boot-qemu",  # board overlays: U-Boot for QEMU's arm64 'virt' machine
)


@dataclass(frozen=True)
class Kind:
    """A build image this project bootstraps: which variable names it, and what it is made of."""

    name: str
    variable: str
    packages: tuple[str, ...]

    @property
    def architectures(self) -> tuple[str, ...]:
        """The foreign dpkg architectures its packages ask for (grub-efi-arm64-bin:arm64 -> arm64)."""
        return tuple(sorted({p.split(":", 1)[1] for p in self.packages if ":" in p}))

    def requested(self) -> str:
        """The package names it is made from, as its REQUESTED_LABEL says them."""
        return ",".join(sorted(self.packages))


TOOLCHAIN = Kind("toolchain", "TOOLCHAIN", PACKAGES)
IMAGER = Kind("imager", "IMAGER", IMAGER_PACKAGES)
LOCK_PATH = "/usr/share/builder/toolchain.lock"
LABEL = PACKAGES_LABEL  # the labels are read by identity.py, which must stay light: they are defined there
TOOLCHAIN_EPOCH = 1735689600  # 2025-01-01T00:00:00Z: every mtime in the tar is clamped to it
HOSTNAME = "builder"


APT_STALL_SECONDS = 60
BOOTSTRAP_SECONDS = 1800  # the whole bootstrap (measured 68-76 s here); past it mmdebstrap is stopped


def mmdebstrap_argv(suite: str, tarball: Path, mirror: str, lock_copy: Path, kind: Kind = TOOLCHAIN) -> list[str]:
    """The mmdebstrap command that writes the toolchain rootfs to ``tarball``.

    Customize hooks write the sorted lock into the rootfs (and copy it to ``lock_copy``) and replace
    what would differ between machines or mirrors: the host's resolv.conf and hostname, and the apt
    sources (the mirror URL; the toolchain never runs apt).
    """
    root = '"$1"'
    return [
        "mmdebstrap", "--variant=minbase", "--format=tar", f"--include={','.join(kind.packages)}",
        *([f"--architectures={','.join(('amd64', *kind.architectures))}"] if kind.architectures else []),
        # a mirror that stops answering fails the download after this long without data (apt's own deadline)
        f"--aptopt=Acquire::http::Timeout \"{APT_STALL_SECONDS}\"", "--aptopt=Acquire::Retries \"2\"",
        f"--customize-hook=mkdir -p {root}{os.path.dirname(LOCK_PATH)}",
        f"--customize-hook=chroot {root} dpkg-query -W -f='${{Package}}=${{Version}}\\n'"
        f" | LC_ALL=C sort > {root}{LOCK_PATH} && test -s {root}{LOCK_PATH}",
        f"--customize-hook=download {LOCK_PATH} {lock_copy}",
        f"--customize-hook=: > {root}/etc/resolv.conf",
        f"--customize-hook=echo {HOSTNAME} > {root}/etc/hostname",
        f"--customize-hook=: > {root}/etc/apt/sources.list",
        f"--customize-hook=rm -f {root}/etc/apt/sources.list.d/*.list {root}/etc/apt/sources.list.d/*.sources"
        f" {root}/etc/apt/apt.conf.d/99mmdebstrap",  # the --aptopt file: the host's deadline, not the image's
        suite, str(tarball), mirror,
    ]


BOOTSTRAP_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BOOTSTRAP_UMASK = 0o022


def mmdebstrap_env(workdir: Path) -> dict[str, str]:
    """The whole environment mmdebstrap runs with (nothing of the caller's is added): a standard PATH, root's
    HOME, the C.UTF-8 locale, UTC, the fixed epoch, and its scratch rootfs under ``workdir``. Only which
    mmdebstrap program runs is found on the caller's PATH (as `ensure` and `builder doctor` look for it);
    the tools it runs, its hooks and the chroot's maintainer scripts see BOOTSTRAP_PATH.

    The maintainer scripts run in the chroot inherit it: PYTHONDONTWRITEBYTECODE from a caller made
    python3-minimal's postinst write hash-based .pyc files instead of timestamp-based ones (measured), and
    so would any PYTHON*, APT_CONFIG, LD_* or other variable of the caller's change what is run or written.
    No proxy variables either: apt verifies what it fetches against the signed Release file, so a proxy
    would not change the bytes, but nothing here uses one and a fixed environment is simpler to reason about.

    ``workdir`` must be mode 0700: apt's sandbox user then cannot reach the rootfs, so mmdebstrap always
    runs apt as root and /var/{cache/apt/archives,lib/apt/lists}/partial stay root's. Under a directory
    _apt can read they become _apt's (uid 42): another tar (measured).
    """
    return {
        "PATH": BOOTSTRAP_PATH,
        "HOME": "/root",  # a fixed path that exists in the chroot too; not the random workdir's name
        "TMPDIR": str(workdir),
        "SOURCE_DATE_EPOCH": str(TOOLCHAIN_EPOCH),
        "LC_ALL": "C.UTF-8",  # what mmdebstrap sets for apt and dpkg anyway; here for the host-side hooks too
        "TZ": "UTC",
    }


class _Hashing:
    """A binary writer that keeps the sha256 of everything written through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.raw.tell()


def canonical_tar(source: Path, target: Path) -> str:
    """Rewrite the tar ``source`` as ``target`` in one canonical form; the sha256 of ``target``.

    Same members in the same order, with only what a root filesystem needs: name, type, mode, numeric
    owner, whole-second mtime, link target, device numbers, contents and extended attributes. Written
    by Python's tarfile in PAX format, so the bytes no longer depend on which mmdebstrap and GNU tar
    made ``source`` (measured: Debian 12 and 13 give different tars of the same files, and the same
    canonical tar with Python 3.11 and 3.13). Nor on the caller's locale, umask or time zone: names are read
    and written as UTF-8 (tarfile's default for reading is the locale's encoding; a non-UTF-8 locale would
    re-encode non-ASCII names), every field comes from ``source``, and nothing is extracted.
    """
    with tarfile.open(source, "r:", encoding="utf-8") as tin, open(target, "wb") as raw:
        out = _Hashing(raw)
        with tarfile.open(fileobj=cast(IO[bytes], out), mode="w:", format=tarfile.PAX_FORMAT,
                          encoding="utf-8") as tout:
            for member in tin:
                info = tarfile.TarInfo(member.name)
                info.type = tarfile.REGTYPE if member.isreg() else member.type
                info.mode, info.uid, info.gid = member.mode, member.uid, member.gid
                info.mtime = int(member.mtime)
                info.linkname = member.linkname
                info.devmajor, info.devminor = member.devmajor, member.devminor
                info.size = member.size if member.isreg() else 0
                info.pax_headers = {key: value for key, value in sorted(member.pax_headers.items())
                                    if key.startswith("SCHILY.xattr.")}
                tout.addfile(info, tin.extractfile(member) if member.isreg() else None)
    return out.digest.hexdigest()


def ensure(engine: Engine, ref: str = DEFAULTS["TOOLCHAIN"], *, suite: str = DEFAULTS["DEBIAN_SUITE"],
           mirror: str | None = None, force: bool = False, kind: Kind = TOOLCHAIN,
           apt: AptSources | None = None) -> str:
    """The image ID of ``ref`` in ``engine``, creating the image first when it is absent (or ``force``).

    An image without ROOTFS_LABEL (made by the former debootstrap bootstrap) is re-created, and so is one
    made from another package list than ``kind``'s (this code asks for a package that image lacks). The
    mirror is ``mirror``, else the one ``apt`` (default: this machine's apt sources) has for ``suite``.
    """
    existing = engine.image_id(ref)
    if existing and not force:
        labels = engine.image_labels(ref)
        if ROOTFS_LABEL not in labels:
            say(f"toolchain {ref} ({existing}) has no {ROOTFS_LABEL} label: re-creating it reproducibly")
        elif labels.get(REQUESTED_LABEL) != kind.requested():
            had = labels.get(REQUESTED_LABEL)
            missing = sorted(set(kind.packages) - set(had.split(","))) if had else []
            why = f"lacks {', '.join(missing)}" if missing else "was made from another package list" if had else \
                "has no record of its package list"
            say(f"{kind.name} {ref} ({existing}) {why}: re-creating it")
        else:
            print(f"{kind.name} {ref} present: {existing}")
            return existing
    mirror = mirror or (AptSources.read() if apt is None else apt).mirror(suite)
    if not mirror:
        raise BuildError(f"no Debian mirror for {suite!r} in this machine's apt sources",
                         hint="pass --mirror URL")
    if shutil.which("mmdebstrap") is None:
        raise BuildError("mmdebstrap is not installed", hint="run ./setup.sh")
    image = _bootstrap(engine, ref, suite, mirror, kind)
    if existing and existing != image:
        say(f"the previous {ref} image {existing} is now untagged ('docker image prune' frees its space)")
    return image


def bootstrap_log(suite: str, kind: Kind = TOOLCHAIN) -> Path:
    """Where the last bootstrap of ``suite`` wrote mmdebstrap's output: in the cache directory, outside the
    work directory that is always removed, so a failure's log stays to be read (the next run replaces it)."""
    from builder.host.sources import default_cache_dir

    return default_cache_dir() / "logs" / f"{kind.name}-{suite}.log"


@dataclass(frozen=True)
class Rootfs:
    """A bootstrapped root filesystem: its canonical tar, and the two digests its image is labelled with."""

    tarball: Path
    packages_digest: str  # sha256 of the name=version lock (LABEL)
    digest: str  # sha256 of the canonical tar (ROOTFS_LABEL, the layer's diff-ID)


@contextlib.contextmanager
def rootfs(suite: str, mirror: str, kind: Kind = TOOLCHAIN) -> Iterator[Rootfs]:
    """mmdebstrap ``suite`` into a tar and rewrite it as the canonical tar, in a work directory that is
    removed on exit (never while something is mounted under it)."""
    log = bootstrap_log(suite, kind)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)  # run() appends: this run's output only
    workdir = Path(tempfile.mkdtemp(prefix=f"builder-{kind.name}-", dir="/var/tmp"))
    workdir.chmod(0o700)  # mkdtemp's mode already; the rootfs depends on it (see mmdebstrap_env)
    made, tarball = workdir / "mmdebstrap.tar", workdir / "rootfs.tar"
    lock_copy = workdir / "toolchain.lock"
    try:
        with step(f"mmdebstrap {suite} ({len(kind.packages)} packages) -> {made}; log: {log}"):
            argv = mmdebstrap_argv(suite, made, mirror, lock_copy, kind)
            argv[0] = shutil.which(argv[0]) or argv[0]  # found on the caller's PATH, run with the fixed one
            done = run(argv, env=mmdebstrap_env(workdir), inherit_env=False, umask=BOOTSTRAP_UMASK, log=log,
                       check=False, timeout=BOOTSTRAP_SECONDS)
            if done.returncode != 0:
                raise BuildError(f"mmdebstrap of {suite} failed with exit status {done.returncode}: "
                                 f"{_last_line(log)}", hint=f"full log: {log}")
        packages_digest = hashlib.sha256(lock_copy.read_bytes()).hexdigest()  # bytes: no locale decodes them
        with step(f"canonical tar -> {tarball}"):
            try:
                rootfs_digest = canonical_tar(made, tarball)
            except (tarfile.TarError, OSError) as exc:
                raise BuildError(f"cannot rewrite {made} as a canonical tar: {exc}") from None
        made.unlink()
        yield Rootfs(tarball, packages_digest, rootfs_digest)
    finally:
        _clean(workdir)


def _bootstrap(engine: Engine, ref: str, suite: str, mirror: str, kind: Kind) -> str:
    """mmdebstrap ``suite`` into a tar, then docker import it as ``ref``; the new image ID."""
    with rootfs(suite, mirror, kind) as made, step(f"docker import -> {ref} (rootfs sha256 {made.digest})"):
        return engine.import_rootfs(made.tarball, ref, changes=[f"LABEL {LABEL}={made.packages_digest}",
                                                                f"LABEL {ROOTFS_LABEL}={made.digest}",
                                                                f"LABEL {REQUESTED_LABEL}={kind.requested()}"])


def _clean(workdir: Path) -> None:
    """Remove ``workdir`` - never while something is still mounted under it."""
    mounts = mounted_under(workdir)
    if mounts:
        say(f"left {workdir} in place: {len(mounts)} mounts remain under it (first: {mounts[0]});"
            " unmount them (umount -R) before deleting it")
        return
    shutil.rmtree(workdir, ignore_errors=True)


def mounted_under(directory: Path, mounts: Path = Path("/proc/self/mounts")) -> list[str]:
    """Mount points below ``directory``, from a mounts table (octal escapes as the kernel writes them)."""
    prefix = str(directory).rstrip("/") + "/"
    try:
        table = mounts.read_text()
    except OSError:
        return []
    points = []
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
            if point.startswith(prefix):
                points.append(point)
    return points


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:200] if lines else "empty log"


def packages(engine: Engine, ref: str = DEFAULTS["TOOLCHAIN"]) -> str:
    """The recorded name=version list of the toolchain image in ``engine``."""
    engine.require_image(ref)
    return engine.run_once(ref, ["cat", LOCK_PATH]).decode()
