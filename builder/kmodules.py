"""Which kernel modules an exported modules tar holds, for out/manifest.json: per module its name, path,
the recipe it comes from, that recipe's version and source digest, and whether (and by which key) it is signed.

Out-of-tree modules (the ``module:`` recipe kind) are installed under extra/RECIPE/, so a path says which
recipe built it; every other module is the kernel's own (in-tree, patches included).
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from builder.plan import Plan
    from builder.recipe import Recipe

MODULE_PATH = re.compile(r"^(?:\./)?lib/modules/(?P<release>[^/]+)/(?P<path>.+\.ko(?:\.xz|\.zst|\.gz)?)$")
SIGNATURE_MAGIC = b"~Module signature appended~\n"


def inventory(plan: Plan, tar_path: Path) -> list[dict[str, Any]] | None:
    """The modules in ``tar_path`` with where each comes from; None when it holds no module tree."""
    recipes = {r.name: r for r in plan.graph.order(plan.recipe.name)}
    kernels = {r.module.kernel for r in recipes.values() if r.module is not None} or {"kernel"}
    try:
        with tarfile.open(tar_path) as archive:
            found = [_module(archive, member, match, recipes, kernels) for member in archive
                     if member.isfile() and (match := MODULE_PATH.match(member.name))]
    except (tarfile.TarError, OSError):
        return None
    return sorted(found, key=lambda m: m["path"]) or None


def _module(archive: tarfile.TarFile, member: tarfile.TarInfo, match: re.Match[str], recipes: dict[str, Recipe],
            kernels: set[str]) -> dict[str, Any]:
    path = match["path"]
    name = re.sub(r"\.ko(\.\w+)?$", "", path.rsplit("/", 1)[-1])
    owner = path.split("/")[1] if path.startswith("extra/") and path.count("/") >= 2 else ""
    recipe = recipes.get(owner)
    if recipe is None or recipe.module is None:
        recipe = next((recipes[k] for k in sorted(kernels) if k in recipes), None)
        version = match["release"]
    else:
        version = recipe.module.version or match["release"]
    handle = archive.extractfile(member)
    signer = signature(handle.read()) if handle else None
    return {
        "name": name,
        "path": path,
        "recipe": recipe.name if recipe else None,
        "version": version,
        "source": [f"sha256:{s.sha256}" for s in recipe.sources] if recipe else [],
        "signed": signer is not None,
        "signed_by": signer,
    }


# struct module_signature (include/linux/module_signature.h): algo, hash, id_type, signer_len, key_id_len,
# pad[3], sig_len (big endian), then the magic. id_type 2: the signature is a PKCS#7 / CMS message.
SIGNATURE_STRUCT = 12
PKEY_ID_PKCS7 = 2


def split_signature(module: bytes) -> tuple[bytes, bytes] | None:
    """(the module as built, its PKCS#7 signature) of a module signed by scripts/sign-file; None when the
    module carries no appended signature (or one this cannot read)."""
    if not module.endswith(SIGNATURE_MAGIC) or len(module) < len(SIGNATURE_MAGIC) + SIGNATURE_STRUCT:
        return None
    info = module[-len(SIGNATURE_MAGIC) - SIGNATURE_STRUCT:-len(SIGNATURE_MAGIC)]
    length = int.from_bytes(info[8:12], "big")
    end = len(module) - len(SIGNATURE_MAGIC) - SIGNATURE_STRUCT
    if info[2] != PKEY_ID_PKCS7 or length > end:
        return None
    return module[:end - length], module[end - length:end]


def signature(module: bytes) -> str | None:
    """Who signed ``module``: "keyid:HEX" (the certificate's subjectKeyIdentifier, what sign-file -k puts in
    the signature), "issuer-serial:SHA256" when it names the signer by issuer and serial; None: unsigned."""
    parts = split_signature(module)
    if parts is None:
        return None
    try:
        return _signer(parts[1])
    except (IndexError, ValueError):
        return "unreadable"


def _der(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at ``at``."""
    tag, length = data[at], data[at + 1]
    at += 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4:
            raise ValueError("a DER length this does not read")
        length = int.from_bytes(data[at:at + count], "big")
        at += count
    if at + length > len(data):
        raise ValueError("a DER element past the end")
    return tag, at, at + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    found = []
    while start < end:
        element = _der(data, start)
        found.append(element)
        start = element[2]
    return found


def _signer(pkcs7: bytes) -> str:
    import hashlib

    _, start, end = _der(pkcs7, 0)  # ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT SignedData }
    content = _children(pkcs7, start, end)[1]
    _, start, end = _der(pkcs7, content[1])  # SignedData ::= SEQUENCE { ..., signerInfos SET }
    signer_infos = _children(pkcs7, start, end)[-1]
    first = _children(pkcs7, signer_infos[1], signer_infos[2])[0]  # SignerInfo ::= SEQUENCE { version, sid, ...}
    sid = _children(pkcs7, first[1], first[2])[1]
    if sid[0] == 0x80:  # [0] IMPLICIT SubjectKeyIdentifier
        return "keyid:" + pkcs7[sid[1]:sid[2]].hex()
    return "issuer-serial:" + hashlib.sha256(pkcs7[sid[1]:sid[2]]).hexdigest()
