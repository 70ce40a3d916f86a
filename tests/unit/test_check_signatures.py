"""builder check-signatures: a release equals a rebuild without the key, but for valid module signatures."""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import re
import tarfile
from pathlib import Path

import pytest

from builder.build import signatures
from builder.core.errors import BuildError

from ..signing import SIGNING, signed


def _tar(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1735689600
            archive.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _newc(members: dict[str, bytes]) -> bytes:
    out = b""
    for ino, (name, data) in enumerate([*members.items(), ("TRAILER!!!", b"")], 1):
        encoded = name.encode() + b"\0"
        fields = [ino, 0o100644, 0, 0, 1, 1735689600, len(data), 0, 0, 0, 0, len(encoded), 0]
        header = b"070701" + b"".join(f"{f:08x}".encode() for f in fields) + encoded
        out += header + b"\0" * (-len(header) % 4) + data + b"\0" * (-len(data) % 4)
    return out


def _out(directory: Path, files: dict[str, bytes]) -> Path:
    directory.mkdir()
    for name, data in files.items():
        (directory / name).write_bytes(data)
    (directory / "SHA256SUMS").write_text("".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files.items()))
    return directory


def _pair(tmp_path: Path, module: bytes, released: bytes) -> tuple[Path, Path]:
    tree = {"lib/modules/6.1/modules.dep": b"extra/v.ko:\n"}
    rebuilt = {"vmlinuz-amd64": b"kernel", "modules-amd64.tar": _tar({**tree, "lib/modules/6.1/extra/v.ko": module}),
               "initramfs-amd64.xz": lzma.compress(_newc({"init": b"#!", "lib/modules/6.1/extra/v.ko": module}))}
    release = {**rebuilt, "modules-amd64.tar": _tar({**tree, "lib/modules/6.1/extra/v.ko": released}),
               "initramfs-amd64.xz": lzma.compress(_newc({"init": b"#!", "lib/modules/6.1/extra/v.ko": released}))}
    return _out(tmp_path / "release", release), _out(tmp_path / "rebuilt", rebuilt)


def test_a_release_is_the_rebuild_plus_valid_signatures(tmp_path: Path) -> None:
    module = b"\x7fELF the module"
    release, rebuilt = _pair(tmp_path, module, signed(module, tmp_path))
    verdicts = signatures.check(release, rebuilt, SIGNING / "release.crt")
    assert [v.line() for v in verdicts] == [
        "vmlinuz-amd64: identical",
        "modules-amd64.tar: identical but for the signatures of 1 module(s), each valid for the certificate "
        "(keyid:753a3e1e73b88ab5795b9361416a95ade53166b7)",
        "initramfs-amd64.xz: identical but for the signatures of 1 module(s), each valid for the certificate "
        "(keyid:753a3e1e73b88ab5795b9361416a95ade53166b7)",
    ]


def test_a_signature_by_another_key_is_refused(tmp_path: Path) -> None:
    module = b"\x7fELF the module"
    release, rebuilt = _pair(tmp_path, module, signed(module, tmp_path, "other"))
    with pytest.raises(signatures.Mismatch, match=r"^modules-amd64\.tar: lib/modules/6\.1/extra/v\.ko: its signature "
                                                  r"is not valid for .*release\.crt"):
        signatures.check(release, rebuilt, SIGNING / "release.crt")


def test_a_module_that_differs_by_more_than_a_signature_is_refused(tmp_path: Path) -> None:
    release, rebuilt = _pair(tmp_path, b"\x7fELF the module", signed(b"\x7fELF another module", tmp_path))
    with pytest.raises(signatures.Mismatch,
                       match=r"v\.ko differs from the rebuild's by more than an appended signature"):
        signatures.check(release, rebuilt, SIGNING / "release.crt")


def test_a_kernel_that_differs_is_refused(tmp_path: Path) -> None:
    module = b"\x7fELF the module"
    release, rebuilt = _pair(tmp_path, module, module)
    (rebuilt / "vmlinuz-amd64").write_bytes(b"another kernel")
    with pytest.raises(signatures.Mismatch, match=r"^vmlinuz-amd64: differs from the rebuild, and it holds no modules"):
        signatures.check(release, rebuilt, SIGNING / "release.crt")


