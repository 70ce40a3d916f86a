"""Artifacts land in out/ atomically, with a checksum manifest (`sha256sum -c` compatible)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from builder.errors import BuildError

SUMS = "SHA256SUMS"
MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def install(exported: Path, names: list[str], out_dir: Path, *, label: str) -> dict[str, str]:
    """Move each declared output from the export directory into out/ (rename, so atomic).

    Every output is checked to exist before any is moved, so a failed build changes nothing.
    """
    missing = [n for n in names if not (exported / n).is_file()]
    if missing:
        found = ", ".join(sorted(p.name for p in exported.iterdir())) or "nothing"
        raise BuildError(f"{label}: the build did not produce {', '.join(missing)} (it produced: {found})")
    out_dir.mkdir(parents=True, exist_ok=True)
    digests = {}
    for name in names:
        src = exported / name
        digests[name] = sha256_file(src)
        os.chmod(src, 0o644)
        try:
            os.replace(src, out_dir / name)
        except OSError:  # another filesystem: copy beside the target, then rename
            tmp = out_dir / f".{name}.partial"
            shutil.copyfile(src, tmp)
            os.replace(tmp, out_dir / name)
    return digests


@contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def record(out_dir: Path, artifacts: Mapping[str, str], details: Mapping[str, object]) -> None:
    """Add ``artifacts`` (name -> sha256) to SHA256SUMS and manifest.json; both rewritten atomically."""
    with _locked(out_dir):
        manifest_path = out_dir / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = {"artifacts": {}}
        entries = manifest.setdefault("artifacts", {})
        for name, digest in artifacts.items():
            entries[name] = {"sha256": digest, **details}
        # only artifacts still present are listed
        entries = {n: e for n, e in sorted(entries.items()) if (out_dir / n).is_file()}
        manifest["artifacts"] = entries
        atomic_write(manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
        sums = "".join(f"{e['sha256']}  {n}\n" for n, e in entries.items())
        atomic_write(out_dir / SUMS, sums.encode())
