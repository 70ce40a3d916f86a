"""out/ is a transaction: a task's artifacts, SHA256SUMS (`sha256sum -c` compatible), manifest.json and the
task's input signature (.inputs/TASK.json) change together or not at all.

How: the next state of out/ is assembled beside it (``.out.next-PID``: every unchanged file hard-linked,
the new ones moved in, the checksum files written), then swapped with out/ in one atomic
``renameat2(RENAME_EXCHANGE)``; the old tree, now at the staging name, is removed. At any instant,
SIGKILL included, ``out`` is the whole old tree or the whole new one. What a kill leaves beside it (a
staging tree) is removed by the next publish, under the same lock. Where the filesystem cannot exchange,
out/ is renamed aside and the new tree renamed in; a kill between the two renames is rolled back by the
next publish.

out/ may be a symlink to a directory elsewhere (a bigger disk): the link is followed, and the next state is
staged beside the directory it names (``.NAME.next-PID`` there), on that directory's own file system, so
the rename stays atomic; the directory holding it must be writable. A mount point cannot be renamed onto,
so out/ (or what it links to) being one is refused before any build: point it at a directory inside.

A process that has ``cd``-ed into out/ keeps the old directory (as with any atomic replace): ``cd .`` again.

tests/faults/sitecustomize.py kills a real run at each step of a publish, from outside this package.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.core.errors import BuildError, os_reason
from builder.host import hashindex
from builder.host.hashindex import HashIndex, Stat

SUMS = "SHA256SUMS"
MANIFEST = "manifest.json"
SIGNATURES = ".inputs"  # out/.inputs/TASK.json: each task's inputs (name -> digest), to compare across machines
RECOVER = "move out/ aside (or restore it) and run doit again: every artifact is rebuilt, fast from the cache"




def inputs_digest(inputs: Mapping[str, str]) -> str:
    """One digest over a task's named inputs: what doit stores and compares."""
    text = "".join(f"{k}\0{v}\n" for k, v in sorted(inputs.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def _shown(path: Path) -> str:
    """``path`` as the user knows it: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def read_sums(out_dir: Path) -> dict[str, str]:
    """out/SHA256SUMS as name -> sha256 ({} when there is none yet). A malformed line is an error naming it."""
    try:
        text = (out_dir / SUMS).read_text()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise BuildError(f"cannot read {_shown(out_dir / SUMS)}: {getattr(exc, 'strerror', None) or exc}",
                         hint=RECOVER) from None
    result = {}
    for number, line in enumerate(text.splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not _is_hex(digest) or not name:
            raise BuildError(f"{_shown(out_dir / SUMS)}:{number}: not a 'sha256  name' line", hint=RECOVER)
        result[name] = digest
    return result


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def read_manifest(out_dir: Path) -> dict[str, dict[str, Any]]:
    """out/manifest.json's artifacts ({} when there is none yet); anything but that shape is an error."""
    path = out_dir / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or "not valid JSON"
        raise BuildError(f"{_shown(path)}: {reason}", hint=RECOVER) from None
    entries = data.get("artifacts") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not all(isinstance(e, dict) and isinstance(e.get("sha256"), str)
                                                for e in entries.values()):
        raise BuildError(f"{_shown(path)}: expected {{\"artifacts\": {{NAME: {{\"sha256\": ...}}}}}}", hint=RECOVER)
    return entries


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    import tempfile  # only when something is written: a no-op writes nothing

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


def check_export(exported: Path, names: list[str], *, label: str) -> None:
    """The export must hold exactly the declared outputs, each a file."""
    found = listing(exported)
    missing = [n for n in names if not (exported / n).is_file()]
    if missing:
        produced = ", ".join(found) or "nothing"
        raise BuildError(f"{label}: the build did not produce {', '.join(missing)} (it produced: {produced})")
    extra = sorted(set(found) - set(names))
    if extra:
        raise BuildError(f"{label}: the export holds more than the outputs: {', '.join(extra[:5])}")


def check_out_dir(out_dir: Path, names: Iterable[str] = ()) -> Path:
    """The directory out/ really is (symlinks resolved), checked before any long work: out/ must be a
    writable directory (or absent), and no artifact name may be taken by a directory there."""
    shown = _shown(out_dir)
    if out_dir.is_symlink() and not out_dir.exists():
        raise BuildError(f"{shown} is a symlink to {os.readlink(out_dir)}, which does not exist",
                         hint="create that directory or remove the link")
    real = out_dir.resolve()
    if real.is_dir() and os.path.ismount(real):  # a publish renames the next tree onto it: not a mount point
        raise BuildError(f"{shown} is a mount point ({real}); a build replaces it by rename as one transaction, "
                         "which a mount point cannot take",
                         hint=f"point {shown} at a directory inside that file system, e.g. {real}/out")
    if real.exists() and not real.is_dir():
        raise BuildError(f"{shown} is a file; artifacts go into a directory of that name", hint="move it aside")
    if real.is_dir() and not real.stat().st_mode & stat.S_IWUSR:
        raise BuildError(f"{shown} is read-only (mode {stat.S_IMODE(real.stat().st_mode):04o})",
                         hint=f"chmod u+w {shown}")
    for name in names:
        if (real / name).is_dir() and not (real / name).is_symlink():
            raise BuildError(f"{shown}/{name} is a directory, where the artifact {name} goes", hint="move it aside")
    if not real.parent.is_dir():
        raise BuildError(f"{shown}: its parent directory {real.parent} does not exist")
    return real


def check(out_dir: Path, names: Iterable[str]) -> None:
    """Everything a publish of ``names`` will need from out/, checked before the long work: a usable
    directory, and readable, consistent SHA256SUMS and manifest.json."""
    real = check_out_dir(out_dir, names)
    if real.is_dir():
        _consistent(real, read_sums(real), read_manifest(real))


def _consistent(real: Path, sums: Mapping[str, str], manifest: Mapping[str, Mapping[str, Any]]) -> None:
    for name, entry in manifest.items():
        if name in sums and sums[name] != entry["sha256"]:
            raise BuildError(f"{_shown(real / MANIFEST)} and {SUMS} disagree about {name}", hint=RECOVER)


def _staging(real: Path) -> list[Path]:
    return sorted(real.parent.glob(f".{real.name}.next-*")) + sorted(real.parent.glob(f".{real.name}.prev"))


def recover(real: Path) -> None:
    """Undo what a killed publish left: restore out/ if it was renamed aside, remove staging trees."""
    previous = real.parent / f".{real.name}.prev"
    if previous.is_dir() and not real.exists():
        os.rename(previous, real)  # killed between the fallback's two renames: roll back
    for leftover in _staging(real):
        shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def _locked(lock_dir: Path) -> Iterator[None]:
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / "out.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _link_tree(source: Path, dest: Path) -> None:
    """``dest`` holds what ``source`` holds: files hard-linked (never rewritten in place), links as links."""
    for directory, subdirs, files in os.walk(source):
        here = Path(directory)
        there = dest / here.relative_to(source)
        for name in subdirs:
            if (here / name).is_symlink():
                os.symlink(os.readlink(here / name), there / name)
            else:
                (there / name).mkdir()
        for name in files:
            if (here / name).is_symlink():
                os.symlink(os.readlink(here / name), there / name)
                continue
            try:
                os.link(here / name, there / name)
            except OSError:
                shutil.copy2(here / name, there / name)
        subdirs[:] = [s for s in subdirs if not (here / s).is_symlink()]


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o644)


def _move(source: Path, dest: Path) -> None:
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copyfile(source, dest)
    os.chmod(dest, 0o644)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically; False when this system or filesystem cannot."""
    import ctypes  # only when a directory output is published: a no-op publishes nothing

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    number = ctypes.get_errno()
    if number in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(number, os.strerror(number), str(first))


def _swap(stage: Path, real: Path) -> Path:
    """Put the staged tree at ``real``; returns where the old tree now is (to be removed)."""
    if not real.exists():
        os.rename(stage, real)
        return stage
    if _exchange(stage, real):
        return stage
    previous = real.parent / f".{real.name}.prev"
    os.rename(real, previous)
    os.rename(stage, real)
    return previous


@dataclass(frozen=True)
class Change:
    """What one publish does to out/: new artifacts (name -> file to move in), artifacts to drop,
    manifest details for the new ones, input signatures to write (slug -> data) or drop (slug -> None)."""

    add: Mapping[str, Path]
    drop: Iterable[str] = ()
    details: Mapping[str, object] | None = None
    signatures: Mapping[str, Mapping[str, object] | None] | None = None
    per_artifact: Mapping[str, Mapping[str, object]] | None = None  # name -> manifest details of that one only


def publish(out_dir: Path, change: Change, *, lock_dir: Path, hashes: HashIndex | None = None) -> dict[str, str]:
    """Apply ``change`` to out/ as one transaction; returns the new artifacts' sha256.

    The lock lives in ``lock_dir`` (build state), never among the artifacts. The stat record ``hashes``
    (default: the one in ``lock_dir``) learns the new artifacts' sha256, and keeps vouching for the kept
    ones, whose ctime the publish's own hard links change."""
    hashes = hashes or HashIndex(lock_dir)
    with _locked(lock_dir):
        real = check_out_dir(out_dir, change.add)
        recover(real)
        sums = read_sums(real) if real.is_dir() else {}
        manifest = read_manifest(real) if real.is_dir() else {}
        for name, digest in sums.items():  # checksums without a manifest entry (written by hand or by an older version)
            manifest.setdefault(name, {"sha256": digest})
        replaced = set(change.add) | set(change.drop)
        vouched = {name: entry for name in sums if name not in replaced
                   and (entry := hashes.known(real / name)) is not None}  # read before the links change ctime
        stage = real.parent / f".{real.name}.next-{os.getpid()}"
        try:
            digests, read_stats = _stage(real, stage, change, sums, manifest)
            old = _swap(stage, real)
        except OSError as exc:
            shutil.rmtree(stage, ignore_errors=True)
            # the file system out/ is on is what the user acts on (not the file being moved in when it filled)
            on = f" (a link to {real})" if out_dir.is_symlink() else ""
            raise BuildError(f"cannot update {_shown(out_dir)}{on}: {os_reason(exc)}",
                             hint="out/ is left as it was") from None
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
        known = {**{name: (e.sha256, e.stat) for name, e in vouched.items()},
                 **{name: (digests[name], st) for name, st in read_stats.items()}}
        _carry_record(hashes, real, known)
        return digests


def _carry_record(hashes: HashIndex, real: Path, known: Mapping[str, tuple[str, Stat]]) -> None:
    """Record each file of the new out/ whose sha256 is known (name -> sha256 and its stat then), when its
    stat now differs from then at most in ctime: the publish's links and unlinks, not a write."""
    entries = {}
    taken = time.time_ns()
    for name, (digest, before) in known.items():
        try:
            now = Stat.of(os.stat(real / name))
        except OSError:
            continue
        if now.same_bytes_as(before):
            entries[os.path.realpath(real / name)] = hashindex.Entry(digest, now, taken)
    if entries:
        hashes.record(entries)


def _stage(real: Path, stage: Path, change: Change, sums: dict[str, str],
           manifest: dict[str, dict[str, Any]]) -> tuple[dict[str, str], dict[str, Stat]]:
    """Build out/'s next state at ``stage``; the new artifacts' sha256, and the stat each had when read
    (those that did not change while being read)."""
    stage.mkdir()
    if real.is_dir():
        _link_tree(real, stage)
    _consistent(real, sums, manifest)
    digests, read_stats = {}, {}
    for name, source in change.add.items():
        _move(source, stage / name)
        digests[name], read_stat = hashindex.read(stage / name)
        if read_stat is not None:
            read_stats[name] = read_stat
    for name in change.drop:
        if (stage / name).is_file() or (stage / name).is_symlink():
            (stage / name).unlink()
        manifest.pop(name, None)
    for slug, data in (change.signatures or {}).items():
        target = stage / SIGNATURES / f"{slug}.json"
        if data is None:
            target.unlink(missing_ok=True)
        else:
            target.unlink(missing_ok=True)  # a hard link to the old tree's file: replace, never rewrite
            _write(target, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    for name, digest in digests.items():
        manifest[name] = {"sha256": digest, **(change.details or {}), **(change.per_artifact or {}).get(name, {})}
    entries = {n: e for n, e in sorted(manifest.items()) if (stage / n).is_file()}
    sums_text = "".join(f"{e['sha256']}  {n}\n" for n, e in entries.items())
    for name in (SUMS, MANIFEST):
        (stage / name).unlink(missing_ok=True)
    _write(stage / SUMS, sums_text.encode())
    _write(stage / MANIFEST, (json.dumps({"artifacts": entries}, indent=2, sort_keys=True) + "\n").encode())
    return digests, read_stats
