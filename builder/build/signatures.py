"""`builder check-signatures`: a release's artifacts against a rebuild made without the private key.

With MODULE_SIGNING=release, kernel and modules are built unsigned and a signing step appends signatures
with a key only the releaser holds. An auditor rebuilds with the certificate alone; this says whether every
artifact of the release equals the rebuilt one, byte for byte, except that a module may carry an appended
signature, and that signature must be valid for the certificate. Modules are compared inside the modules
tar and inside the initramfs (xz-compressed newc cpio), member by member, headers included.
"""

from __future__ import annotations

import lzma
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from builder.build import kmodules
from builder.core.errors import BuildError

OPENSSL_SECONDS = 30


class Mismatch(BuildError):
    """An artifact of the release is not the rebuilt one (plus valid signatures)."""


@dataclass
class SignatureComparison:
    name: str
    identical: bool
    signed: int = 0  # modules whose only difference is a valid appended signature
    signers: frozenset[str] = frozenset()

    def line(self) -> str:
        if self.identical:
            return f"{self.name}: identical"
        return (f"{self.name}: identical but for the signatures of {self.signed} module(s), each valid for the "
                f"certificate ({', '.join(sorted(self.signers))})")


@dataclass(frozen=True)
class Member:
    name: str
    header: tuple[object, ...]  # everything but the size (and a cpio checksum): mode, owner, mtime, link, ...
    data: bytes


def check(release: Path, rebuilt: Path, cert: Path) -> list[SignatureComparison]:
    """A verdict per artifact of ``release``'s SHA256SUMS; Mismatch names the first difference."""
    names = _listed(release)
    if not cert.is_file():
        raise BuildError(f"{cert}: no such certificate file")
    verdicts = []
    for name in names:
        mine, theirs = release / name, rebuilt / name
        if not theirs.is_file():
            raise Mismatch(f"{name}: in the release, not in the rebuild ({rebuilt})")
        if mine.read_bytes() == theirs.read_bytes():
            verdicts.append(SignatureComparison(name, identical=True))
        elif name.endswith(".tar"):
            verdicts.append(_compare(name, _tar(mine), _tar(theirs), cert))
        elif name.endswith(".xz"):
            verdicts.append(_compare(name, cpio_members(_unxz(mine, name), str(mine)),
                                     cpio_members(_unxz(theirs, name), str(theirs)), cert))
        else:
            raise Mismatch(f"{name}: differs from the rebuild, and it holds no modules that a signature could explain")
    return verdicts


def _listed(directory: Path) -> list[str]:
    sums = directory / "SHA256SUMS"
    try:
        lines = sums.read_text().splitlines()
    except OSError as exc:
        raise BuildError(f"{sums}: {exc.strerror}", hint="give the out/ directory of a build") from None
    names = [line.split("  ", 1)[1] for line in lines if "  " in line]
    if not names:
        raise BuildError(f"{sums}: lists no artifact")
    return names


def _compare(name: str, mine: list[Member], theirs: list[Member], cert: Path) -> SignatureComparison:
    if [m.name for m in mine] != [m.name for m in theirs]:
        extra = sorted({m.name for m in mine} ^ {m.name for m in theirs})
        raise Mismatch(f"{name}: the members differ from the rebuild's"
                       + (f" (first: {_shown(extra[0])})" if extra else " (their order)"))
    signed, signers = 0, set()
    for a, b in zip(mine, theirs, strict=True):
        if a.header != b.header:
            raise Mismatch(f"{name}: {_shown(a.name)}: its metadata differs from the rebuild's")
        if a.data == b.data:
            continue
        parts = kmodules.split_signature(a.data) if a.name.endswith(".ko") else None
        if parts is None or parts[0] != b.data:
            raise Mismatch(f"{name}: {_shown(a.name)} differs from the rebuild's by more than an appended signature")
        _verify(parts[0], parts[1], cert, f"{name}: {_shown(a.name)}")
        signed += 1
        signers.add(kmodules.signature(a.data) or "?")
    return SignatureComparison(name, identical=False, signed=signed, signers=frozenset(signers))


def _shown(member: str) -> str:
    """A member's name for a one-line message: as it is, or escaped when it holds a line break or another
    character that is not printable."""
    return member if member.isprintable() else repr(member)[1:-1]


