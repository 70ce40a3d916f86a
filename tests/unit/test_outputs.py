"""out/ is a transaction: artifacts, SHA256SUMS (sha256sum -c compatible), manifest.json and the input
signatures change together or not at all - proven by killing a real process at every write boundary."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from builder.core.errors import BuildError
from builder.host import outputs
from builder.host.hashindex import sha256_file
from builder.host.outputs import MANIFEST, SUMS, Change, atomic_write, check_export, publish
from tests.faults.sitecustomize import POINTS, VARIABLE


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def add(tmp_path: Path, **files: bytes) -> dict[str, Path]:
    """Files to publish (name -> path), written into an export directory."""
    export = tmp_path / "export"
    export.mkdir(exist_ok=True)
    result = {}
    for name, data in files.items():
        name = name.replace("_", "-")
        (export / name).write_bytes(data)
        result[name] = export / name
    return result


def put(out: Path, tmp_path: Path, slug: str = "task-amd64", **files: bytes) -> dict[str, str]:
    return publish(out, Change(add=add(tmp_path, **files), details={"task": slug},
                               signatures={slug: {"task": slug, "inputs": {}}}), lock_dir=tmp_path / "state")


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes: out/ exactly."""
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()} if directory.exists() else {}


def verifies(out: Path) -> bool:
    return subprocess.run(["sha256sum", "--quiet", "--strict", "-c", SUMS], cwd=out,
                          capture_output=True).returncode == 0


@pytest.fixture
def export(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "vmlinuz-amd64").write_bytes(b"kernel")
    (folder / "config-amd64").write_bytes(b"CONFIG_X=y\n")
    (folder / "stray").write_bytes(b"not declared")
    return folder


def test_an_export_holding_more_than_the_outputs_is_an_error(export: Path) -> None:
    with pytest.raises(BuildError, match=r"^kernel:amd64: the export holds more than the outputs: stray$"):
        check_export(export, ["vmlinuz-amd64", "config-amd64"], label="kernel:amd64")


def test_a_missing_output_names_what_the_build_produced(export: Path) -> None:
    with pytest.raises(BuildError) as info:
        check_export(export, ["vmlinuz-amd64", "modules-amd64.tar"], label="kernel:amd64")
    assert str(info.value) == ("kernel:amd64: the build did not produce modules-amd64.tar "
                               "(it produced: config-amd64, stray, vmlinuz-amd64)")


def test_an_empty_export_says_it_produced_nothing(tmp_path: Path) -> None:
    (tmp_path / "export").mkdir()
    with pytest.raises(BuildError, match=r"did not produce a\.bin \(it produced: nothing\)"):
        check_export(tmp_path / "export", ["a.bin"], label="a:amd64")


def test_published_artifacts_are_moved_in_listed_and_verify_with_sha256sum_c(tmp_path: Path) -> None:
    out = tmp_path / "out"
    files = add(tmp_path, vmlinuz_amd64=b"kernel")
    os.chmod(files["vmlinuz-amd64"], 0o600)
    assert publish(out, Change(add=files), lock_dir=tmp_path / "state") == {"vmlinuz-amd64": sha(b"kernel")}
    put(out, tmp_path, "initramfs-amd64", **{"initramfs_amd64.xz": b"initramfs"})
    assert (out / SUMS).read_text() == (f"{sha(b'initramfs')}  initramfs-amd64.xz\n"
                                        f"{sha(b'kernel')}  vmlinuz-amd64\n")
    assert (out / "vmlinuz-amd64").stat().st_mode & 0o777 == 0o644
    assert not files["vmlinuz-amd64"].exists()  # moved, not copied
    assert verifies(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "out", "state"]  # no staging left


def test_a_tampered_artifact_fails_sha256sum_c(tmp_path: Path) -> None:
    out = tmp_path / "out"
    put(out, tmp_path, a_bin=b"a")
    (out / "a-bin").write_bytes(b"tampered")
    assert not verifies(out)


def test_the_manifest_records_each_artifact_with_the_details_of_its_build(tmp_path: Path) -> None:
    out = tmp_path / "out"
    details = {"task": "kernel:amd64", "platform": "linux/amd64", "inputs_sha256": "d" * 64,
               "source_date_epoch": 1735689600, "toolchain": {"builder-toolchain:bookworm": "sha256:1"}}
    publish(out, Change(add=add(tmp_path, vmlinuz_amd64=b"kernel"), details=details), lock_dir=tmp_path / "s")
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest == {"artifacts": {"vmlinuz-amd64": {"sha256": sha(b"kernel"), **details}}}


def test_a_signature_is_written_and_dropped_with_its_artifacts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    put(out, tmp_path, "a-amd64", a_bin=b"a")
    put(out, tmp_path, "b-amd64", b_bin=b"b")
    assert json.loads((out / ".inputs/a-amd64.json").read_text())["task"] == "a-amd64"
    publish(out, Change(add={}, drop=["a-bin"], signatures={"a-amd64": None}), lock_dir=tmp_path / "state")
    assert sorted(tree(out)) == sorted([".inputs/b-amd64.json", MANIFEST, SUMS, "b-bin"])
    assert list(json.loads((out / MANIFEST).read_text())["artifacts"]) == ["b-bin"]
    assert verifies(out)


def test_files_of_other_tasks_and_of_the_user_are_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    put(out, tmp_path, a_bin=b"a")
    put(out, tmp_path, a_bin=b"a2")
    assert tree(out)["notes.txt"] == b"mine\n"
    assert tree(out)["a-bin"] == b"a2"


def test_checksums_written_by_hand_are_kept_when_there_is_no_manifest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.bin").write_bytes(b"old")
    (out / SUMS).write_text(f"{sha(b'old')}  old.bin\n")
    put(out, tmp_path, a_bin=b"a")
    assert "old.bin" in (out / SUMS).read_text() and verifies(out)


