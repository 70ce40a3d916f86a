"""Messages that lead to the fix: an absent image says how to get *that* image, a failed toolchain bootstrap
names the log it kept."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.build import toolchain
from builder.cli.commands import main
from builder.core.errors import BuildError
from builder.core.platforms import AMD64
from builder.host.engine import Engine
from builder.resolve.project import Project

MakeProject = Callable[..., Project]

WITH_IMAGE = {"recipes/app/pkg.yaml": ("name: app\nvariant: scratch\ndependencies:\n"
                                       "  - image: registry.example/base:1\n"
                                       "finalize:\n  - from: /\noutputs:\n  - app-{{ ARCH }}\n")}
ON_TOOLCHAIN = {"recipes/app/pkg.yaml": ("name: app\nsteps:\n  - build: make\nfinalize:\n  - from: /\n"
                                         "outputs:\n  - app\n")}


def inputs_error(project: Project) -> str:
    plan = project.plan("app", AMD64)
    with pytest.raises(BuildError) as info:
        plan.inputs(project.identities)
    return str(info.value)


def test_an_absent_image_dependency_is_to_be_built_or_pulled_not_bootstrapped(
        make_project: MakeProject, fake_engine: dict[str, str | None]) -> None:
    fake_engine["registry.example/base:1"] = None
    assert inputs_error(make_project(WITH_IMAGE)) == (
        "image registry.example/base:1 (recipes/app/pkg.yaml:4) is not in the Docker engine (build or pull that "
        "image first: docker pull registry.example/base:1, or docker load -i FILE)")


def test_the_absent_default_toolchain_is_made_by_setup_or_toolchain_ensure(
        make_project: MakeProject, fake_engine: dict[str, str | None]) -> None:
    fake_engine["builder-toolchain:bookworm"] = None
    assert inputs_error(make_project(ON_TOOLCHAIN)) == (
        "image builder-toolchain:bookworm (TOOLCHAIN) is not in the Docker engine (run ./setup.sh or "
        "'builder toolchain ensure')")


def test_an_absent_toolchain_of_ones_own_is_pulled_or_made_under_its_name(
        make_project: MakeProject, fake_engine: dict[str, str | None]) -> None:
    fake_engine["registry.example/tc:7"] = None
    assert inputs_error(make_project(ON_TOOLCHAIN, {"TOOLCHAIN": "registry.example/tc:7"})) == (
        "image registry.example/tc:7 (TOOLCHAIN) is not in the Docker engine (docker pull registry.example/tc:7, "
        "or make it here: builder toolchain ensure --ref registry.example/tc:7)")


def test_a_failed_toolchain_bootstrap_is_one_line_naming_the_log_it_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mmdebstrap").write_text("#!/bin/sh\necho 'I: resolving dependencies'\n"
                                        "echo 'E: Unable to locate package gcc-aarch64-linux-gnu'\nexit 25\n")
    (bin_dir / "mmdebstrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("BUILDER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(Engine, "image_id", lambda self, ref: None)
    result = CliRunner().invoke(main, ["toolchain", "ensure", "--ref", "t:1", "--mirror", "http://mirror.example/d"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    log = tmp_path / "cache" / "logs" / "toolchain-bookworm.log"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: mmdebstrap of bookworm failed with exit status 25: E: Unable to locate package "
                      f"gcc-aarch64-linux-gnu (full log: {log})"]
    assert "I: resolving dependencies" in log.read_text()
    assert toolchain.bootstrap_log("bookworm") == log
