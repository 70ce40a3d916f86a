"""Image signatures in cosign's key-based scheme (builder/host/cosign.py), checked by the code and by a second
implementation, the host's openssl, over the payload. The push and `builder verify-image` against a real
registry are in tests/integration/test_imager.py."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from builder.core.errors import BuildError
from builder.host import cosign

REPO = "127.0.0.1:5005/builder/imager"
DIGEST = "sha256:" + "ab" * 32


def _key(tmp_path: Path, name: str = "sign") -> tuple[Path, Path]:
    key, pub = tmp_path / f"{name}.key", tmp_path / f"{name}.pub"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)],
                   check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "ec", "-in", str(key), "-pubout", "-out", str(pub)], check=True, capture_output=True,
                   timeout=60)
    return key, pub


def test_the_payload_is_cosigns_simple_signing_document() -> None:
    assert cosign.payload(REPO, DIGEST) == (
        b'{"critical":{"identity":{"docker-reference":"127.0.0.1:5005/builder/imager"},"image":'
        b'{"docker-manifest-digest":"' + DIGEST.encode() + b'"},"type":"cosign container image signature"},'
        b'"optional":null}')
    assert cosign.signature_tag(DIGEST) == "sha256-" + "ab" * 32 + ".sig"


def test_a_signature_is_deterministic_and_openssl_verifies_it_over_the_payload(tmp_path: Path) -> None:
    key_path, pub = _key(tmp_path)
    key = cosign.load_private_key(key_path)
    first, second = cosign.sign(key, REPO, DIGEST), cosign.sign(key, REPO, DIGEST)
    assert first == second  # RFC 6979: the same signature image, so the same digest, every push
    layer = json.loads(first.manifest)["layers"][0]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    (tmp_path / "payload").write_bytes(first.payload)
    (tmp_path / "sig").write_bytes(base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"]))
    done = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(pub), "-signature", str(tmp_path / "sig"),
                           str(tmp_path / "payload")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Verified OK" in done.stdout, done.stdout + done.stderr
    blobs = {"sha256:" + hashlib.sha256(first.payload).hexdigest(): first.payload}
    cosign.check(cosign.load_public_key(pub), REPO, DIGEST, first.manifest, blobs.__getitem__)


def test_a_wrong_key_another_digest_or_repository_is_one_line(tmp_path: Path) -> None:
    key_path, _ = _key(tmp_path)
    _, other_pub = _key(tmp_path, "other")
    signature = cosign.sign(cosign.load_private_key(key_path), REPO, DIGEST)
    fetch = {"sha256:" + hashlib.sha256(signature.payload).hexdigest(): signature.payload}.__getitem__
    mine = cosign.load_private_key(key_path).public_key()
    with pytest.raises(cosign.Unverified, match=r"no valid signature \(a signature the key does not verify\)$"):
        cosign.check(cosign.load_public_key(other_pub), REPO, DIGEST, signature.manifest, fetch)
    with pytest.raises(cosign.Unverified, match=r"\(a signature of sha256:ab.*, not of sha256:cd"):
        cosign.check(mine, REPO, "sha256:" + "cd" * 32, signature.manifest, fetch)
    with pytest.raises(cosign.Unverified, match=r"\(a signature for 127\.0\.0\.1:5005/builder/imager, not r/x\)"):
        cosign.check(mine, "r/x", DIGEST, signature.manifest, fetch)


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"not a key\n", "is not a PEM private key"),
    (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "is not a PEM private key"),
])
def test_a_signing_key_that_is_not_one_is_named_and_never_quoted(tmp_path: Path, content: bytes | None,
                                                               message: str) -> None:
    path = tmp_path / "k.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BuildError, match=message) as caught:
        cosign.load_private_key(path)
    assert "AAAA" not in str(caught.value) and "not a key\n" not in str(caught.value)


def test_an_rsa_or_encrypted_key_and_a_link_out_of_the_project_are_refused(tmp_path: Path) -> None:
    rsa = tmp_path / "rsa.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(rsa)],
                   check=True, capture_output=True, timeout=120)
    with pytest.raises(BuildError, match="is not an EC P-256 key"):
        cosign.load_private_key(rsa)
    key, _ = _key(tmp_path)
    encrypted = tmp_path / "enc.pem"
    subprocess.run(["openssl", "pkcs8", "-topk8", "-in", str(key), "-out", str(encrypted), "-passout", "pass:x"],
                   check=True, capture_output=True, timeout=60)
    with pytest.raises(BuildError, match="is an encrypted key"):
        cosign.load_private_key(encrypted)
    project = tmp_path / "project"
    project.mkdir()
    (project / "key.pem").symlink_to(key)
    with pytest.raises(BuildError, match="is a symlink out of the project; the key is not read"):
        cosign.load_private_key(project / "key.pem", root=project)
    (project / "keys").symlink_to(tmp_path)  # a directory link along the way
    with pytest.raises(BuildError, match="is a symlink out of the project; the key is not read"):
        cosign.load_private_key(project / "keys" / "sign.key", root=project)
