"""doit tasks from plans: the project lock, and what counts as up to date."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from builder import tasks
from builder.errors import BuildError
from builder.outputs import sha256_file
from builder.platforms import AMD64
from builder.project import Project
from builder.tasks import UpToDate, acquire_run_lock, doit_config, generate, wants_lock

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


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["doit"], True),
        (["doit", "kernel"], True),
        (["doit", "run", "kernel", "PLATFORM=linux/arm64"], True),
        (["doit", "clean"], True),
        (["doit", "list"], False),
        (["doit", "list", "--all"], False),
        (["doit", "PLATFORM=linux/arm64", "info", "kernel"], False),
        (["doit", "help", "kernel"], False),
        (["doit", "dumpdb"], False),
    ],
)
def test_only_commands_that_may_run_tasks_take_the_project_lock(argv: list[str], expected: bool) -> None:
    assert wants_lock(argv) is expected


@pytest.fixture
def fresh_lock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The lock is process-wide: each test starts without it and gives it back."""
    monkeypatch.setattr(tasks, "_lock_file", None)
    yield
    if tasks._lock_file is not None:
        tasks._lock_file.close()


@pytest.fixture
def other_build(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the project's run lock, as a concurrent `doit kernel` would."""
    lock = tmp_path / ".builder" / "run.lock"
    lock.parent.mkdir()
    code = (
        "import fcntl, os, sys\n"
        f"f = open({str(lock)!r}, 'a+')\n"
        "fcntl.flock(f, fcntl.LOCK_EX)\n"
        "f.write(str(os.getpid())); f.flush()\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    yield proc
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)


def test_a_second_build_in_the_same_project_stops_saying_one_is_already_running(
    tmp_path: Path, fresh_lock: None, other_build: subprocess.Popen[str]
) -> None:
    with pytest.raises(BuildError) as info:
        acquire_run_lock(tmp_path)
    assert str(info.value) == (f"another build is already running in {tmp_path} (pid {other_build.pid}); "
                               "wait for it to finish")
    assert tasks._lock_file is None


def test_the_run_lock_records_the_holders_pid_and_is_taken_once(tmp_path: Path, fresh_lock: None) -> None:
    acquire_run_lock(tmp_path)
    held = tasks._lock_file
    assert (tmp_path / ".builder" / "run.lock").read_text() == str(os.getpid())
    acquire_run_lock(tmp_path)  # the same process asking again is fine
    assert tasks._lock_file is held


def test_the_doit_database_lives_in_the_project_root(tmp_path: Path) -> None:
    config = doit_config(tmp_path, ["doit", "kernel", "PLATFORM=linux/amd64"])
    assert config["dep_file"] == str(tmp_path / ".doit.db")
    assert config["default_tasks"] == ["kernel", "initramfs"]


def test_a_dry_run_never_writes_the_real_database(tmp_path: Path) -> None:
    # doit saves what each task it ran returned: a dry run's tasks return nothing, and would make the next
    # real run forget every build (measured: a dry run, then a no-op run rebuilt initramfs:arm64)
    config = doit_config(tmp_path, ["doit", "kernel", "DRY_RUN=1"])
    assert config["dep_file"] == str(tmp_path / ".builder" / "dry-run" / ".doit.db")
    assert doit_config(tmp_path, ["doit", "DRY_RUN=0"])["dep_file"] == str(tmp_path / ".doit.db")
    assert doit_config(tmp_path, ["doit", "DRY_RUN=perhaps"])["dep_file"] == str(tmp_path / ".doit.db")  # said later


# --- up to date ---

@pytest.fixture
def built(make_project: MakeProject, fake_engine: dict[str, str | None]) -> tuple[UpToDate, dict[str, object]]:
    """An app:amd64 plan with its output in out/, and the values doit stored after that build."""
    project = make_project(FILES)
    plan = project.plan("app", AMD64)
    project.out_dir.mkdir()
    (project.out_dir / "app-amd64").write_bytes(b"app")
    digest = plan.digest(plan.inputs(project.identities))
    return UpToDate(plan), {"digest": digest, "outputs": {"app-amd64": sha256_file(project.out_dir / "app-amd64")}}


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
    out = uptodate.plan.project.out_dir / "app-amd64"
    if damage == "modify":
        out.write_bytes(b"hand edited")
    else:
        out.unlink()
    assert uptodate(None, values) is False


def test_a_broken_plan_is_out_of_date_so_the_action_can_report_it(
    built: tuple[UpToDate, dict[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    uptodate, values = built

    def broken(identities: object) -> dict[str, str]:
        raise BuildError("the Docker engine is not reachable")

    monkeypatch.setattr(uptodate.plan, "inputs", broken)
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


TASKS: list[dict[str, object]] = [
    {"basename": "kernel", "name": None},
    {"basename": "kernel", "name": "amd64", "targets": ["/p/out/vmlinuz-amd64"]},
    {"basename": "initramfs", "name": None},
    {"basename": "initramfs", "name": "amd64", "targets": ["/p/out/initramfs-amd64.xz"]},
]


@pytest.mark.parametrize("argv", [
    [], ["kernel", "initramfs", "PLATFORM=linux/arm64"], ["-s", "initramfs:amd64"], ["clean", "kernel"],
    ["list"], ["help", "kernal"], ["-n", "2", "kernel"], ["--db-file", "x.db", "kernel"], ["-a", "kernel:amd64"],
    ["/p/out/vmlinuz-amd64"], ["kernel:*"], ["info", "initramfs"], ["--unknown-option=x", "kernal"],
])
def test_task_words_doit_accepts_are_accepted(argv: list[str]) -> None:
    from builder.tasks import check_task_words

    check_task_words(["doit", *argv], TASKS)


@pytest.mark.parametrize(("argv", "expect"), [
    (["kernal"], r"unknown task 'kernal' \(did you mean kernel\?\)"),
    (["forget", "initramfs:arm64"], r"unknown task 'initramfs:arm64' \(did you mean initramfs:amd64"),
    (["-s", "zzz"], r"unknown task 'zzz' \(known tasks: initramfs, initramfs:amd64, kernel, kernel:amd64\)"),
])
def test_an_unknown_task_word_names_the_closest_tasks(argv: list[str], expect: str) -> None:
    from builder.tasks import check_task_words

    with pytest.raises(BuildError, match=expect):
        check_task_words(["doit", *argv], TASKS)
