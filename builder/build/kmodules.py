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
    from builder.model.recipe import Recipe
    from builder.resolve.plan import Plan

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
# Read here by hand: no Python library parses this kernel-internal trailer (kmod's modinfo does, in C, but gives
# no offsets to split the module at, and would be one process per module), and it is 12 fixed bytes.
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
    except (IndexError, TypeError, ValueError):  # what asn1crypto raises for a message it cannot parse
        return "unreadable"


def _signer(pkcs7: bytes) -> str:
    """The first signer's identifier in a CMS SignedData message (RFC 5652), parsed by asn1crypto."""
    import hashlib

    from asn1crypto import cms

    signed_data = cms.ContentInfo.load(pkcs7, strict=True)["content"]
    if not isinstance(signed_data, cms.SignedData):
        raise ValueError("not a CMS SignedData message")
    sid = signed_data["signer_infos"][0]["sid"]
    if sid.name == "subject_key_identifier":  # [0] IMPLICIT SubjectKeyIdentifier: what sign-file -k writes
        return "keyid:" + sid.chosen.native.hex()
    return "issuer-serial:" + hashlib.sha256(sid.chosen.contents).hexdigest()
