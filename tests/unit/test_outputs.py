"""Artifacts land in out/ atomically, listed in SHA256SUMS (sha256sum -c compatible) and manifest.json."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from builder.errors import BuildError
from builder.outputs import MANIFEST, SUMS, atomic_write, install, record, sha256_file


def recording(out: Path) -> dict[str, Any]:
    """record()'s signature and lock place, beside ``out``."""
    return {"signature": ("task-amd64", {"task": "task:amd64", "inputs": {}}), "lock_dir": out.parent / "state"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def export(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "vmlinuz-amd64").write_bytes(b"kernel")
    (folder / "config-amd64").write_bytes(b"CONFIG_X=y\n")
    (folder / "config-amd64").chmod(0o600)
    (folder / "stray").write_bytes(b"not declared")
    return folder


def test_declared_outputs_are_moved_into_out_and_their_digests_returned(export: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (export / "stray").unlink()
    got = install(export, ["vmlinuz-amd64", "config-amd64"], out, label="kernel:amd64")
    assert got == {"vmlinuz-amd64": sha(b"kernel"), "config-amd64": sha(b"CONFIG_X=y\n")}
    assert (out / "vmlinuz-amd64").read_bytes() == b"kernel"
    assert (out / "config-amd64").stat().st_mode & 0o777 == 0o644
    assert not (export / "vmlinuz-amd64").exists()  # moved, not copied


def test_an_export_holding_more_than_the_outputs_is_an_error_and_changes_nothing(export: Path,
                                                                                tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(BuildError, match=r"^kernel:amd64: the export holds more than the outputs: stray$"):
        install(export, ["vmlinuz-amd64", "config-amd64"], out, label="kernel:amd64")
    assert not out.exists()


def test_a_missing_output_changes_nothing_in_out(export: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "vmlinuz-amd64").write_bytes(b"previous kernel")
    with pytest.raises(BuildError) as info:
        install(export, ["vmlinuz-amd64", "modules-amd64.tar"], out, label="kernel:amd64")
    assert str(info.value) == ("kernel:amd64: the build did not produce modules-amd64.tar "
                               "(it produced: config-amd64, stray, vmlinuz-amd64)")
    assert sorted(p.name for p in out.iterdir()) == ["vmlinuz-amd64"]
    assert (out / "vmlinuz-amd64").read_bytes() == b"previous kernel"
    assert (export / "vmlinuz-amd64").exists()


def test_an_empty_export_says_it_produced_nothing(tmp_path: Path) -> None:
    (tmp_path / "export").mkdir()
    with pytest.raises(BuildError, match=r"did not produce a\.bin \(it produced: nothing\)"):
        install(tmp_path / "export", ["a.bin"], tmp_path / "out", label="a:amd64")


def test_recorded_artifacts_verify_with_sha256sum_c(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "vmlinuz-amd64").write_bytes(b"kernel")
    (out / "initramfs-amd64.xz").write_bytes(b"initramfs")
    record(out, {"vmlinuz-amd64": sha(b"kernel")}, {"task": "kernel:amd64"}, **recording(out))
    record(out, {"initramfs-amd64.xz": sha(b"initramfs")}, {"task": "initramfs:amd64"}, **recording(out))
    assert (out / SUMS).read_text() == (f"{sha(b'initramfs')}  initramfs-amd64.xz\n"
                                        f"{sha(b'kernel')}  vmlinuz-amd64\n")
    check = subprocess.run(["sha256sum", "-c", SUMS], cwd=out, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "vmlinuz-amd64: OK" in check.stdout and "initramfs-amd64.xz: OK" in check.stdout


def test_a_tampered_artifact_fails_sha256sum_c(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.bin").write_bytes(b"a")
    record(out, {"a.bin": sha(b"a")}, {}, **recording(out))
    (out / "a.bin").write_bytes(b"tampered")
    assert subprocess.run(["sha256sum", "--quiet", "-c", SUMS], cwd=out, capture_output=True).returncode != 0


def test_the_manifest_records_each_artifact_with_the_details_of_its_build(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "vmlinuz-amd64").write_bytes(b"kernel")
    details = {"task": "kernel:amd64", "platform": "linux/amd64", "inputs_sha256": "d" * 64,
               "source_date_epoch": 1735689600, "toolchain": {"builder-toolchain:bookworm": "sha256:1"}}
    record(out, {"vmlinuz-amd64": sha(b"kernel")}, details, **recording(out))
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest == {"artifacts": {"vmlinuz-amd64": {"sha256": sha(b"kernel"), **details}}}


def test_artifacts_no_longer_in_out_drop_out_of_the_manifest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name in ("a.bin", "b.bin"):
        (out / name).write_bytes(name.encode())
    record(out, {"a.bin": sha(b"a.bin"), "b.bin": sha(b"b.bin")}, {}, **recording(out))
    (out / "a.bin").unlink()
    (out / "c.bin").write_bytes(b"c.bin")
    record(out, {"c.bin": sha(b"c.bin")}, {}, **recording(out))
    assert sorted(json.loads((out / MANIFEST).read_text())["artifacts"]) == ["b.bin", "c.bin"]
    assert "a.bin" not in (out / SUMS).read_text()


def test_a_corrupt_manifest_is_rebuilt_instead_of_failing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text("{not json")
    (out / "a.bin").write_bytes(b"a")
    record(out, {"a.bin": sha(b"a")}, {}, **recording(out))
    assert list(json.loads((out / MANIFEST).read_text())["artifacts"]) == ["a.bin"]


def test_an_atomic_write_leaves_only_the_finished_file(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "file.txt"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]
    assert sha256_file(target) == sha(b"two")
