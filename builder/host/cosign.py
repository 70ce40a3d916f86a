"""Image signatures the way cosign's key-based scheme stores them, so that `cosign verify --key` accepts them.

The signature of the image ``REPO@sha256:HEX`` is an OCI image tagged ``sha256-HEX.sig`` in the same
repository. Its one layer is the *simple-signing payload* (a small JSON naming the repository and the
digest), and the layer's annotation ``dev.cosignproject.cosign/signature`` holds the base64 ECDSA P-256
signature over that payload. Nothing goes to a transparency log: verify it with
``cosign verify --key pub.pem --insecure-ignore-tlog REF``.

The signatures are deterministic (RFC 6979, cryptography's ``deterministic_signing``), so two pushes of the
same image give the same signature digests too. The key is read on the host when the push signs; it never
enters a build, a layer or a log. Keys: PEM EC P-256, PKCS#8 or SEC1, unencrypted (cosign's own encrypted
key format is not read: export the key with openssl). cryptography does the signing; the documents are
small JSON, written here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.core.errors import BuildError

PAYLOAD_MEDIA = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"
MANIFEST_MEDIA = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA = "application/vnd.oci.image.config.v1+json"
MAX_KEY_BYTES = 64 * 1024


def signature_tag(digest: str) -> str:
    return digest.replace(":", "-", 1) + ".sig"


def payload(repository: str, digest: str) -> bytes:
    """The simple-signing payload for ``repository@digest``, as cosign writes it (Go's key order)."""
    return json.dumps({"critical": {"identity": {"docker-reference": repository},
                                    "image": {"docker-manifest-digest": digest}, "type": PAYLOAD_TYPE},
                       "optional": None}, separators=(",", ":")).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Signature:
    """The signature image of one digest: its manifest, config and payload, ready to push."""

    tag: str
    manifest: bytes
    config: bytes
    payload: bytes


def signature_image(repository: str, digest: str, signature: bytes) -> Signature:
    data = payload(repository, digest)
    config = json.dumps({"architecture": "", "config": {}, "created": "0001-01-01T00:00:00Z",
                         "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
                         "rootfs": {"diff_ids": [_digest(data)], "type": "layers"}}, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_MEDIA,
        "config": {"mediaType": CONFIG_MEDIA, "size": len(config), "digest": _digest(config)},
        "layers": [{"mediaType": PAYLOAD_MEDIA, "size": len(data), "digest": _digest(data),
                    "annotations": {SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()}}],
    }, separators=(",", ":")).encode()
    return Signature(signature_tag(digest), manifest, config, data)


def _read_pem(path: Path, what: str, root: Path | None) -> bytes:
    shown = str(path)
    if root is not None:  # a path in the project that leads out of it, by a link anywhere along it
        lexical = Path(os.path.normpath(path.absolute()))
        if lexical.is_relative_to(Path(os.path.normpath(root.absolute()))) and \
                not path.resolve().is_relative_to(root.resolve()):
            raise BuildError(f"{shown} is a symlink out of the project; the key is not read", where=what)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise BuildError(f"{shown} is not a file", where=what)
        if info.st_size > MAX_KEY_BYTES:
            raise BuildError(f"{shown} is {info.st_size} bytes, too large for a key", where=what)
        return path.read_bytes()
    except FileNotFoundError:
        raise BuildError(f"{shown} does not exist", where=what) from None
    except PermissionError:
        raise BuildError(f"{shown} cannot be read (permission denied)", where=what) from None
    except OSError as exc:
        raise BuildError(f"{shown} cannot be read ({os.strerror(exc.errno or 0)})", where=what) from None


def load_private_key(path: Path, *, where: str = "IMAGE_SIGNING_KEY", root: Path | None = None) -> Any:
    """The EC P-256 private key at ``path``; one line naming the file when it is not one (never its content)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    data = _read_pem(path, where, root)
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise BuildError(f"{path} is an encrypted key; give an unencrypted PEM EC P-256 key", where=where) from None
    except (ValueError, Exception):  # noqa: BLE001 - cryptography raises several kinds for "not a key"
        raise BuildError(f"{path} is not a PEM private key (expected an EC P-256 key, PKCS#8 or SEC1)",
                         where=where) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise BuildError(f"{path} is not an EC P-256 key (cosign's key-based signatures are ECDSA P-256)",
                         where=where)
    return key


def load_public_key(path: Path, *, where: str = "--key") -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    data = _read_pem(path, where, None)
    try:
        key = load_pem_public_key(data)
    except (ValueError, Exception):  # noqa: BLE001
        raise BuildError(f"{path} is not a PEM public key (expected an EC P-256 public key)", where=where) from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise BuildError(f"{path} is not an EC public key", where=where)
    return key


def sign(key: Any, repository: str, digest: str) -> Signature:
    """The deterministic ECDSA P-256 / SHA-256 signature image of ``repository@digest``."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    signature = key.sign(payload(repository, digest), ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    return signature_image(repository, digest, signature)


class Unverified(BuildError):
    """A signature that is missing, wrong, or for another digest."""


def check(public_key: Any, repository: str, digest: str, manifest: bytes, fetch: Any) -> None:
    """Whether the signature image ``manifest`` (of tag sha256-HEX.sig) signs ``repository@digest`` with
    ``public_key``; ``fetch(digest)`` gives a blob. Unverified, in one line, when it does not."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        layers = json.loads(manifest)["layers"]
    except (ValueError, KeyError, TypeError):
        raise Unverified(f"{repository}@{digest}: its signature image {signature_tag(digest)} is not one") from None
    reasons = []
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("mediaType") != PAYLOAD_MEDIA:
            continue
        data = fetch(str(layer.get("digest")))
        try:
            claims = json.loads(data)["critical"]
            signed, named = claims["image"]["docker-manifest-digest"], claims["identity"]["docker-reference"]
            signature = base64.b64decode(layer["annotations"][SIGNATURE_ANNOTATION], validate=True)
        except (ValueError, KeyError, TypeError):
            reasons.append("a payload that is not cosign's")
            continue
        if signed != digest:
            reasons.append(f"a signature of {signed}, not of {digest}")
            continue
        if named != repository:
            reasons.append(f"a signature for {named}, not {repository}")
            continue
        try:
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
            return
        except InvalidSignature:
            reasons.append("a signature the key does not verify")
    raise Unverified(f"{repository}@{digest}: no valid signature ({'; '.join(reasons) or 'no signature payload'})")
