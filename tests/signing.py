"""The test-only module-signing key pairs (tests/integration/data/signing: release and other, never real
keys) and a module signed the way scripts/sign-file -k signs it, made with the host's openssl."""

from __future__ import annotations

import subprocess
from pathlib import Path

from builder.build import kmodules

SIGNING = Path(__file__).resolve().parent / "integration" / "data" / "signing"
RELEASE_KEYID = "753a3e1e73b88ab5795b9361416a95ade53166b7"  # openssl x509 -in release.crt -ext subjectKeyIdentifier


def signed(module: bytes, work: Path, name: str = "release", *, keyid: bool = True) -> bytes:
    """``module`` with an appended signature by key pair ``name``: a CMS signature naming the signer by its
    subject key identifier (``keyid=False``: by issuer and serial number), without attributes or certificates,
    then struct module_signature and the magic."""
    (work / "m.bin").write_bytes(module)
    subprocess.run(["openssl", "cms", "-sign", "-binary", "-noattr", "-nocerts", "-nosmimecap", "-outform", "DER",
                    *(["-keyid"] if keyid else []), "-md", "sha512", "-signer", str(SIGNING / f"{name}.crt"), "-inkey",
                    str(SIGNING / f"{name}.key"), "-in", str(work / "m.bin"), "-out", str(work / "m.p7s")],
                   check=True, capture_output=True, timeout=60)
    return with_signature(module, (work / "m.p7s").read_bytes())


def with_signature(module: bytes, sig: bytes) -> bytes:
    """``module`` with ``sig`` appended as scripts/sign-file appends a PKCS#7 signature."""
    return module + sig + bytes([0, 0, kmodules.PKEY_ID_PKCS7, 0, 0, 0, 0, 0]) + len(sig).to_bytes(4, "big") + \
        kmodules.SIGNATURE_MAGIC