# --- hostile archives: one line naming the file and the byte, never a traceback ---------------------------

def _initramfs_pair(tmp_path: Path, release_cpio: bytes) -> tuple[Path, Path]:
    rebuilt = {"initramfs-amd64.xz": lzma.compress(_newc({"init": b"#!", "etc/passwd": b"root"}))}
    return (_out(tmp_path / "release", {"initramfs-amd64.xz": lzma.compress(release_cpio)}),
            _out(tmp_path / "rebuilt", rebuilt))


GOOD = _newc({"init": b"#!", "etc/passwd": b"root"})


@pytest.mark.parametrize("cpio, message", [
    (GOOD[:246], r"the cpio archive is cut short: the member at byte 120 ends at byte 248, past its end "
                 r"\(246 bytes\)$"),
    (GOOD[:60], r"the cpio archive is cut short inside the header at byte 0$"),
    (GOOD[:248], r"the cpio archive is cut short: it ends at byte 248, before its TRAILER!!! member$"),
    (GOOD.replace(b"init\0\0", b"init\0"), r"not a newc cpio archive \(at byte 120: b'707010', not b'070701'\)$"),
    (b"070707" + GOOD[6:], r"not a newc cpio archive \(at byte 0: b'070707', not b'070701'\)$"),
    (b"070701" + b"0000000g" + GOOD[14:], r"the cpio header at byte 0 has a field that is not 8 hex digits$"),
    (b"070701" + b"     +01" + GOOD[14:], r"the cpio header at byte 0 has a field that is not 8 hex digits$"),
], ids=["cut-in-a-member", "cut-in-a-header", "no-trailer", "misaligned", "odc-magic", "not-hex", "int-leniency"])
def test_a_damaged_initramfs_is_one_line_naming_the_file_and_the_byte(tmp_path: Path, cpio: bytes,
                                                                      message: str) -> None:
    release, rebuilt = _initramfs_pair(tmp_path, cpio)
    with pytest.raises(BuildError, match=r"^" + re.escape(f"{release}/initramfs-amd64.xz: ") + message) as caught:
        signatures.check(release, rebuilt, SIGNING / "release.crt")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name, shown", [
    ("../../etc/passwd", "../../etc/passwd"),  # nothing is extracted: the name is only compared and shown
    ("/etc/passwd", "/etc/passwd"),
    ("a\nok: all identical", r"a\nok: all identical"),  # a line break cannot forge a line of output
])
def test_a_hostile_member_name_is_a_mismatch_shown_on_one_line(tmp_path: Path, name: str, shown: str) -> None:
    release, rebuilt = _initramfs_pair(tmp_path, _newc({"init": b"#!", name: b"root"}))
    with pytest.raises(signatures.Mismatch) as caught:
        signatures.check(release, rebuilt, SIGNING / "release.crt")
    assert str(caught.value) == f"initramfs-amd64.xz: the members differ from the rebuild's (first: {shown})"


def test_the_cpio_reader_reads_what_the_cpio_tool_writes(tmp_path: Path) -> None:
    """GNU cpio -H newc, as the initramfs recipe makes it: names, headers and data as written."""
    import subprocess

    (tmp_path / "tree" / "lib").mkdir(parents=True)
    (tmp_path / "tree" / "init").write_bytes(b"#!/bin/sh\n")
    (tmp_path / "tree" / "lib" / "m.ko").write_bytes(b"\x7fELF" * 1000)
    os.chmod(tmp_path / "tree" / "init", 0o755)
    done = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0", "--reproducible"],
                          input=b"init\nlib\nlib/m.ko\n", cwd=tmp_path / "tree", capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    members = signatures.cpio_members(done.stdout)
    assert [(m.name, m.data[:4], m.header[1], m.header[2:4]) for m in members] == [
        ("init", b"#!/b", 0o100755, (0, 0)), ("lib", b"", 0o40755, (0, 0)), ("lib/m.ko", b"\x7fELF", 0o100644, (0, 0))]
    assert len(members[2].data) == 4000
