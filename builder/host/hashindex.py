"""Is this file's sha256 still X? Answered from a stat record where that is safe, by reading the file where
it is not: git's index model.

A no-op build asks it of every output in out/, and a release out/ holds gigabytes of disk images: reading
them costs seconds, a stat costs microseconds. So beside each sha256 the framework computes (checking an
output, publishing one), the state directory keeps the file's stat as it was then, in ``RECORD``: size,
mtime_ns, ctime_ns, inode and device. out/'s SHA256SUMS and manifest.json are not touched. A file whose stat
equals its record has the recorded sha256; any other file is read again, and its record replaced.

Why an equal stat means equal bytes: every write sets the file's mtime and ctime to the current time. A
program can set mtime back (``touch -d``, ``os.utime``) but that sets ctime to now, and nothing unprivileged
sets ctime. Timestamps have a granularity, though (ext4, xfs, btrfs: the kernel's clock tick, a few ms;
ext3 and some NFS: 1 s; FAT: 2 s), so a file written in the tick its stat was recorded in can be written again
in that tick and keep its stat: git's "racy git". A record whose mtime is within ``RACY_NS`` of the moment it
was taken is therefore not trusted: such a file is read on every check until it is older than that.

Where the model can be fooled (a changed file taken for unchanged):
- a write that keeps the size and restores mtime *and* ctime: ctime goes back only with root-level tricks
  (setting the system clock back around the write, editing the file system under the kernel with debugfs),
  or a write in the same timestamp tick as the file's last ctime change that then restores mtime;
- a file system whose timestamps are coarser than RACY_NS (same-second writes on a coarse file system), or
  come from a clock behind this machine's by more than that (an NFS server);
- a change during a publish: the publish hard-links every kept file into the next out/, which sets their
  ctime; a record is carried over when size, mtime, inode and device are the same after as before, so a
  same-size write that restores mtime while a publish runs passes;
- writes to the block device under the file system.
What only costs a re-read: the tree copied or restored elsewhere (other inodes, another device or path), a
``touch``, a missing, unreadable or corrupt record.

The record is replaced atomically, never written in place; a missing, unreadable or malformed one (or a
malformed entry) is no record. Two processes writing at once can lose each other's entries: then a file is
read again, never trusted wrongly. One HashIndex is safe to share between threads.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

RECORD = "hashes.json"  # in the state directory (.builder/)
FORMAT = 1
RACY_NS = 2_000_000_000  # the coarsest common timestamp granularity (FAT: 2 s); finer file systems only re-read


def sha256_file(path: Path) -> str:
    """The sha256 of ``path``'s bytes, read now (no record asked or written)."""
    return read(path)[0]


@dataclass(frozen=True)
class Stat:
    """What a write to a file changes, as a stat shows it."""

    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    dev: int

    @classmethod
    def of(cls, info: os.stat_result) -> Stat:
        return cls(info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev)

    def same_bytes_as(self, before: Stat) -> bool:
        """True when only ctime differs from ``before``: what the framework's own hard link or unlink of a
        file changes (publish), not what a write does."""
        return (self.size, self.mtime_ns, self.ino, self.dev) == (before.size, before.mtime_ns, before.ino,
                                                                  before.dev)


@dataclass(frozen=True)
class Entry:
    """A sha256 and the file's stat when it was computed; ``taken_ns``: wall clock, at or after that stat."""

    sha256: str
    stat: Stat
    taken_ns: int

    def vouches_for(self, now: Stat) -> bool:
        """True when the file, whose stat is ``now``, still has this sha256: the same stat, and not racy."""
        return now == self.stat and self.stat.mtime_ns < self.taken_ns - RACY_NS


def read(path: Path | str) -> tuple[str, Stat | None]:
    """The sha256 of ``path``'s bytes and its stat before reading them; the stat is None when it changed
    while they were read (nothing to record). OSError for anything but a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once, and is refused below
    with open(fd, "rb") as f:
        before = os.fstat(f.fileno())
        if not stat.S_ISREG(before.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
        h = hashlib.sha256()
        while chunk := f.read(1 << 20):
            h.update(chunk)
        after = os.fstat(f.fileno())
    first = Stat.of(before)
    return h.hexdigest(), first if Stat.of(after) == first else None


class HashIndex:
    """The stat record of ``state_dir``: sha256 of files, re-read only when their stat says they changed."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / RECORD
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._loaded: Stat | None = None  # the record file's stat when it was read

    def sha256(self, path: Path) -> str:
        """``path``'s sha256: the recorded one when its stat vouches for it, else read now and recorded."""
        key = os.path.realpath(path)
        entry = self.known(key)
        if entry is not None:
            return entry.sha256
        digest, before = read(key)
        if before is not None:
            self.record({key: Entry(digest, before, time.time_ns())})
        return digest

    def still(self, path: Path, sha256: str) -> bool:
        """True when ``path`` is a regular file whose sha256 is ``sha256``: the one question every up-to-date
        check of out/ asks (tasks, why, the plan memo's tasks)."""
        try:
            return self.sha256(path) == sha256
        except OSError:
            return False

    def known(self, path: Path | str) -> Entry | None:
        """The record of ``path`` when the file's stat now vouches for it (nothing is read); else None."""
        key = os.path.realpath(path)
        try:
            now = os.stat(key)
        except OSError:
            return None
        if not stat.S_ISREG(now.st_mode):
            return None
        with self._lock:
            self._refresh()
            entry = self._entries.get(key)
        return entry if entry is not None and entry.vouches_for(Stat.of(now)) else None

    def record(self, entries: Mapping[str, Entry]) -> None:
        """Add ``entries`` (real path -> entry) and replace the record file; entries whose file is gone or
        has another stat now are dropped. Never raises for the machine: the record only saves time."""
        with self._lock:
            self._refresh()
            merged = {**self._entries, **entries}
            kept = {}
            for key, entry in merged.items():
                try:
                    if Stat.of(os.stat(key)) == entry.stat:
                        kept[key] = entry
                except OSError:
                    pass
            self._entries = kept
            data = {"format": FORMAT, "files": {k: [e.sha256, e.stat.size, e.stat.mtime_ns, e.stat.ctime_ns,
                                                    e.stat.ino, e.stat.dev, e.taken_ns]
                                                for k, e in sorted(kept.items())}}
            with contextlib.suppress(OSError):
                _replace(self.path, json.dumps(data, separators=(",", ":")).encode())
                self._loaded = Stat.of(os.stat(self.path))

    def _refresh(self) -> None:
        """Read the record file again when another HashIndex (or process) replaced it since it was read."""
        try:
            current: Stat | None = Stat.of(os.stat(self.path))
        except OSError:
            current = None
        if current == self._loaded and current is not None:
            return
        self._loaded, self._entries = current, _load(self.path) if current is not None else {}


def _load(path: Path) -> dict[str, Entry]:
    """The entries of a record file; {} for one that cannot be read, a malformed entry left out."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) and data.get("format") == FORMAT else None
    if not isinstance(files, dict):
        return {}
    entries = {}
    for key, value in files.items():
        if (isinstance(value, list) and len(value) == 7 and isinstance(value[0], str) and len(value[0]) == 64
                and all(type(v) is int for v in value[1:])):
            entries[key] = Entry(value[0], Stat(*value[1:6]), value[6])
    return entries


def _replace(path: Path, data: bytes) -> None:
    """Write ``path`` so that readers see the old file or the new one, never a part (outputs.atomic_write's
    twin: this module sits below outputs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    import tempfile  # only when something is written: a no-op writes nothing

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