def _verify(module: bytes, pkcs7: bytes, cert: Path, what: str) -> None:
    """The signature is valid for ``cert`` over ``module`` (openssl cms, as the kernel checks it: the signer
    found by the certificate's key, no chain to a CA)."""
    with tempfile.TemporaryDirectory(prefix="builder-sig-") as tmp:
        content, sig = Path(tmp) / "module", Path(tmp) / "sig"
        content.write_bytes(module)
        sig.write_bytes(pkcs7)
        try:
            done = subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(sig),
                                   "-content", str(content), "-certfile", str(cert), "-nointern", "-noverify",
                                   "-out", "/dev/null"], capture_output=True, text=True, timeout=OPENSSL_SECONDS)
        except FileNotFoundError:
            raise BuildError("openssl is not installed", hint="run ./setup.sh") from None
        except subprocess.TimeoutExpired:
            raise BuildError(f"{what}: openssl did not answer in {OPENSSL_SECONDS} s") from None
    if done.returncode != 0:
        reason = next((line for line in done.stderr.splitlines() if line.strip()), "invalid")
        raise Mismatch(f"{what}: its signature is not valid for {cert} ({reason.strip()[:160]})")


def _tar(path: Path) -> list[Member]:
    try:
        with tarfile.open(path) as archive:
            return [Member(m.name, (m.type, m.mode, m.uid, m.gid, m.uname, m.gname, m.mtime, m.linkname,
                                    m.devmajor, m.devminor, tuple(sorted(m.pax_headers.items()))),
                           _read(archive, m)) for m in archive]
    except (tarfile.TarError, OSError) as exc:
        raise BuildError(f"{path}: not a tar this can read ({exc})") from None


def _read(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = archive.extractfile(member) if member.isfile() else None
    return handle.read() if handle else b""


def _unxz(path: Path, name: str) -> bytes:
    try:
        return lzma.decompress(path.read_bytes())
    except (lzma.LZMAError, OSError) as exc:
        raise BuildError(f"{name}: not xz data this can read ({exc})") from None


# newc (cpio -H newc, what the kernel unpacks as an initramfs): a 110-byte header of "070701" and 13 fields of
# 8 hex digits, the NUL-terminated name, the data, each padded to 4 bytes; the member TRAILER!!! ends it.
NEWC_MAGIC = b"070701"
NEWC_HEADER = 110
NEWC_FIELDS = re.compile(rb"[0-9A-Fa-f]{104}")


def cpio_members(data: bytes, what: str = "the cpio archive") -> list[Member]:
    """The members of a newc cpio archive (what the initramfs is); BuildError naming ``what`` and the byte
    offset when it is not one, or is cut short. Nothing is extracted: a name such as ../../etc/passwd is
    only compared and shown.

    Read by hand, not with libarchive (libarchive-c 5.3 on libarchive 3.6): its entries give no inode, link
    count or device numbers, which this compares because they are bytes of the release; it reports a truncated
    archive as "None (errno=0, retcode=-30, archive_p=...)"; and it takes other cpio dialects (odc, bin) for
    the one the build writes. The format is the fixed header above, in 20 lines.
    """
    return list(_newc(data, what))


def _newc(data: bytes, what: str) -> Iterator[Member]:
    at = 0
    while True:
        header = data[at:at + NEWC_HEADER]
        if not header.startswith(NEWC_MAGIC):
            if len(header) < len(NEWC_MAGIC) and NEWC_MAGIC.startswith(header):
                raise BuildError(f"{what}: the cpio archive is cut short: it ends at byte {at}, before its "
                                 "TRAILER!!! member")
            raise BuildError(f"{what}: not a newc cpio archive (at byte {at}: {header[:6]!r}, not {NEWC_MAGIC!r})")
        if len(header) < NEWC_HEADER:
            raise BuildError(f"{what}: the cpio archive is cut short inside the header at byte {at}")
        if not NEWC_FIELDS.fullmatch(header[6:]):
            raise BuildError(f"{what}: the cpio header at byte {at} has a field that is not 8 hex digits")
        fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        size, name_size = fields[6], fields[11]
        name_end = at + NEWC_HEADER + name_size
        start = (name_end + 3) & ~3
        end = start + size
        if end > len(data):
            raise BuildError(f"{what}: the cpio archive is cut short: the member at byte {at} ends at byte {end}, "
                             f"past its end ({len(data)} bytes)")
        name = data[at + NEWC_HEADER:name_end - 1].decode("utf-8", errors="surrogateescape")
        if name == "TRAILER!!!":
            return
        # ino, mode, uid, gid, nlink, mtime, (size), devmajor, devminor, rdevmajor, rdevminor
        yield Member(name, tuple(fields[:6] + fields[7:11]), data[start:end])
        at = (end + 3) & ~3
