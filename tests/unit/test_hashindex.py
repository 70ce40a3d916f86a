"""The stat record (git's index model): an output is read again only when its stat says it may have changed,
and no stat trick short of root-level ones makes a changed file look unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.host import hashindex, outputs
from builder.host.hashindex import RACY_NS, RECORD, HashIndex, Stat
from builder.host.outputs import SUMS, Change, publish

LONG_AGO_NS = 1_700_000_000 * 10**9  # an mtime far older than RACY_NS: not racy


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files HashIndex really read, in order."""
    seen: list[str] = []
    real = hashindex.read

    def counting(path: Path | str) -> tuple[str, Stat | None]:
        seen.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(hashindex, "read", counting)
    return seen


def old_file(path: Path, data: bytes) -> Path:
    """A file written long enough ago not to be racy (touch -d)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(LONG_AGO_NS, LONG_AGO_NS))
    return path


def past_one_tick() -> None:
    """Let the kernel's timestamp clock move on (ext4's tick is a few ms): the next ctime is a new one."""
    time.sleep(0.05)


def test_an_unchanged_file_is_read_once_then_trusted(tmp_path: Path, reads: list[str]) -> None:
    image = old_file(tmp_path / "out" / "disk.raw", b"disk")
    index = HashIndex(tmp_path / ".builder")
    assert [index.still(image, sha(b"disk")) for _ in range(3)] == [True, True, True]
    assert reads == ["disk.raw"]
    # a new process (a new index) trusts the record file too
    assert HashIndex(tmp_path / ".builder").still(image, sha(b"disk")) and reads == ["disk.raw"]


def test_a_touched_file_with_the_same_bytes_is_read_once_more_then_trusted(tmp_path: Path, reads: list[str]) -> None:
    image = old_file(tmp_path / "out" / "disk.raw", b"disk")
    index = HashIndex(tmp_path / ".builder")
    assert index.still(image, sha(b"disk"))
    os.utime(image, ns=(LONG_AGO_NS + 10**9, LONG_AGO_NS + 10**9))  # touch -d: another mtime, the same bytes
    assert [index.still(image, sha(b"disk")) for _ in range(3)] == [True, True, True]
    assert reads == ["disk.raw", "disk.raw"]


def test_a_same_size_write_that_restores_mtime_is_caught_by_ctime(tmp_path: Path, reads: list[str]) -> None:
    image = old_file(tmp_path / "out" / "disk.raw", b"disk")
    index = HashIndex(tmp_path / ".builder")
    assert index.still(image, sha(b"disk"))
    recorded = Stat.of(image.stat())
    past_one_tick()
    image.write_bytes(b"DISK")
    os.utime(image, ns=(LONG_AGO_NS, LONG_AGO_NS))
    now = Stat.of(image.stat())
    assert (now.size, now.mtime_ns, now.ino) == (recorded.size, recorded.mtime_ns, recorded.ino)  # only ctime moved
    assert not index.still(image, sha(b"disk"))
    assert index.still(image, sha(b"DISK"))
    assert reads == ["disk.raw", "disk.raw"]


def test_a_replaced_file_is_caught_by_its_inode(tmp_path: Path, reads: list[str]) -> None:
    image = old_file(tmp_path / "out" / "disk.raw", b"disk")
    index = HashIndex(tmp_path / ".builder")
    assert index.still(image, sha(b"disk"))
    old_file(tmp_path / "other", b"DISK").replace(image)  # cp -p other && mv: a new inode, the same size and mtime
    assert not index.still(image, sha(b"disk"))


def test_a_file_written_within_the_granularity_of_its_record_is_read_again(tmp_path: Path,
                                                                          reads: list[str]) -> None:
    # racy git: a record taken in the tick the file was written cannot tell a second write in that tick.
    # The record below says what a first write left (sha of b"one"); the file now holds b"two" with a stat
    # the record matches, as a second write in the same tick on a coarse file system leaves it.
    image = tmp_path / "out" / "disk.raw"
    image.parent.mkdir()
    image.write_bytes(b"two")
    now = Stat.of(image.stat())

    def record(taken_ns: int) -> HashIndex:
        state = tmp_path / f".builder-{taken_ns}"
        state.mkdir()
        entry = [sha(b"one"), now.size, now.mtime_ns, now.ctime_ns, now.ino, now.dev, taken_ns]
        (state / RECORD).write_text(json.dumps({"format": 1, "files": {os.path.realpath(image): entry}}))
        return HashIndex(state)

    assert record(now.mtime_ns + RACY_NS // 2).sha256(image) == sha(b"two")  # racy: read, not trusted
    assert reads == ["disk.raw"]
    assert record(now.mtime_ns + 2 * RACY_NS).sha256(image) == sha(b"one")  # older: the stat is trusted
    assert reads == ["disk.raw"]


def test_a_file_written_just_now_is_read_on_every_check_until_it_is_older(tmp_path: Path,
                                                                          reads: list[str]) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(b"fresh")
    index = HashIndex(tmp_path / ".builder")
    assert index.still(image, sha(b"fresh")) and index.still(image, sha(b"fresh"))
    assert reads == ["disk.raw", "disk.raw"]


@pytest.mark.parametrize("damage", [
    b"\x00garbage", b'{"format": 1, "files": {', b"[]", b'{"format": 99, "files": {}}',
    b'{"format": 1, "files": {"PATH": ["not a sha", 1, 2, 3, 4, 5, 6]}}',
    b'{"format": 1, "files": {"PATH": [1, 2]}}',
])
def test_a_corrupt_record_is_ignored_and_replaced(tmp_path: Path, reads: list[str], damage: bytes) -> None:
    image = old_file(tmp_path / "out" / "disk.raw", b"disk")
    state = tmp_path / ".builder"
    state.mkdir()
    (state / RECORD).write_bytes(damage.replace(b"PATH", os.path.realpath(image).encode()))
    index = HashIndex(state)
    assert index.still(image, sha(b"disk")) and not index.still(image, sha(b"other"))
    assert reads == ["disk.raw"]
    assert json.loads((state / RECORD).read_text())["files"][os.path.realpath(image)][0] == sha(b"disk")


def test_a_record_that_cannot_be_written_only_costs_a_read(tmp_path: Path, reads: list[str]) -> None:
    image = old_file(tmp_path / "disk.raw", b"disk")
    (tmp_path / ".builder").write_text("a file where the state directory goes")
    index = HashIndex(tmp_path / ".builder")
    assert index.still(image, sha(b"disk")) and index.still(image, sha(b"disk"))
    assert reads == ["disk.raw", "disk.raw"]


@pytest.mark.parametrize("make", [lambda p: p.mkdir(), lambda p: os.mkfifo(p), lambda p: None],
                         ids=["directory", "fifo", "missing"])
def test_anything_but_a_regular_file_is_not_still_anything(tmp_path: Path, make: Callable[[Path], None]) -> None:
    make(tmp_path / "disk.raw")
    assert not HashIndex(tmp_path / ".builder").still(tmp_path / "disk.raw", sha(b""))


def test_threads_sharing_one_index_each_get_their_files_digest(tmp_path: Path) -> None:
    files = {tmp_path / f"f{i}": old_file(tmp_path / f"f{i}", str(i).encode() * 1000) for i in range(16)}
    index = HashIndex(tmp_path / ".builder")
    answers: dict[Path, str] = {}

    def check(path: Path) -> None:
        answers[path] = index.sha256(path)

    threads = [threading.Thread(target=check, args=(p,)) for p in files for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert answers == {p: sha(p.read_bytes()) for p in files}
    assert len(json.loads((tmp_path / ".builder" / RECORD).read_text())["files"]) == 16


def test_a_publish_records_new_artifacts_and_keeps_vouching_for_the_others(tmp_path: Path,
                                                                          reads: list[str]) -> None:
    out, state = tmp_path / "out", tmp_path / ".builder"
    index = HashIndex(state)
    publish(out, Change(add={"disk.raw": old_file(tmp_path / "export" / "disk.raw", b"disk")}), lock_dir=state,
            hashes=index)
    sums = (out / SUMS).read_bytes()
    publish(out, Change(add={"vmlinuz": old_file(tmp_path / "export" / "vmlinuz", b"kernel")}), lock_dir=state,
            hashes=index)
    assert reads == ["disk.raw", "vmlinuz"]  # each read once, by the publish that moved it in
    # the second publish hard-linked disk.raw into the next out/ (a new ctime): the record still vouches for it
    assert index.still(out / "disk.raw", sha(b"disk")) and index.still(out / "vmlinuz", sha(b"kernel"))
    assert HashIndex(state).still(out / "disk.raw", sha(b"disk"))
    assert reads == ["disk.raw", "vmlinuz"]
    assert (out / SUMS).read_bytes() == sums + f"{sha(b'kernel')}  vmlinuz\n".encode()  # sha256sum -c format
    assert sorted(p.name for p in out.iterdir()) == ["SHA256SUMS", "disk.raw", "manifest.json", "vmlinuz"]


def test_a_file_changed_between_publishes_is_not_carried_over(tmp_path: Path, reads: list[str]) -> None:
    out, state = tmp_path / "out", tmp_path / ".builder"
    index = HashIndex(state)
    publish(out, Change(add={"disk.raw": old_file(tmp_path / "export" / "disk.raw", b"disk")}), lock_dir=state,
            hashes=index)
    past_one_tick()
    (out / "disk.raw").write_bytes(b"DISK")  # by hand, in out/
    os.utime(out / "disk.raw", ns=(LONG_AGO_NS, LONG_AGO_NS))
    publish(out, Change(add={"vmlinuz": old_file(tmp_path / "export" / "vmlinuz", b"kernel")}), lock_dir=state,
            hashes=index)
    assert not index.still(out / "disk.raw", sha(b"disk"))
    assert reads == ["disk.raw", "vmlinuz", "disk.raw"]


def test_a_write_while_a_publish_runs_is_not_carried_over(tmp_path: Path, reads: list[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    out, state = tmp_path / "out", tmp_path / ".builder"
    index = HashIndex(state)
    publish(out, Change(add={"disk.raw": old_file(tmp_path / "export" / "disk.raw", b"disk")}), lock_dir=state,
            hashes=index)
    link_tree = outputs._link_tree

    def link_then_write(source: Path, dest: Path) -> None:
        link_tree(source, dest)
        (source / "disk.raw").write_bytes(b"DISK!")  # after the record was consulted, before the swap
        os.utime(source / "disk.raw", ns=(LONG_AGO_NS, LONG_AGO_NS))  # an old mtime: not racy, only the size tells

    monkeypatch.setattr(outputs, "_link_tree", link_then_write)
    publish(out, Change(add={"vmlinuz": old_file(tmp_path / "export" / "vmlinuz", b"kernel")}), lock_dir=state,
            hashes=index)
    assert not index.still(out / "disk.raw", sha(b"disk"))
    assert reads == ["disk.raw", "vmlinuz", "disk.raw"]
