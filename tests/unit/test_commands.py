"""Recipe commands: tasks that are not builds (kernel config write-back). A command starts from the build
tree after a named step, runs its script, and its results go back into the project - never into out/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from builder.build.executor import _first_changes, _project_file
from builder.core.errors import BuildError, RecipeError
from builder.core.platforms import AMD64, ARM64
from builder.resolve.project import Project
from builder.schedule.tasks import generate

MakeProject = Callable[..., Project]
TOOLCHAIN = "example.invalid/toolchain:7"

RECIPE = """\
name: k
files:
  - src: configs/config-{{ ARCH }}
    dest: config
steps:
  - name: source
    prepare: echo unpack
  - prepare: echo configure
    build: echo compile
finalize:
  - from: /out/
outputs:
  - k-{{ ARCH }}
commands:
  normalize:
    description: normalize the config
    after: source
    run: cp /pkg/config /tmp/config && echo '# normalized' >>/tmp/config
    writes:
      /tmp/config: configs/config-{{ ARCH }}
"""
FILES = {"recipes/k/pkg.yaml": RECIPE, "configs/config-amd64": "A=1\n", "configs/config-arm64": "B=1\n"}


@pytest.fixture
def project(make_project: MakeProject) -> Project:
    return make_project(FILES, {"TOOLCHAIN": TOOLCHAIN, "PLATFORM": "linux/amd64,linux/arm64"})


def test_without_a_command_the_dockerfile_is_one_build_stage_as_ever(project: Project) -> None:
    dockerfile = project.plan("k", AMD64).context.dockerfile
    assert "AS r-k_build\n" in dockerfile
    assert "after_source" not in dockerfile and "command" not in dockerfile


def test_a_command_starts_from_the_tree_after_its_step_and_exports_what_it_writes(project: Project) -> None:
    plan = project.command_plan("k", "normalize", ARM64)
    dockerfile = plan.context.dockerfile
    assert plan.context.target == "r-k_command_normalize_export"
    assert dockerfile.index("AS r-k_after_source") < dockerfile.index("00-prepare.sh") < dockerfile.index(
        "FROM r-k_after_source AS r-k_build") < dockerfile.index("01-prepare.sh")
    assert "FROM r-k_after_source AS r-k_command_normalize\n" in dockerfile
    assert "COPY --from=r-k_command_normalize /tmp/config /0\n" in dockerfile
    assert plan.outputs == ["0"] and plan.writes == {"0": "configs/config-arm64"}
    assert (plan.label, plan.slug) == ("k-normalize:arm64", "k-normalize-arm64")
    script = plan.context.files["k/commands/normalize/normalize.sh"].data or b""
    assert script.decode().endswith("cp /pkg/config /tmp/config && echo '# normalized' >>/tmp/config\n")


def test_the_build_layers_before_the_split_are_the_same_as_in_the_build(project: Project) -> None:
    """The command shares the build's cache: the RUNs up to its step are the same lines, in the same order."""
    build = project.plan("k", AMD64).context.dockerfile
    command = project.command_plan("k", "normalize", AMD64).context.dockerfile
    runs = [line for line in build.splitlines() if line.startswith("RUN ")]
    assert [line for line in command.splitlines() if line.startswith("RUN ")][:len(runs)] == runs


def test_each_command_is_a_task_per_platform_never_up_to_date_and_not_a_build(project: Project) -> None:
    tasks = {(t["basename"], t["name"]): t for t in generate(project)}
    task = tasks[("k-normalize", "arm64")]
    assert task["uptodate"] == [False]
    assert "targets" not in task and "clean" not in task
    assert task["meta"] == {"command": ["k", "normalize"]}
    assert ("k-normalize", None) in tasks and ("k", "amd64") in tasks


@pytest.mark.parametrize(("change", "expect"), [
    (("after: source", "after: nowhere"), r"commands\.normalize\.after: no step named .nowhere. \(named steps"),
    (("/tmp/config: configs", "/tmp/config: ../configs"), r"a command writes project files, by a relative path"),
    (("/tmp/config: configs", "tmp/config: configs"), r"'tmp/config': a path in the build is absolute"),
    (("  - name: source\n", "  - name: Source!\n"), r"steps\.0\.name"),
])
def test_a_malformed_command_is_a_recipe_error_naming_its_line(make_project: MakeProject, change: tuple[str, str],
                                                               expect: str) -> None:
    files = {**FILES, "recipes/k/pkg.yaml": RECIPE.replace(*change)}
    project = make_project(files, {"TOOLCHAIN": TOOLCHAIN})
    with pytest.raises(RecipeError, match=expect) as info:
        project.plans()
    assert str(info.value).startswith("recipes/k/pkg.yaml:")


def test_an_unknown_command_names_the_known_ones(project: Project) -> None:
    with pytest.raises(BuildError, match=r"recipe k has no command 'olddefconfig' \(its commands: normalize\)"):
        project.command_plan("k", "olddefconfig", AMD64)


def test_a_command_never_writes_through_a_link_out_of_the_project(project: Project, tmp_path: Path) -> None:
    plan = project.command_plan("k", "normalize", AMD64)
    target = project.root / "configs/config-amd64"
    target.unlink()
    target.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BuildError, match=r"writes configs/config-amd64, which resolves outside the project"):
        _project_file(project.root, "configs/config-amd64", plan)


def test_the_changes_are_told_as_a_diff_a_person_reads() -> None:
    assert _first_changes(b"a\nb\nc\n", b"a\nc\nd\n") == "2 line(s) change, first: -b; +d"
    assert _first_changes(None, b"x\n") == "a new file"


INTERACTIVE = RECIPE + """\
  edit:
    task: k-edit
    interactive: true
    after: source
    run: make menuconfig
    writes:
      /tmp/config: configs/config-{{ ARCH }}
"""


def test_an_interactive_command_builds_only_the_tree_it_starts_from(make_project: MakeProject) -> None:
    project = make_project({**FILES, "recipes/k/pkg.yaml": INTERACTIVE}, {"TOOLCHAIN": TOOLCHAIN})
    plan = project.command_plan("k", "edit", AMD64)
    assert plan.context.target == "r-k_after_source"  # the engine runs the script on a terminal, not BuildKit
    assert "make menuconfig" not in plan.context.dockerfile and "r-k_command_edit" not in plan.context.dockerfile
    assert b"make menuconfig" in (plan.context.files["k/commands/edit/edit.sh"].data or b"")
    assert plan.label == "k-edit:amd64"


def test_an_interactive_command_without_a_terminal_is_one_line(make_project: MakeProject,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from builder.build.executor import run_command

    project = make_project({**FILES, "recipes/k/pkg.yaml": INTERACTIVE}, {"TOOLCHAIN": TOOLCHAIN})
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(BuildError, match=r"^k-edit:amd64 is interactive: run it in a terminal$"):
        run_command(project.command_plan("k", "edit", AMD64), project)
