"""builder check-signatures: a release equals a rebuild without the key, but for valid module signatures."""

from __future__ import annotations

import hashlib
import io
import lzma
import tarfile
from pathlib import Path

import pytest

from builder import signatures

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
