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
SIGNATURES = ".inputs"  # out/.inputs/TASK.json: each task's inputs (name -> digest), to compare across machines


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def inputs_digest(inputs: Mapping[str, str]) -> str:
    """One digest over a task's named inputs: what doit stores and compares."""
    text = "".join(f"{k}\0{v}\n" for k, v in sorted(inputs.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def read_sums(out_dir: Path) -> dict[str, str]:
    """out/SHA256SUMS as name -> sha256 ({} when there is none yet)."""
    try:
        text = (out_dir / SUMS).read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise BuildError(f"cannot read {out_dir / SUMS}: {exc.strerror}") from None
    result = {}
    for number, line in enumerate(text.splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise BuildError(f"{out_dir / SUMS}:{number}: not a 'sha256  name' line",
                             hint="delete it and rebuild (doit -a ...) to recreate it")
        result[name] = digest
    return result


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


def listing(directory: Path) -> dict[str, int]:
    """Every file under ``directory`` (relative path -> size), what an export brought to the host."""
    return {p.relative_to(directory).as_posix(): p.lstat().st_size
            for p in sorted(directory.rglob("*")) if not p.is_dir()}


def install(exported: Path, names: list[str], out_dir: Path, *, label: str) -> dict[str, str]:
    """Move each declared output from the export directory into out/ (rename, so atomic).

    The export must hold exactly the outputs, each checked before any is moved, so a failed build
    changes nothing.
    """
    found = listing(exported)
    missing = [n for n in names if not (exported / n).is_file()]
    if missing:
        produced = ", ".join(found) or "nothing"
        raise BuildError(f"{label}: the build did not produce {', '.join(missing)} (it produced: {produced})")
    extra = sorted(set(found) - set(names))
    if extra:
        raise BuildError(f"{label}: the export holds more than the outputs: {', '.join(extra[:5])}")
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
def _locked(lock_dir: Path) -> Iterator[None]:
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / "out.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def record(out_dir: Path, artifacts: Mapping[str, str], details: Mapping[str, object], *,
           signature: tuple[str, Mapping[str, object]], lock_dir: Path) -> None:
    """Add ``artifacts`` (name -> sha256) to SHA256SUMS and manifest.json, and write the task's input
    signature to .inputs/NAME.json; each file is rewritten atomically. The lock lives in ``lock_dir``
    (build state), never among the artifacts."""
    with _locked(lock_dir):
        name, data = signature
        atomic_write(out_dir / SIGNATURES / f"{name}.json",
                     (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
        manifest_path = out_dir / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = {"artifacts": {}}
        entries = manifest.setdefault("artifacts", {})
        for artifact, digest in artifacts.items():
            entries[artifact] = {"sha256": digest, **details}
        # only artifacts still present are listed
        entries = {n: e for n, e in sorted(entries.items()) if (out_dir / n).is_file()}
        manifest["artifacts"] = entries
        atomic_write(manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
        sums = "".join(f"{e['sha256']}  {n}\n" for n, e in entries.items())
        atomic_write(out_dir / SUMS, sums.encode())

