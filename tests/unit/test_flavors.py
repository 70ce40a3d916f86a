"""Flavors (FLAVOR=name, WITH_DEBUG=1): a flavored build is another task with other outputs, for the recipe
that declares flavors and every recipe that takes it; the default build's tasks and files are untouched."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from builder.core.errors import BuildError, RecipeError
from builder.model.settings import Settings
from builder.resolve.project import Project
from builder.schedule.tasks import generate

MakeProject = Callable[..., Project]
TOOLCHAIN = "example.invalid/toolchain:7"

KERNEL = """\
name: k
flavors: flavors/*.config
files:
  - src: configs/config-{{ ARCH }}
    dest: config
{%- if FLAVOR %}
  - src: flavors/{{ FLAVOR }}.config
    dest: flavor.config
{%- endif %}
steps:
  - build: echo compile
finalize:
  - from: /out/
outputs:
  - k-{{ ARCH }}{{ FLAVOR_SUFFIX }}
"""
INITRAMFS = """\
name: i
dependencies:
  - artifact: k
    outputs: [k-{{ ARCH }}{{ FLAVOR_SUFFIX }}]
steps:
  - build: echo pack
finalize:
  - from: /out/
outputs:
  - i-{{ ARCH }}{{ FLAVOR_SUFFIX }}
"""
OTHER = "name: b\nsteps:\n  - build: echo b\nfinalize:\n  - from: /out/\noutputs:\n  - b-{{ ARCH }}\n"
FILES = {"recipes/k/pkg.yaml": KERNEL, "recipes/i/pkg.yaml": INITRAMFS, "recipes/b/pkg.yaml": OTHER,
         "configs/config-amd64": "CONFIG_A=y\n", "flavors/debug.config": "CONFIG_DEBUG_KERNEL=y\n",
         "flavors/small.config": "CONFIG_A=n\n"}


def project(make_project: MakeProject, files: dict[str, str] | None = None, **words: str) -> Project:
    return make_project(files or FILES, {"TOOLCHAIN": TOOLCHAIN, "PLATFORM": "linux/amd64", **words})


def test_with_debug_is_the_debug_flavor_and_flavor_names_are_checked() -> None:
    assert Settings.parse({"WITH_DEBUG": "1"}).flavor == "debug"
    assert Settings.parse({"WITH_DEBUG": "0", "FLAVOR": "small"}).flavor == "small"
    assert Settings.parse({"FLAVOR": ""}).flavor == ""
    with pytest.raises(BuildError, match="WITH_DEBUG=1 means FLAVOR=debug, and FLAVOR=small asks for another"):
        Settings.parse({"WITH_DEBUG": "1", "FLAVOR": "small"})
    with pytest.raises(BuildError, match="'Debug!' is not a flavor name"):
        Settings.parse({"FLAVOR": "Debug!"})
    with pytest.raises(BuildError, match="FLAVOR_SUFFIX follows from FLAVOR"):
        Settings.parse({"FLAVOR_SUFFIX": "-x"})
    with pytest.raises(BuildError, match="'maybe' is not a flag"):
        Settings.parse({"WITH_DEBUG": "maybe"})


def test_the_flavored_tasks_are_other_tasks_with_other_outputs(make_project: MakeProject) -> None:
    plans = {plan.label: plan for plan in project(make_project, FLAVOR="debug").plans()}
    assert sorted(plans) == ["b:amd64", "i:amd64-debug", "k:amd64-debug"]  # b takes no flavored recipe
    assert plans["k:amd64-debug"].outputs == ["k-amd64-debug"]
    assert plans["i:amd64-debug"].upstream == ("k:amd64-debug",)
    assert plans["i:amd64-debug"].slug == "i-amd64-debug"
    assert "k/files/flavor.config" in plans["k:amd64-debug"].context.files
    default = {plan.label: plan for plan in project(make_project).plans()}
    assert sorted(default) == ["b:amd64", "i:amd64", "k:amd64"]
    assert default["i:amd64"].upstream == ("k:amd64",)
    # the unflavored recipe renders the same either way: its task stays up to date
    assert plans["b:amd64"].context.dockerfile == default["b:amd64"].context.dockerfile


def test_doit_sees_the_flavor_in_the_subtask_name(make_project: MakeProject) -> None:
    tasks = {f"{t['basename']}:{t['name']}": t for t in generate(project(make_project, WITH_DEBUG="1"))
             if t.get("name")}
    assert tasks["i:amd64-debug"]["task_dep"] == ["k:amd64-debug"]
    assert tasks["k:amd64-debug"]["meta"] == {"platform": "amd64"}
    assert [t.rsplit("/", 1)[-1] for t in tasks["k:amd64-debug"]["targets"]] == ["k-amd64-debug"]


def test_an_unknown_flavor_names_the_ones_there_are(make_project: MakeProject) -> None:
    with pytest.raises(BuildError) as caught:
        project(make_project, FLAVOR="huge").plans()
    assert str(caught.value) == ("FLAVOR: unknown flavor 'huge': flavors/*.config has debug, small "
                                 "(declared at recipes/k/pkg.yaml:2)")


def test_a_flavor_no_recipe_has_is_an_error(make_project: MakeProject) -> None:
    files = {"recipes/b/pkg.yaml": OTHER}
    with pytest.raises(BuildError, match="no recipe has flavors, so FLAVOR=debug would change nothing"):
        project(make_project, files, FLAVOR="debug").plans()


def test_a_recipe_taking_a_flavored_one_must_name_its_outputs_apart(make_project: MakeProject) -> None:
    unflavored = INITRAMFS.replace("  - i-{{ ARCH }}{{ FLAVOR_SUFFIX }}", "  - i-{{ ARCH }}")
    files = {**FILES, "recipes/i/pkg.yaml": unflavored}
    with pytest.raises(BuildError) as caught:
        project(make_project, files, FLAVOR="debug").plans()
    assert str(caught.value).startswith("recipes/i/pkg.yaml:10: outputs: i-amd64 would be the default build's file "
                                        "too, but with FLAVOR=debug i is another build")
    project(make_project, files).plans()  # the default build has nothing to keep apart


@pytest.mark.parametrize("pattern", ["flavors/**", "flavors/*/x.config", "flavors/config", "/abs/*.config",
                                     "../up/*.config", "flavors/*-*.config"])
def test_flavors_is_a_project_path_with_one_star_in_the_file_name(make_project: MakeProject, pattern: str) -> None:
    files = {**FILES, "recipes/k/pkg.yaml": KERNEL.replace("flavors: flavors/*.config", f"flavors: {pattern}")}
    with pytest.raises(RecipeError, match="recipes/k/pkg.yaml:2: flavors: "):
        project(make_project, files).plans()
