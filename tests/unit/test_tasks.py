"""doit tasks from plans: what counts as up to date, and what tasks there are."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from builder.core.errors import BuildError
from builder.core.platforms import AMD64
from builder.host import hashindex
from builder.host.hashindex import sha256_file
from builder.resolve.identity import Identities
from builder.resolve.project import Project
from builder.schedule import memo
from builder.schedule.tasks import UpToDate, generate

MakeProject = Callable[..., Project]

LIB = "name: lib\nvariant: scratch\nfinalize:\n  - from: /\noutputs:\n  - lib-{{ ARCH }}.a\n"
APP = ("name: app\ndescription: the app\nvariant: scratch\ndependencies:\n  - stage: lib\n  - stage: base\n"
       "finalize:\n  - from: /\noutputs:\n  - app-{{ ARCH }}\n")
BASE = "name: base\nvariant: scratch\nfinalize:\n  - from: /\n"
ARM_ONLY = ("name: firmware\nvariant: scratch\nplatforms: [linux/arm64]\nfinalize:\n  - from: /\n"
            "outputs:\n  - firmware.bin\n")
IMG = ("name: img\nvariant: scratch\ndependencies:\n  - artifact: app\n  - artifact: lib\n    to: /lib/\n"
       "finalize:\n  - from: /\noutputs:\n  - img-{{ ARCH }}\n")
FILES = {"recipes/lib/pkg.yaml": LIB, "recipes/app/pkg.yaml": APP, "recipes/base/pkg.yaml": BASE,
         "recipes/firmware/pkg.yaml": ARM_ONLY}


# --- up to date ---

@pytest.fixture
def built(make_project: MakeProject, fake_engine: dict[str, str | None]) -> tuple[UpToDate, dict[str, object]]:
    """An app:amd64 plan with its output in out/, and the values doit stored after that build."""
    project = make_project(FILES)
    plan = project.plan("app", AMD64)
    project.out_dir.mkdir()
    (project.out_dir / "app-amd64").write_bytes(b"app")
    digest = plan.digest(plan.inputs(project.identities))
    outputs = {"app-amd64": sha256_file(project.out_dir / "app-amd64")}
    check = UpToDate(plan.locations, memo.check_of(plan), project.identities, project.hashes)
    return check, {"digest": digest, "outputs": outputs}


@pytest.mark.parametrize("values", [{}, {"digest": ""}, {"digest": None, "outputs": {}}])
def test_a_task_never_built_is_not_up_to_date(built: tuple[UpToDate, dict[str, object]],
                                              values: dict[str, object]) -> None:
    uptodate, _ = built
    assert uptodate(None, values) is False


def test_a_task_is_up_to_date_when_inputs_and_outputs_are_unchanged(built: tuple[UpToDate, dict[str, object]]) -> None:
    uptodate, values = built
    assert uptodate(None, values) is True


def test_a_task_whose_inputs_changed_is_not_up_to_date(built: tuple[UpToDate, dict[str, object]]) -> None:
    uptodate, values = built
    assert uptodate(None, {**values, "digest": "0" * 64}) is False


@pytest.mark.parametrize("damage", ["modify", "delete"])
def test_a_task_whose_output_was_modified_or_deleted_is_not_up_to_date(
    built: tuple[UpToDate, dict[str, object]], damage: str
) -> None:
    uptodate, values = built
    out = uptodate.locations.out / "app-amd64"
    if damage == "modify":
        out.write_bytes(b"hand edited")
    else:
        out.unlink()
    assert uptodate(None, values) is False


def test_a_no_op_reads_an_output_once_then_trusts_its_stat(built: tuple[UpToDate, dict[str, object]],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    uptodate, values = built
    out = uptodate.locations.out / "app-amd64"
    os.utime(out, ns=(1_700_000_000 * 10**9,) * 2)  # built long enough ago not to be racy
    read = hashindex.read
    reads: list[str] = []
    monkeypatch.setattr(hashindex, "read", lambda path: reads.append(str(path)) or read(path))
    assert [uptodate(None, values) for _ in range(3)] == [True, True, True]
    assert reads == [str(out)]
    out.write_bytes(b"APP")  # the same size: the stat (mtime, ctime) still tells
    assert uptodate(None, values) is False


def test_a_broken_plan_is_out_of_date_so_the_action_can_report_it(
    built: tuple[UpToDate, dict[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    uptodate, values = built

    def broken(self: Identities) -> dict[str, str]:
        raise BuildError("out/SHA256SUMS: line 1: expected SHA256  NAME")

    monkeypatch.setattr(Identities, "artifacts", broken)  # the plan is a value: what fails is what it is asked with
    assert uptodate(None, values) is False


# --- task generation ---

def test_each_exported_recipe_is_a_task_with_one_subtask_per_platform(make_project: MakeProject) -> None:
    generated = list(generate(make_project(FILES, {"PLATFORM": "linux/amd64,linux/arm64"})))
    assert [(t["basename"], t["name"]) for t in generated] == [
        ("app", None), ("app", "amd64"), ("app", "arm64"),
        ("firmware", None), ("firmware", "arm64"),  # platforms: [linux/arm64] only
        ("lib", None), ("lib", "amd64"), ("lib", "arm64"),
    ]


def test_a_subtask_depends_on_the_tasks_whose_artifacts_it_takes_and_targets_out(make_project: MakeProject) -> None:
    project = make_project({**FILES, "recipes/img/pkg.yaml": IMG})
    generated = list(generate(project))
    app_amd64 = next(t for t in generated if t["name"] == "amd64" and t["basename"] == "app")
    img_amd64 = next(t for t in generated if t["name"] == "amd64" and t["basename"] == "img")
    assert app_amd64["task_dep"] == []  # stage dependencies are rendered into its own build
    assert img_amd64["task_dep"] == ["app:amd64", "lib:amd64"]
    assert app_amd64["targets"] == [str(project.out_dir / "app-amd64")]
    assert app_amd64["doc"] == "the app for linux/amd64 -> out/app-amd64"
    assert isinstance(app_amd64["uptodate"][0], UpToDate)  # type: ignore[index]


def test_a_dry_run_task_is_never_up_to_date(make_project: MakeProject) -> None:
    generated = [t for t in generate(make_project(FILES, {"DRY_RUN": "1"})) if t["name"]]
    assert generated and all(t["uptodate"] == [False] and "targets" not in t for t in generated)


def test_generating_tasks_for_an_unknown_platform_is_an_error(make_project: MakeProject) -> None:
    with pytest.raises(BuildError, match="unknown platform 's390x'"):
        list(generate(make_project(FILES, {"PLATFORM": "s390x"})))