@pytest.mark.parametrize(("name", "text", "expect"), [
    (SUMS, "not a checksum line\n", r"out/SHA256SUMS:1: not a 'sha256  name' line"),
    (SUMS, "z" * 64 + "  a\n", r"out/SHA256SUMS:1: not a 'sha256  name' line"),
    (MANIFEST, "{not json", r"out/manifest.json: not valid JSON"),
    (MANIFEST, '{"artifacts": []}', r"out/manifest.json: expected"),
    (MANIFEST, '{"artifacts": {"a": {"sha256": "' + "1" * 64 + '"}}}', r"disagree about a"),
])
def test_corrupt_checksum_files_are_named_and_out_is_left_as_it_was(tmp_path: Path, monkeypatch: Any, name: str,
                                                                   text: str, expect: str) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    put(out, tmp_path, a=b"a")
    (out / name).write_text(text)
    before = tree(out)
    with pytest.raises(BuildError, match=expect) as info:
        put(out, tmp_path, b=b"b")
    assert "rebuilt" in str(info.value)  # says how to recover
    assert tree(out) == before


@pytest.mark.parametrize(("make", "expect"), [
    (lambda out: out.write_text("a file"), r"out is a file"),
    (lambda out: out.symlink_to("nowhere"), r"out is a symlink to nowhere, which does not exist"),
    (lambda out: (out.mkdir(), out.chmod(0o555)), r"out is read-only \(mode 0555\)"),
    (lambda out: (out.mkdir(), (out / "a").mkdir()), r"out/a is a directory, where the artifact a goes"),
])
def test_an_unusable_out_is_an_error_before_anything_changes(tmp_path: Path, monkeypatch: Any, make: Any,
                                                            expect: str) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    make(out)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(BuildError, match=expect):
        put(out, tmp_path, a=b"a")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({*before, "export", "state"})


def test_out_may_be_a_symlink_to_a_directory_and_stays_one(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out").symlink_to("elsewhere")
    put(tmp_path / "out", tmp_path, a=b"a")
    assert (tmp_path / "out").is_symlink() and (tmp_path / "elsewhere" / "a").read_bytes() == b"a"


def test_without_an_atomic_exchange_out_is_renamed_aside_and_back(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    put(out, tmp_path, a=b"a")
    put(out, tmp_path, b=b"b")
    assert sorted(tree(out)) == sorted([".inputs/task-amd64.json", MANIFEST, SUMS, "a", "b"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "out", "state"]
    os.rename(out, tmp_path / ".out.prev")  # a kill between the fallback's two renames
    put(out, tmp_path, c=b"c")
    assert sorted(tree(out)) == sorted([".inputs/task-amd64.json", MANIFEST, SUMS, "a", "b", "c"])


def test_a_full_disk_while_staging_leaves_out_as_it_was(tmp_path: Path, monkeypatch: Any) -> None:
    out = tmp_path / "out"
    put(out, tmp_path, a=b"a")
    before = tree(out)
    move = outputs._move

    def full(source: Path, dest: Path) -> None:
        move(source, dest)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(outputs, "_move", full)
    with pytest.raises(BuildError, match=r"^cannot update .*out: no space left on device \(out/ is left as it was\)$"):
        put(out, tmp_path, a=b"new", b=b"b")
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "out", "state"]


KILLED = """
import sys
from pathlib import Path
from builder.host.outputs import Change, publish
out, export = Path(sys.argv[1]), Path(sys.argv[2])
publish(out, Change(add={p.name: p for p in sorted(export.iterdir())}, drop=["gone"], details={"run": 2},
                    signatures={"task-amd64": {"run": 2}}), lock_dir=out.parent / "state")
"""


FAULTS = os.pathsep.join([str(Path(__file__).resolve().parents[1] / "faults"),
                          str(Path(__file__).resolve().parents[2])])  # sitecustomize: BUILDER_FAULT=POINT kills


@pytest.mark.parametrize("point", POINTS)
def test_a_kill_at_any_write_boundary_leaves_out_whole_and_the_next_publish_converges(tmp_path: Path,
                                                                                      point: str) -> None:
    out = tmp_path / "out"
    put(out, tmp_path, a=b"old a", gone=b"to be dropped", kept=b"kept")
    before = tree(out)
    export = tmp_path / "export2"
    export.mkdir()
    (export / "a").write_bytes(b"new a")
    (export / "b").write_bytes(b"new b")
    killed = subprocess.run([sys.executable, "-c", KILLED, str(out), str(export)], capture_output=True,
                            env={**os.environ, VARIABLE: point, "PYTHONPATH": FAULTS}, cwd=tmp_path)
    assert killed.returncode == -9, killed.stderr.decode()
    after_kill = tree(out)
    assert verifies(out)
    assert after_kill == before or (after_kill["a"], after_kill["b"]) == (b"new a", b"new b")  # never a mix
    assert "gone" in after_kill if after_kill == before else "gone" not in after_kill
    for name in ("a", "b"):  # the next run, as doit would rerun the task
        (export / name).write_bytes(f"new {name}".encode())
    done = subprocess.run([sys.executable, "-c", KILLED, str(out), str(export)], capture_output=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": FAULTS})
    assert done.returncode == 0, done.stderr.decode()
    final = tree(out)
    assert (final["a"], final["b"], final["kept"]) == (b"new a", b"new b", b"kept") and "gone" not in final
    assert json.loads(final[".inputs/task-amd64.json"]) == {"run": 2}
    assert verifies(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "export2", "out", "state"]  # nothing left


def test_an_atomic_write_leaves_only_the_finished_file(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "file.txt"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]
    assert sha256_file(target) == sha(b"two")
