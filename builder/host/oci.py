"""OCI images made from a file tree, the same bytes for the same tree, whoever builds it and when.

A BuildKit export of a stage (``--output type=tar``) is the tree; it becomes one layer: entries sorted by name,
every mtime clamped to SOURCE_DATE_EPOCH, owners 0:0 without names, gzip with no name and mtime 0. The config
says ``created`` at SOURCE_DATE_EPOCH too, so the manifest digest depends only on the tree and the epoch.

Written by hand with the standard library (tarfile, gzip, json): the pieces are three small JSON documents and
a tar rewrite, which no maintained Python library makes deterministically (they stamp the clock or keep the
input's owners and order).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

LAYER_MEDIA = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MEDIA = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA = "application/vnd.oci.image.index.v1+json"
GZIP_LEVEL = 9  # pinned: another level is other bytes


@dataclass(frozen=True)
class Blob:
    """Content-addressed bytes and what they are."""

    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, **extra: object) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data), **extra}


def canonical(document: object) -> bytes:
    """JSON with sorted keys and no spaces: one text per document."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def timestamp(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def layer(tree_tar: Path, epoch: int) -> tuple[Blob, str]:
    """The tree in ``tree_tar`` as a normalized gzip layer, and its diff id (the digest of the plain tar)."""
    plain = io.BytesIO()
    with tarfile.open(tree_tar, "r:") as source, tarfile.open(fileobj=plain, mode="w", format=tarfile.PAX_FORMAT,
                                                               encoding="utf-8") as target:
        members = {}
        for member in source.getmembers():
            name = member.name.lstrip("/").removeprefix("./").rstrip("/")
            if name and name != ".":
                members[name] = member  # the last of one name wins, as tar extraction does
        for name in sorted(members):
            member = members[name]
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.size = member.type, member.mode & 0o7777, member.size if member.isreg() else 0
            info.linkname = member.linkname.removeprefix("./") if member.islnk() else member.linkname
            info.mtime = min(int(member.mtime), epoch)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.devmajor, info.devminor = member.devmajor, member.devminor
            target.addfile(info, source.extractfile(member) if member.isreg() else None)
    data = plain.getvalue()
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    return Blob(LAYER_MEDIA, gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)), diff_id


def config(arch: str, epoch: int, diff_ids: list[str], created_by: str) -> Blob:
    """An image config for linux/``arch``: no environment, no command (the image is a tree to copy from)."""
    when = timestamp(epoch)
    return Blob(CONFIG_MEDIA, canonical({
        "architecture": arch,
        "os": "linux",
        "created": when,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": when, "created_by": created_by}],
    }))


def manifest(config_blob: Blob, layers: list[Blob]) -> Blob:
    return Blob(MANIFEST_MEDIA, canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA,
        "config": config_blob.descriptor(),
        "layers": [blob.descriptor() for blob in layers],
    }))


def index(entries: list[dict[str, object]]) -> Blob:
    """An image index over ``entries``: manifest descriptors, each with its ``platform``."""
    return Blob(INDEX_MEDIA, canonical({"schemaVersion": 2, "mediaType": INDEX_MEDIA, "manifests": entries}))
