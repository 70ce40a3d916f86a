"""Module signing as a release pipeline uses it (the shipped build: MODULE_SIGNING=release, the test key as a
BuildKit secret): the kernel refuses a module signed by another key and an unsigned one; the private key's
bytes are nowhere but in its own file; a key that does not match the certificate, or is no key, is one line."""

from __future__ import annotations

import base64
import lzma
import re
import subprocess
from pathlib import Path

import pytest

from builder.build import kmodules, signatures
from builder.core.platforms import AMD64
from builder.host import qemu

from ..signing import SIGNING, signed
from .conftest import Built, doit, kernel_release, snapshot

pytestmark = [pytest.mark.build]


def _newc(members: list[signatures.Member]) -> bytes:
    """A newc cpio archive of ``members`` (headers as signatures.Member keeps them)."""
    out = b""
    for member in [*members, signatures.Member("TRAILER!!!", (0,) * 10, b"")]:
        name = member.name.encode("utf-8", errors="surrogateescape") + b"\0"
        h = list(member.header)
        fields = [*h[:6], len(member.data), *h[6:10], len(name), 0]
        header = b"070701" + b"".join(f"{f:08x}".encode() for f in fields) + name
        out += header + b"\0" * (-len(header) % 4) + member.data + b"\0" * (-len(member.data) % 4)
    return out


@pytest.mark.boot
def test_a_module_signed_by_another_key_or_not_at_all_is_refused(shipped: Built, tmp_path: Path) -> None:
    release = kernel_release(shipped.out / "modules-amd64.tar")
    members = signatures.cpio_members(lzma.decompress((shipped.out / "initramfs-amd64.xz").read_bytes()))
    changed = []
    for index, member in enumerate(members):
        if member.name.endswith(("/vpoll.ko", "/builder_example.ko")):
            parts = kmodules.split_signature(member.data)
            assert parts is not None, f"{member.name} is not signed in the release"
            # vpoll: the same module, signed by a key the kernel does not trust; builder_example: unsigned
            data = signed(parts[0], tmp_path, "other") if member.name.endswith("/vpoll.ko") else parts[0]
            members[index] = signatures.Member(member.name, member.header, data)
            changed.append(member.name)
    assert len(changed) == 2, changed
    initrd = tmp_path / "initramfs-amd64.xz"
    initrd.write_bytes(lzma.compress(_newc(members), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32))

    result = qemu.boot(AMD64, shipped.out / "vmlinuz-amd64", initrd, timeout=400, console=tmp_path / "console.log")
    assert result.release == release
    console = result.console.replace("\r", "")
    assert "BUILDER-MODULE-FAILED vpoll" in console, console[-3000:]
    assert "BUILDER-MODULE-FAILED builder_example" in console
    assert "Loading of module with unavailable key is rejected" in console  # the kernel's own words
    assert "Loading of unsigned module is rejected" in console
    loaded = re.search(r"BUILDER-MODULES release=\S+ count=\d+ loaded=(\S*)", console)
    assert loaded and sorted(loaded.group(1).split(",")) == ["fat", "loop", "overlay", "squashfs", "vfat"], console


def _needles(key: Path) -> list[bytes]:
    """What would betray the private key: lines of its PEM text, and a run of its DER bytes."""
    lines = [line for line in key.read_text().splitlines() if line and not line.startswith("-----")]
    der = base64.b64decode("".join(lines))
    chunk = next(der[i:i + 48] for i in range(len(der) // 2, len(der) - 48) if b"\n" not in der[i:i + 48])
    return [lines[1].encode(), lines[len(lines) // 2].encode(), lines[-2].encode(), chunk]


def _holding(paths: list[Path], needles: list[bytes]) -> list[str]:
    pattern = Path("/tmp") / f"builder-needles-{id(needles)}"
    pattern.write_bytes(b"\n".join(needles) + b"\n")
    try:
        found = []
        for path in paths:
            if path.exists():
                done = subprocess.run(["grep", "-rlaF", "-f", str(pattern), str(path)], capture_output=True,
                                      text=True, timeout=1800)
                found += done.stdout.splitlines()
        return found
    finally:
        pattern.unlink()


def test_the_private_key_is_nowhere_but_in_its_own_file(shipped: Built, tmp_path: Path) -> None:
    needles = _needles(SIGNING / "release.key")
    assert _holding([SIGNING / "release.key"], needles)  # the search finds the key where it is

    dry = doit(shipped.root, "kernel", "initramfs", "PLATFORM=linux/amd64,linux/arm64", "DRY_RUN=1")
    assert dry.code == 0, dry.text[-3000:]
    assert "--secret id=module-signing-key" in dry.stdout  # the secret is named, by path
    (tmp_path / "dry-run.txt").write_text(dry.text)
    for name in ("initramfs-amd64.xz", "initramfs-arm64.xz"):  # what the compression would hide
        (tmp_path / f"{name}.cpio").write_bytes(lzma.decompress((shipped.out / name).read_bytes()))
    places = [shipped.out, shipped.root / ".builder", shipped.root / ".doit.db", tmp_path]
    assert _holding(places, needles) == []

    # the engine: every file its images, layers and BuildKit's cache gained since this build began
    root = subprocess.run(["docker", "info", "-f", "{{.DockerRootDir}}"], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()
    since = shipped.root / "recipes" / "vars.yaml"  # written just before the shipped build
    new = subprocess.run(["find", root, "-xdev", "-type", "f", "-newer", str(since)], capture_output=True,
                         text=True, timeout=1800).stdout.splitlines()
    assert new, f"nothing in {root} is newer than the build: the search would prove nothing"
    listing = tmp_path / "engine-files"
    listing.write_text("\n".join(new) + "\n")
    pattern = tmp_path / "needles"
    pattern.write_bytes(b"\n".join(needles) + b"\n")
    done = subprocess.run(f"tr '\\n' '\\0' < {listing} | xargs -0 grep -laF -f {pattern} --", shell=True,
                          capture_output=True, text=True, timeout=3600)
    assert done.stdout == "", f"the private key is in the engine's files: {done.stdout[:2000]}"


@pytest.mark.parametrize("key, message", [
    ("other.key", "not the private key of the certificate tests/integration/data/signing/release.crt "
                  "(another key pair)"),
    ("release.crt", "a certificate, not a private key (give the certificate as MODULE_SIGNING_CERT"),
])
def test_a_key_that_does_not_match_the_certificate_or_is_no_key_is_one_line(shipped: Built, key: str,
                                                                             message: str) -> None:
    before = snapshot(shipped.out)
    log = shipped.root / ".builder" / "logs" / "kernel-amd64.log"
    log_before = log.read_bytes() if log.exists() else None
    result = doit(shipped.root, "kernel", "PLATFORM=linux/amd64", f"MODULE_SIGNING_KEY={SIGNING / key}")
    assert result.code == 2, result.text[-3000:]  # checked on the host, before any build
    line = result.last_line()
    assert re.match(rf"error: recipes/kernel/pkg\.yaml:\d+: MODULE_SIGNING_KEY={re.escape(str(SIGNING / key))}: "
                    rf"{re.escape(message)}", line), result.text[-3000:]
    assert (log.read_bytes() if log.exists() else None) == log_before  # no build started
    assert snapshot(shipped.out) == before
    again = doit(shipped.root, "kernel", "PLATFORM=linux/amd64")
    assert again.code == 0, again.text[-3000:]
    assert snapshot(shipped.out) == before
