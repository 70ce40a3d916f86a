"""Keys and certificates, checked on the host before any build: a module-signing key that is not a private
key, is encrypted, or is not the certificate's, is named now - not inside the build, after a kernel compile.

Parsed by the maintained ``cryptography`` library (PEM and DER; RSA, EC and Ed25519 keys), never by hand.
Nothing here ever puts a byte of a key, or of any file it was given, into a message: a key file may be a link
to anything on the host (a Kubernetes secret mount is one), so what it is not is said in general words.
"""

from __future__ import annotations

from typing import Any


class KeyProblem(ValueError):
    """What is wrong with a key or certificate, in words that quote none of its bytes."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def load_certificate(data: bytes) -> Any:
    """The X.509 certificate in ``data`` (PEM, or DER); KeyProblem when it is not one."""
    from cryptography import x509

    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise KeyProblem("not an X.509 certificate (PEM or DER) that can be read") from None


def load_private_key(data: bytes) -> Any:
    """The unencrypted private key in ``data`` (PEM or DER); KeyProblem saying what it is instead."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    pem = b"-----BEGIN" in data
    try:
        if pem:
            return serialization.load_pem_private_key(data, password=None)
        return serialization.load_der_private_key(data, password=None)
    except TypeError:  # "Password was not given but private key is encrypted"
        raise KeyProblem("an encrypted private key; sign-file reads it unencrypted (openssl pkey -in KEY -out "
                         "PLAIN)") from None
    except (ValueError, UnsupportedAlgorithm):
        pass
    if pem and b"CERTIFICATE-----" in data:
        raise KeyProblem("a certificate, not a private key (give the certificate as MODULE_SIGNING_CERT and "
                         "its private key here)")
    if pem and b"PUBLIC KEY-----" in data:
        raise KeyProblem("a public key, not a private key")
    raise KeyProblem("not a private key (PEM or DER) that can be read")


def public_bytes(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def check_pair(key_data: bytes, certificate_data: bytes | None, certificate_name: str = "") -> None:
    """``key_data`` is a private key and, with ``certificate_data`` (known as ``certificate_name``), the one
    that certificate's public key belongs to. KeyProblem otherwise."""
    key = load_private_key(key_data)
    if certificate_data is None:
        return
    try:
        certificate = load_certificate(certificate_data)
    except KeyProblem as exc:
        raise KeyProblem(f"its certificate {certificate_name}: {exc.message}".replace("  ", " ")) from None
    if public_bytes(key.public_key()) != public_bytes(certificate.public_key()):
        raise KeyProblem(f"not the private key of the certificate {certificate_name} (another key pair)"
                         .replace("  ", " "))
