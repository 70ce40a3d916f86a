"""The executor's paths, with a stand-in docker client (a shell script) in place of BuildKit: what lands
in out/ on success, and that every failure leaves out/ and the temporary build directories as they were."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.build.executor import execute
from builder.core.errors import BuildError
from builder.core.platforms import AMD64
from builder.host import backend
from builder.host.backend import BuildKit
from builder.host.outputs import read_sums
from builder.resolve.project import Project

from .test_render import ARTIFACTS

MakeProject = Callable[..., Project]

FAKE_DOCKER = """#!/bin/sh
# writes what $BEHAVIOUR says into the --output dest directory
for arg; do case $arg in type=local,dest=*) dest=${arg#type=local,dest=} ;; esac; done
case $BEHAVIOUR in
  ok) echo "#1 [k 1/1] RUN" ; printf k >"$dest/k-amd64.bin" ; printf m >"$dest/m-amd64.tar" ;;
  extra) printf k >"$dest/k-amd64.bin" ; printf m >"$dest/m-amd64.tar" ; printf x >"$dest/extra" ;;
  fail) echo "##builder-error## the recipe said no" ; exit 1 ;;
esac
"""


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    script = tmp_path / "fake-docker"
    script.write_text(FAKE_DOCKER)
    script.chmod(0o755)
    monkeypatch.setattr(backend.BuildKits, "select", lambda self, *args: BuildKit(str(script), buildx=True))

    def behave(how: str) -> None:
        monkeypatch.setenv("BEHAVIOUR", how)

    return behave


def leftovers(project: Project) -> list[str]:
    tmp = project.state_dir / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def test_a_build_lands_its_outputs_sums_manifest_and_signature(make_project: MakeProject, docker: Callable[[str], None],
                                                              fake_engine: dict[str, str | None]) -> None:
    docker("ok")
    project = make_project(ARTIFACTS)
    values = execute(project.plan("k", AMD64), project)
    assert (project.out_dir / "k-amd64.bin").read_bytes() == b"k"
    assert set(read_sums(project.out_dir)) == {"k-amd64.bin", "m-amd64.tar"}
    manifest = json.loads((project.out_dir / "manifest.json").read_text())
    assert manifest["artifacts"]["k-amd64.bin"]["task"] == "k:amd64"
    signature = json.loads((project.out_dir / ".inputs" / "k-amd64.json").read_text())
    assert signature["digest"] == values["digest"] and signature["inputs"] == values["inputs"]
    assert leftovers(project) == []
    assert not (project.out_dir / ".lock").exists()  # state stays out of out/


@pytest.mark.parametrize(("how", "message"), [
    ("fail", r"^k:amd64: the recipe said no$"),
    ("extra", r"^k:amd64: the export holds more than the outputs: extra$"),
])
def test_a_failed_build_changes_nothing_in_out(make_project: MakeProject, docker: Callable[[str], None],
                                               fake_engine: dict[str, str | None], how: str, message: str) -> None:
    docker(how)
    project = make_project(ARTIFACTS)
    project.out_dir.mkdir()
    (project.out_dir / "k-amd64.bin").write_bytes(b"an earlier build")
    with pytest.raises(BuildError, match=message):
        execute(project.plan("k", AMD64), project)
    assert sorted(p.name for p in project.out_dir.iterdir()) == ["k-amd64.bin"]
    assert (project.out_dir / "k-amd64.bin").read_bytes() == b"an earlier build"
    assert leftovers(project) == []


def test_an_artifact_that_was_never_built_is_named_with_its_task(make_project: MakeProject,
                                                                 docker: Callable[[str], None],
                                                                 fake_engine: dict[str, str | None]) -> None:
    docker("ok")
    project = make_project(ARTIFACTS)
    with pytest.raises(BuildError, match=r"^i:amd64 takes out/m-amd64\.tar, which has not been built \(build k:amd64"):
        execute(project.plan("i", AMD64), project)


def test_an_artifact_whose_bytes_disagree_with_sha256sums_is_refused(make_project: MakeProject,
                                                                    docker: Callable[[str], None],
                                                                    fake_engine: dict[str, str | None]) -> None:
    docker("ok")
    project = make_project(ARTIFACTS)
    execute(project.plan("k", AMD64), project)
    (project.out_dir / "m-amd64.tar").write_bytes(b"tampered")
    with pytest.raises(BuildError, match=r"out/m-amd64\.tar does not match its sha256 in out/SHA256SUMS"):
        execute(project.plan("i", AMD64), project)
    assert leftovers(project) == []
