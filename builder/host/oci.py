"""OCI images made from a file tree, the same bytes for the same tree, whoever builds it and when.

A BuildKit export of a stage (``--output type=tar``) is the tree; it becomes one layer: entries sorted by name,
every mtime clamped to SOURCE_DATE_EPOCH, owners 0:0 without names, gzip with no name and mtime 0. The config
says ``created`` at SOURCE_DATE_EPOCH too, so the manifest digest depends only on the tree and the epoch.

Written by hand with the standard library (tarfile, zlib, json): the pieces are three small JSON documents and
a tar rewrite, which no maintained Python library makes deterministically (they stamp the clock or keep the
input's owners and order). The gzip member is written here too, around zlib's deflate: the standard library's
gzip header differs between Python versions (the OS byte), so the layer digests would depend on the host's
Python; zlib's deflate output at level 9 is the one byte stream it has made for decades (docs/reproducibility.md).

An image recipe's archive (``archive``) is an OCI image layout in a tar that docker load also reads: the layout
(oci-layout, index.json, blobs/sha256/...) plus docker's manifest.json naming the same blobs, the layout
docker save itself writes since Docker 25.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tarfile
import zlib
from collections.abc import Mapping, Sequence
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
    return Blob(LAYER_MEDIA, gzip_bytes(data)), diff_id


GZIP_HEADER = bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 2, 0xFF])  # deflate, no name, mtime 0, level 9, OS unknown


class Gzip:
    """A gzip member written incrementally: the fixed header above, zlib's raw deflate, CRC-32 and size."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, 8)
        self._crc, self._size, self._started = 0, 0, False

    def feed(self, data: bytes) -> bytes:
        head = b"" if self._started else GZIP_HEADER
        self._started = True
        self._crc, self._size = zlib.crc32(data, self._crc), self._size + len(data)
        return head + self._deflate.compress(data)

    def finish(self) -> bytes:
        head = b"" if self._started else GZIP_HEADER
        return head + self._deflate.flush() + struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF)


def gzip_bytes(data: bytes) -> bytes:
    member = Gzip()
    return member.feed(data) + member.finish()


def gzip_file(source: Path, dest: Path) -> tuple[str, str, int]:
    """``source`` gzipped into ``dest``: (the digest of ``source``, the digest of ``dest``, its size)."""
    member, plain, packed, size = Gzip(), hashlib.sha256(), hashlib.sha256(), 0
    with open(source, "rb") as src, open(dest, "wb") as out:
        while block := src.read(1 << 20):
            plain.update(block)
            chunk = member.feed(block)
            packed.update(chunk)
            size += out.write(chunk)
        chunk = member.finish()
        packed.update(chunk)
        size += out.write(chunk)
    return f"sha256:{plain.hexdigest()}", f"sha256:{packed.hexdigest()}", size


@dataclass(frozen=True)
class FileBlob:
    """A blob too large to hold in memory (a base layer): content-addressed bytes in a file."""

    media_type: str
    path: Path
    digest: str
    size: int

    def descriptor(self, **extra: object) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


def config(arch: str, epoch: int, diff_ids: list[str], created_by: str | Sequence[str],
           runtime: Mapping[str, object] | None = None) -> Blob:
    """An image config for linux/``arch``. Without ``runtime`` no environment and no command (the image is a
    tree to copy from); with it (Entrypoint, Cmd, Env, WorkingDir) an image to run. ``created_by``: one
    history entry per layer."""
    when = timestamp(epoch)
    steps = [created_by] if isinstance(created_by, str) else list(created_by)
    return Blob(CONFIG_MEDIA, canonical({
        "architecture": arch,
        "os": "linux",
        "created": when,
        "config": dict(runtime or {}),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": when, "created_by": step} for step in steps],
    }))


def manifest(config_blob: Blob, layers: Sequence[Blob | FileBlob]) -> Blob:
    return Blob(MANIFEST_MEDIA, canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA,
        "config": config_blob.descriptor(),
        "layers": [blob.descriptor() for blob in layers],
    }))


def index(entries: list[dict[str, object]]) -> Blob:
    """An image index over ``entries``: manifest descriptors, each with its ``platform``."""
    return Blob(INDEX_MEDIA, canonical({"schemaVersion": 2, "mediaType": INDEX_MEDIA, "manifests": entries}))


Entry = tuple[Blob, Blob, Sequence["Blob | FileBlob"], str | None]  # manifest, config, layers, reference


def archive(dest: Path, epoch: int, entries: Sequence[Entry]) -> None:
    """An OCI archive at ``dest`` over ``entries``: (manifest, config, layers, reference or None) per image,
    which docker load and skopeo copy oci-archive: both take. Entries sorted by name, every date ``epoch``,
    owners 0:0, so the same images are the same archive bytes."""
    blobs: dict[str, Blob | FileBlob] = {}
    index_entries, docker_manifest = [], []
    for manifest_blob, config_blob, layers, reference in entries:
        for blob in (manifest_blob, config_blob, *layers):
            blobs[blob.digest] = blob
        platform = json.loads(config_blob.data)
        descriptor = manifest_blob.descriptor(platform={"architecture": platform["architecture"], "os": "linux"})
        if reference:
            descriptor["annotations"] = {"io.containerd.image.name": reference,
                                         "org.opencontainers.image.ref.name": reference.rpartition(":")[2]}
        index_entries.append(descriptor)
        docker_manifest.append({"Config": _blob_path(config_blob.digest), "RepoTags": [reference] if reference else [],
                                "Layers": [_blob_path(layer.digest) for layer in layers]})
    documents = {
        "oci-layout": canonical({"imageLayoutVersion": "1.0.0"}),
        "index.json": index(index_entries).data,
        "manifest.json": canonical(docker_manifest),
    }
    part = dest.with_name(f".{dest.name}.part")
    with tarfile.open(part, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in ("blobs", "blobs/sha256"):
            tar.addfile(_entry(name, epoch, directory=True))
        for digest in sorted(blobs):
            blob = blobs[digest]
            if isinstance(blob, FileBlob):
                with open(blob.path, "rb") as data:
                    tar.addfile(_entry(_blob_path(digest), epoch, size=blob.size), data)
            else:
                tar.addfile(_entry(_blob_path(digest), epoch, size=len(blob.data)), io.BytesIO(blob.data))
        for name in sorted(documents):
            tar.addfile(_entry(name, epoch, size=len(documents[name])), io.BytesIO(documents[name]))
    part.replace(dest)


def _blob_path(digest: str) -> str:
    return "blobs/" + digest.replace(":", "/", 1)


def _entry(name: str, epoch: int, *, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode, info.size, info.mtime = (0o755 if directory else 0o644), size, epoch
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def read_archive(path: Path) -> list[dict[str, object]]:
    """The manifests an OCI archive's index lists (what a test or ``builder`` reads back)."""
    with tarfile.open(path, "r:") as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise ValueError(f"{path}: no index.json")
        return list(json.loads(member.read())["manifests"])

