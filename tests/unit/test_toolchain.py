"""The toolchain bootstrap without an engine or a mirror: the mmdebstrap command, its hooks, ensure()."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from builder.build import toolchain
from builder.build.toolchain import LABEL, LOCK_PATH, PACKAGES, ROOTFS_LABEL, TOOLCHAIN_EPOCH, mmdebstrap_argv
from builder.core.errors import BuildError
from builder.host.engine import Engine
from builder.model.aptsources import AptSources
from builder.resolve.identity import REQUESTED_LABEL

MIRROR = "http://mirror.example/debian"
APT = AptSources.of(MIRROR)


def argv(tmp_path: Path, suite: str = "bookworm") -> list[str]:
    return mmdebstrap_argv(suite, tmp_path / "rootfs.tar", MIRROR, tmp_path / "lock")


def hooks(args: list[str]) -> list[str]:
    return [a.removeprefix("--customize-hook=") for a in args if a.startswith("--customize-hook=")]


def test_mmdebstrap_makes_a_minbase_tar_of_the_suite_with_every_package(tmp_path: Path) -> None:
    args = argv(tmp_path, "trixie")
    assert args[0] == "mmdebstrap"
    assert args[-3:] == ["trixie", str(tmp_path / "rootfs.tar"), MIRROR]
    assert "--variant=minbase" in args
    assert "--format=tar" in args
    assert f"--include={','.join(PACKAGES)}" in args


FIXED_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
             "SOURCE_DATE_EPOCH": str(TOOLCHAIN_EPOCH), "LC_ALL": "C.UTF-8", "TZ": "UTC"}


def test_the_bootstrap_runs_at_the_fixed_epoch_with_its_scratch_space_in_the_work_dir(tmp_path: Path) -> None:
    assert toolchain.mmdebstrap_env(tmp_path) == {**FIXED_ENV, "TMPDIR": str(tmp_path)}
    assert TOOLCHAIN_EPOCH == 1735689600


# What a caller may have set: each of these changed (PYTHONDONTWRITEBYTECODE, measured) or could change
# what the maintainer scripts in the chroot write, or what apt does.
CALLER_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "LANG": "de_DE.UTF-8", "LC_ALL": "de_DE.UTF-8", "TZ": "Asia/Tokyo",
              "PATH": "/opt/elsewhere/bin:/usr/bin:/bin", "HOME": "/home/someone", "APT_CONFIG": "/etc/other.conf",
              "PYTHONHASHSEED": "7", "http_proxy": "http://proxy.invalid:3128"}


def test_the_bootstrap_environment_is_the_same_whatever_the_callers(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    plain = toolchain.mmdebstrap_env(tmp_path)
    for name, value in CALLER_ENV.items():
        monkeypatch.setenv(name, value)
    assert toolchain.mmdebstrap_env(tmp_path) == plain


def test_mmdebstrap_gets_the_fixed_environment_and_umask_not_the_callers(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """What the program itself sees: only the fixed variables, and umask 022 under a caller's 077. The
    caller's PATH finds the program (here a fake one), which then runs with the fixed PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen = tmp_path / "seen"
    (bin_dir / "mmdebstrap").write_text(f"#!/bin/sh\nenv > {seen}.env\numask > {seen}.umask\nexit 1\n")
    (bin_dir / "mmdebstrap").chmod(0o755)
    monkeypatch.setenv("BUILDER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(toolchain.tempfile, "mkdtemp", lambda prefix, dir: str(tmp_path / "work"))
    (tmp_path / "work").mkdir()
    for name, value in CALLER_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PATH", f"{bin_dir}:{CALLER_ENV['PATH']}")
    previous = os.umask(0o077)
    try:
        with pytest.raises(BuildError, match="mmdebstrap of bookworm failed"):
            toolchain._bootstrap(Engine(), "t:1", "bookworm", MIRROR, toolchain.TOOLCHAIN)
    finally:
        os.umask(previous)
    env = dict(line.split("=", 1) for line in Path(f"{seen}.env").read_text().splitlines())
    env.pop("PWD")  # the shell's own
    assert env == {**FIXED_ENV, "TMPDIR": str(tmp_path / "work")}
    assert Path(f"{seen}.umask").read_text() == "0022\n"


def test_the_argv_is_the_same_for_the_same_inputs(tmp_path: Path) -> None:
    assert argv(tmp_path) == argv(tmp_path)


@pytest.fixture
def fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A rootfs as mmdebstrap leaves it before the customize hooks, and a fake `chroot ROOT dpkg-query`."""
    root = tmp_path / "root"
    (root / "etc/apt/sources.list.d").mkdir(parents=True)
    (root / "etc/resolv.conf").write_text("nameserver 192.0.2.1\n")
    (root / "etc/hostname").write_text("some-host\n")
    (root / "etc/apt/sources.list").write_text(f"deb {MIRROR} bookworm main\n")
    (root / "etc/apt/sources.list.d/extra.sources").write_text(f"Types: deb\nURIs: {MIRROR}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "chroot"
    fake.write_text(
        "#!/bin/sh\n"
        # exactly what dpkg-query must be asked for; the format's \\n is dpkg-query's own escape
        "[ \"$2 $3 $4\" = 'dpkg-query -W -f=${Package}=${Version}\\n' ] || exit 9\n"
        "printf 'zlib1g=1:1.2.13\\nbase-files=12.4\\ngcc=4:12.2.0\\ngcc-12=12.2.0\\nlibc6=2.36\\n'\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return root


def run_hooks(args: list[str], root: Path) -> None:
    """Run the customize hooks the way mmdebstrap 1.3 does: `sh -c HOOK exec ROOT`; download by copying."""
    for hook in hooks(args):
        if hook.startswith("download "):
            _, inside, outside = hook.split()
            shutil.copy(root / inside.lstrip("/"), outside)
        else:
            subprocess.run(["sh", "-c", hook, "exec", str(root)], check=True)


def test_the_hooks_write_the_sorted_lock_in_the_rootfs_and_copy_it_out(tmp_path: Path, fake_root: Path) -> None:
    run_hooks(argv(tmp_path), fake_root)
    lock = (fake_root / LOCK_PATH.lstrip("/")).read_text()
    lines = ["zlib1g=1:1.2.13\n", "base-files=12.4\n", "gcc=4:12.2.0\n", "gcc-12=12.2.0\n", "libc6=2.36\n"]
    assert lock == "".join(sorted(lines))  # the same order as the former Python sort
    assert lock.splitlines()[:3] == ["base-files=12.4", "gcc-12=12.2.0", "gcc=4:12.2.0"]
    assert (tmp_path / "lock").read_text() == lock


def test_the_hooks_remove_what_differs_between_machines_and_mirrors(tmp_path: Path, fake_root: Path) -> None:
    run_hooks(argv(tmp_path), fake_root)
    assert (fake_root / "etc/resolv.conf").read_text() == ""
    assert (fake_root / "etc/hostname").read_text() == "builder\n"
    assert (fake_root / "etc/apt/sources.list").read_text() == ""
    assert list((fake_root / "etc/apt/sources.list.d").iterdir()) == []


def test_an_empty_package_list_fails_the_lock_hook(tmp_path: Path, fake_root: Path) -> None:
    (tmp_path / "bin/chroot").write_text("#!/bin/sh\nexit 0\n")
    with pytest.raises(subprocess.CalledProcessError):
        run_hooks(argv(tmp_path), fake_root)


# --- ensure(): present, absent, or made by the former debootstrap code ---

@pytest.fixture
def images(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, str]]:
    """The engine as a dict of ref -> labels; _bootstrap records its calls and 'imports' a new image."""
    labels: dict[str, dict[str, str]] = {}
    monkeypatch.setattr(Engine, "image_id", lambda self, ref: f"sha256:{len(labels[ref])}" if ref in labels else None)
    monkeypatch.setattr(Engine, "image_labels", lambda self, ref: labels.get(ref, {}))
    monkeypatch.setattr(toolchain.shutil, "which", lambda name: f"/usr/bin/{name}")

    def bootstrap(engine: Engine, ref: str, suite: str, mirror: str, kind: toolchain.Kind = toolchain.TOOLCHAIN) -> str:
        labels["bootstrapped"] = {"ref": ref, "suite": suite, "mirror": mirror}
        labels[ref] = {LABEL: "p", ROOTFS_LABEL: "r", REQUESTED_LABEL: toolchain.TOOLCHAIN.requested()}
        return "sha256:2"

    monkeypatch.setattr(toolchain, "_bootstrap", bootstrap)
    return labels


def test_a_present_image_with_the_rootfs_label_is_left_alone(images: dict[str, dict[str, str]]) -> None:
    images["t:1"] = {LABEL: "p", ROOTFS_LABEL: "r", REQUESTED_LABEL: toolchain.TOOLCHAIN.requested()}
    assert toolchain.ensure(Engine(), "t:1", apt=APT) == "sha256:3"  # the fake engine's ID: the number of labels
    assert "bootstrapped" not in images


def test_an_absent_image_is_bootstrapped_from_the_suite(images: dict[str, dict[str, str]]) -> None:
    assert toolchain.ensure(Engine(), "t:1", suite="bookworm", apt=APT) == "sha256:2"
    assert images["bootstrapped"] == {"ref": "t:1", "suite": "bookworm", "mirror": MIRROR}


def test_an_image_from_the_debootstrap_days_is_recreated(images: dict[str, dict[str, str]],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    images["t:1"] = {LABEL: "p"}  # no rootfs label
    toolchain.ensure(Engine(), "t:1", apt=APT)
    assert images["bootstrapped"]["ref"] == "t:1"
    err = capsys.readouterr().err
    assert f"has no {ROOTFS_LABEL} label" in err
    assert "sha256:1 is now untagged" in err


def test_an_image_made_from_another_package_list_is_recreated(images: dict[str, dict[str, str]],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    older = ",".join(sorted(set(PACKAGES) - {"openssl"}))
    images["t:1"] = {LABEL: "p", ROOTFS_LABEL: "r", REQUESTED_LABEL: older}
    toolchain.ensure(Engine(), "t:1", apt=APT)
    assert images["bootstrapped"]["ref"] == "t:1"
    assert "(sha256:3) lacks openssl: re-creating it" in capsys.readouterr().err


def test_force_recreates_a_current_image(images: dict[str, dict[str, str]]) -> None:
    images["t:1"] = {LABEL: "p", ROOTFS_LABEL: "r", REQUESTED_LABEL: toolchain.TOOLCHAIN.requested()}
    toolchain.ensure(Engine(), "t:1", force=True, apt=APT)
    assert "bootstrapped" in images


def test_without_a_mirror_ensure_says_how_to_give_one(images: dict[str, dict[str, str]],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BuildError, match=r"no Debian mirror for 'bookworm' .*--mirror URL"):
        toolchain.ensure(Engine(), "t:1", apt=AptSources())  # apt sources without a Debian archive


def test_without_mmdebstrap_ensure_says_to_run_setup(images: dict[str, dict[str, str]],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toolchain.shutil, "which", lambda name: None)
    with pytest.raises(BuildError, match=r"mmdebstrap is not installed \(run ./setup.sh\)"):
        toolchain.ensure(Engine(), "t:1", apt=APT)


# --- a failed bootstrap: its log stays, named in the one-line error ---

def test_a_failed_bootstrap_keeps_its_log_in_the_cache_and_names_it(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mmdebstrap").write_text(
        "#!/bin/sh\n"
        "for last; do :; done\n"
        'echo "I: downloading packages"\n'
        'echo "E: cannot reach the mirror $last"\n'
        'echo partial > "$TMPDIR/rootfs.tar"\n'
        "exit 1\n"
    )
    (bin_dir / "mmdebstrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("BUILDER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(toolchain.tempfile, "mkdtemp", lambda prefix, dir: str(tmp_path / "work"))
    (tmp_path / "work").mkdir()
    log = tmp_path / "cache" / "logs" / "toolchain-bookworm.log"
    log.parent.mkdir(parents=True)
    log.write_text("the log of an earlier run\n")
    with pytest.raises(BuildError) as info:
        toolchain._bootstrap(Engine(), "t:1", "bookworm", MIRROR, toolchain.TOOLCHAIN)
    assert str(info.value) == (f"mmdebstrap of bookworm failed with exit status 1: E: cannot reach the mirror "
                               f"{MIRROR} (full log: {log})")
    assert not (tmp_path / "work").exists()  # the work dir goes, the log stays
    assert log.read_text().startswith("I: downloading packages\n")  # this run's output only


def test_mount_points_under_a_work_dir_are_found_in_the_mounts_table(tmp_path: Path) -> None:
    work = tmp_path / "work dir"
    (work / "root/proc").mkdir(parents=True)
    table = tmp_path / "mounts"
    table.write_text(f"proc {str(work).replace(' ', chr(92) + '040')}/root/proc proc rw 0 0\n"
                     f"tmpfs {tmp_path}/other tmpfs rw 0 0\n")
    assert toolchain.mounted_under(work, table) == [f"{work}/root/proc"]
    assert toolchain.mounted_under(tmp_path / "other", table) == []
    assert toolchain.mounted_under(work, tmp_path / "absent") == []


def test_cleaning_leaves_a_work_dir_with_mounts_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "work/root/dev").mkdir(parents=True)
    monkeypatch.setattr(toolchain, "mounted_under", lambda directory: [f"{directory}/root/dev"])
    toolchain._clean(tmp_path / "work")
    assert (tmp_path / "work/root/dev").is_dir()
    assert "mounts remain under it" in capsys.readouterr().err


def test_a_bootstrap_imports_the_canonical_tar_labelled_with_its_sha256_and_the_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "files/etc").mkdir(parents=True)
    (tmp_path / "files/etc/hostname").write_text("builder\n")
    (bin_dir / "mmdebstrap").write_text(
        "#!/bin/sh\n"
        'eval "tarball=\\${$(($# - 1))}"\n'  # the second-to-last argument
        f"tar --format=gnu --owner=0 --group=0 -C {tmp_path / 'files'} -cf \"$tarball\" .\n"
        "printf 'a=1\\nb=2\\n' > \"$TMPDIR/toolchain.lock\"\n"
    )
    (bin_dir / "mmdebstrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("BUILDER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(toolchain.tempfile, "mkdtemp", lambda prefix, dir: str(tmp_path / "work"))
    (tmp_path / "work").mkdir()
    imported: dict[str, object] = {}

    def import_rootfs(self: Engine, tarball: Path, ref: str, *, changes: list[str]) -> str:
        imported.update(data=tarball.read_bytes(), ref=ref, changes=changes)
        return "sha256:new"

    monkeypatch.setattr(Engine, "import_rootfs", import_rootfs)
    assert toolchain._bootstrap(Engine(), "t:1", "bookworm", MIRROR, toolchain.TOOLCHAIN) == "sha256:new"
    data = imported["data"]
    assert isinstance(data, bytes)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == [".", "./etc", "./etc/hostname"]
        assert tar.getmember("./etc/hostname").uname == ""  # canonical, not what tar wrote
    lock_digest = hashlib.sha256(b"a=1\nb=2\n").hexdigest()
    assert imported["changes"] == [f"LABEL {LABEL}={lock_digest}",
                                   f"LABEL {ROOTFS_LABEL}={hashlib.sha256(data).hexdigest()}",
                                   f"LABEL {REQUESTED_LABEL}={toolchain.TOOLCHAIN.requested()}"]
    assert imported["ref"] == "t:1"
    assert not (tmp_path / "work").exists()  # nothing left behind


# --- the canonical tar: the identity of a rootfs, whoever packed it ---

def _member(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def _write(path: Path, fmt: int, noise: bool) -> None:
    """The same root filesystem, packed two ways: ``noise`` adds what packers differ in."""
    extra: dict[str, object] = {"uname": "root", "gname": "root"} if noise else {}
    pax = {"atime": "1.5", "ctime": "2.5"} if noise else {}
    with tarfile.open(path, "w", format=fmt) as tar:
        tar.addfile(_member("./", tarfile.DIRTYPE, mode=0o755, mtime=100, **extra))
        data = b"#!/bin/sh\necho hi\n"
        tar.addfile(_member("./usr/bin/hi", mode=0o4755, size=len(data), mtime=100.75 if noise else 100,
                            pax_headers={**pax, "SCHILY.xattr.user.k": "v"} if fmt == tarfile.PAX_FORMAT else pax,
                            **extra), io.BytesIO(data))
        tar.addfile(_member("./usr/bin/hello", tarfile.LNKTYPE, linkname="./usr/bin/hi", mode=0o4755, **extra))
        tar.addfile(_member("./bin", tarfile.SYMTYPE, linkname="usr/bin", mode=0o777, **extra))
        tar.addfile(_member("./dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666, **extra))
        tar.addfile(_member("./" + "d" * 120 + "/long-name", mode=0o644, uid=1000, gid=1000, **extra),
                    io.BytesIO(b""))


def test_the_canonical_tar_does_not_depend_on_how_the_rootfs_was_packed(tmp_path: Path) -> None:
    _write(tmp_path / "plain.tar", tarfile.PAX_FORMAT, noise=False)
    _write(tmp_path / "noisy.tar", tarfile.PAX_FORMAT, noise=True)
    digests = [toolchain.canonical_tar(tmp_path / f"{n}.tar", tmp_path / f"{n}.out") for n in ("plain", "noisy")]
    assert digests[0] == digests[1]
    assert (tmp_path / "plain.out").read_bytes() == (tmp_path / "noisy.out").read_bytes()
    assert digests[0] == hashlib.sha256((tmp_path / "plain.out").read_bytes()).hexdigest()


def test_the_canonical_tar_keeps_everything_a_rootfs_needs(tmp_path: Path) -> None:
    _write(tmp_path / "in.tar", tarfile.PAX_FORMAT, noise=True)
    toolchain.canonical_tar(tmp_path / "in.tar", tmp_path / "out.tar")
    with tarfile.open(tmp_path / "out.tar") as tar:
        members = {m.name: m for m in tar}
        assert list(members) == [".", "./usr/bin/hi", "./usr/bin/hello", "./bin", "./dev/null",
                                 "./" + "d" * 120 + "/long-name"]
        hi = members["./usr/bin/hi"]
        assert (hi.mode, hi.mtime, hi.uname, hi.pax_headers) == (0o4755, 100, "", {"SCHILY.xattr.user.k": "v"})
        assert tar.extractfile(hi).read() == b"#!/bin/sh\necho hi\n"  # type: ignore[union-attr]
        assert members["./usr/bin/hello"].islnk() and members["./usr/bin/hello"].linkname == "./usr/bin/hi"
        assert members["./bin"].issym() and members["./bin"].linkname == "usr/bin"
        assert (members["./dev/null"].ischr(), members["./dev/null"].devmajor, members["./dev/null"].devminor) == (
            True, 1, 3)
        assert (members["./" + "d" * 120 + "/long-name"].uid, members["./" + "d" * 120 + "/long-name"].gid) == (
            1000, 1000)


def test_a_gnu_format_input_gives_the_same_canonical_tar_as_a_pax_one(tmp_path: Path) -> None:
    for name, fmt in (("gnu", tarfile.GNU_FORMAT), ("pax", tarfile.PAX_FORMAT)):
        with tarfile.open(tmp_path / f"{name}.tar", "w", format=fmt) as tar:
            tar.addfile(_member("./a", mode=0o644, size=1, mtime=5, uname="root" if name == "gnu" else ""),
                        io.BytesIO(b"x"))
    assert (toolchain.canonical_tar(tmp_path / "gnu.tar", tmp_path / "gnu.out")
            == toolchain.canonical_tar(tmp_path / "pax.tar", tmp_path / "pax.out"))


def test_apt_has_a_deadline_that_does_not_end_up_in_the_image(tmp_path: Path) -> None:
    args = argv(tmp_path)
    assert '--aptopt=Acquire::http::Timeout "60"' in args
    assert any(h.startswith("rm -f ") and h.endswith('"$1"/etc/apt/apt.conf.d/99mmdebstrap') for h in hooks(args))


def test_the_imager_is_bootstrapped_the_same_way_with_its_own_packages_and_arm64_grub(tmp_path: Path) -> None:
    """Boot media tools live in their own image: adding one never changes the toolchain's identity."""
    args = mmdebstrap_argv("bookworm", tmp_path / "t.tar", MIRROR, tmp_path / "lock", toolchain.IMAGER)
    assert f"--include={','.join(toolchain.IMAGER_PACKAGES)}" in args
    assert "--architectures=amd64,arm64" in args  # grub-efi-arm64-bin:arm64 comes from the arm64 archive
    assert not set(toolchain.IMAGER_PACKAGES) & set(toolchain.PACKAGES) - {"python3", "xz-utils", "zstd"}
    assert "--architectures" not in " ".join(mmdebstrap_argv("bookworm", tmp_path / "t.tar", MIRROR, tmp_path / "l"))


def test_the_canonical_tar_does_not_depend_on_the_callers_locale(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A GNU-format name is bytes; tarfile reads them in the locale's encoding unless told: a Latin-1 locale
    would have turned UTF-8 "é" into "Ã©" and re-encoded it."""
    with tarfile.open(tmp_path / "in.tar", "w", format=tarfile.GNU_FORMAT, encoding="utf-8") as tar:
        tar.addfile(_member("./caf\u00e9", mode=0o644, size=1, mtime=5), io.BytesIO(b"x"))
    digests = []
    for encoding in ("utf-8", "iso-8859-1"):  # tarfile's default: the locale's (filesystem) encoding
        monkeypatch.setattr(tarfile.TarFile, "encoding", encoding)
        digests.append(toolchain.canonical_tar(tmp_path / "in.tar", tmp_path / f"{encoding}.out"))
    assert digests[0] == digests[1]
    with tarfile.open(tmp_path / "utf-8.out", encoding="utf-8") as tar:
        assert tar.getnames() == ["./caf\u00e9"]
