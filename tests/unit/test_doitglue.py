"""The doit glue: the run lock, doit's database and its place, the environment, task words, and the
part of doit's command-line grammar it reads (held to doit's own)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from doit import cmd_base
from doit.cmd_base import ModuleTaskLoader
from doit.doit_cmd import DoitMain

from builder.cli.doitglue import (
    DOIT_COMMANDS,
    VALUE_OPTIONS,
    RunLock,
    Session,
    check_environment,
    check_task_words,
    command_words,
)
from builder.core.errors import BuildError
from builder.core.locations import Locations


def session(root: Path, *words: str, environ: dict[str, str] | None = None, tool: str = "doit") -> Session:
    command, task_words = command_words([w for w in words if "=" not in w])
    return Session(root, dict(w.split("=", 1) for w in words if "=" in w), command=command, task_words=task_words,
                   tool=tool, environ=environ or {})


@pytest.mark.parametrize(("argv", "expected"), [
    ([], True), (["kernel"], True), (["run", "kernel", "PLATFORM=linux/arm64"], True), (["clean"], True),
    (["list"], False), (["list", "--all"], False), (["PLATFORM=linux/arm64", "info", "kernel"], False),
    (["help", "kernel"], False), (["dumpdb"], False),
])
def test_only_commands_that_may_run_tasks_take_the_run_lock(tmp_path: Path, argv: list[str], expected: bool) -> None:
    assert session(tmp_path, *argv).runs_tasks is expected


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
    tmp_path: Path, other_build: subprocess.Popen[str]
) -> None:
    lock = RunLock(Locations.of(tmp_path))
    with pytest.raises(BuildError) as info:
        lock.acquire()
    assert str(info.value) == (f"another build is already running in {tmp_path} (pid {other_build.pid}); "
                               "wait for it to finish")
    assert not lock.held


def test_the_run_lock_records_the_holders_pid_is_taken_once_and_clears_what_a_killed_run_left(
        tmp_path: Path) -> None:
    places = Locations.of(tmp_path)
    (places.tmp / "kernel-amd64-x").mkdir(parents=True)
    lock = RunLock(places)
    try:
        lock.acquire()
        assert (tmp_path / ".builder" / "run.lock").read_text() == str(os.getpid())
        assert not places.tmp.exists()
        lock.acquire()  # the same session asking again is fine
        assert lock.held
    finally:
        lock.release()
    assert not lock.held


def test_the_doit_database_lives_in_the_project_root(tmp_path: Path) -> None:
    config = session(tmp_path, "kernel", "PLATFORM=linux/amd64").doit_config()
    assert config["dep_file"] == str(tmp_path / ".doit.db")
    assert config["default_tasks"] == ["kernel", "initramfs"]


def test_another_out_dir_has_a_database_of_its_own_in_the_state_directory(tmp_path: Path) -> None:
    scratch = session(tmp_path, "kernel", f"OUT_DIR={tmp_path / 'elsewhere'}").dep_file
    assert scratch.parent.parent == tmp_path / ".builder" / "outs" and scratch.name == ".doit.db"
    assert session(tmp_path, "OUT_DIR=out").dep_file == tmp_path / ".doit.db"  # the default, spelt out
    assert session(tmp_path, "OUT_DIR=other").dep_file != scratch


@pytest.mark.parametrize("tool", ["doit", "builder build"])
def test_a_dry_run_never_writes_the_real_database(tmp_path: Path, tool: str) -> None:
    # doit saves what each task it ran returned: a dry run's tasks return nothing, and would make the next
    # real run forget every build (measured: a dry run, then a no-op run rebuilt initramfs:arm64). `builder
    # build --dry-run` comes here as DRY_RUN=1 too: its words, not sys.argv, decide.
    config = session(tmp_path, "kernel", "DRY_RUN=1", tool=tool).doit_config()
    assert config["dep_file"] == str(tmp_path / ".builder" / "dry-run" / ".doit.db")
    assert session(tmp_path, "DRY_RUN=0").doit_config()["dep_file"] == str(tmp_path / ".doit.db")
    assert not (tmp_path / ".doit.db").exists()


@pytest.mark.parametrize(("words", "expect"), [
    (["OUT_DIR=."], "OUT_DIR: .* holds the project"),
    (["OUT_DIR=.builder/out"], "OUT_DIR: .* is inside the build state"),
    (["STATE_DIR=out/state"], "STATE_DIR: .* is inside out/"),
    (["OUT_DIR="], "OUT_DIR: empty; expected a directory path"),
    (["STATE_DIR=recipes"], "STATE_DIR: .* overlaps the project's recipes/"),
])
def test_places_that_cannot_work_are_refused(tmp_path: Path, words: list[str], expect: str) -> None:
    with pytest.raises(BuildError, match=expect):
        session(tmp_path, "kernel", *words)


def test_a_setting_in_the_environment_is_refused_unless_the_command_line_gives_it() -> None:
    with pytest.raises(BuildError) as info:
        check_environment({}, {"PLATFORM": "linux/arm64", "HOME": "/root"})
    assert str(info.value).startswith("PLATFORM is set in the environment, which builder does not read")
    assert "(give it on the command line (PLATFORM=VALUE), or unset PLATFORM)" in str(info.value)
    with pytest.raises(BuildError, match="^PKG_KERNEL is set in the environment"):
        check_environment({}, {"PKG_KERNEL": "x"})
    check_environment({"PLATFORM": "linux/amd64"}, {"PLATFORM": "linux/arm64"})  # the command line decides
    check_environment({}, {"SOURCE_DATE_EPOCH": "1", "ARCH": "x", "TOOLCHAIN": "y"})  # not settings


def test_a_session_reads_the_environment_it_is_given(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="^TAG is set in the environment"):
        session(tmp_path, "kernel", environ={"TAG": "v1"})


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
    check_task_words(*command_words(argv), TASKS)


@pytest.mark.parametrize(("argv", "expect"), [
    (["kernal"], r"unknown task 'kernal' \(did you mean kernel\?\)"),
    (["forget", "initramfs:arm64"], r"unknown task 'initramfs:arm64' \(did you mean initramfs:amd64"),
    (["-s", "zzz"], r"unknown task 'zzz' \(known tasks: initramfs, kernel\)"),
])
def test_an_unknown_task_word_names_the_closest_tasks(argv: list[str], expect: str) -> None:
    with pytest.raises(BuildError, match=expect):
        check_task_words(*command_words(argv), TASKS)


def test_the_grammar_read_here_is_doits_own() -> None:
    """Fails when doit gains a command or an option taking a value that command_words does not know."""
    loader = ModuleTaskLoader({})
    commands = DoitMain(loader).get_cmds()
    assert set(commands) <= DOIT_COMMANDS
    valued = set()
    for cls in commands.values():
        command = cls(task_loader=loader, config={}, bin_name="doit", cmds=commands)
        for option in command.get_options():
            if option.type is not bool:
                valued |= {f"-{option.short}" if option.short else "", f"--{option.long}" if option.long else ""}
    for option in cmd_base.DodoTaskLoader.cmd_options:
        if option["type"] is not bool:
            valued |= {f"-{option['short']}" if option["short"] else "", f"--{option['long']}"}
    assert valued - {"", "-s"} <= VALUE_OPTIONS  # -s: tabcompletion's --shell; run's -s (--single) is a flag


def test_the_one_private_part_of_doit_overridden_still_reports_a_failure_in_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    """OneLineReporter overrides ConsoleReporter._write_failure, the one private method doit gives no public
    way around: this fails when doit renames it or stops calling it for a failed task."""
    import inspect
    import io

    from doit.exceptions import TaskFailed
    from doit.reporter import ConsoleReporter
    from doit.task import Task

    from builder.cli.doitglue import OneLineReporter

    assert list(inspect.signature(ConsoleReporter._write_failure).parameters) == ["self", "result",
                                                                                  "write_exception"]
    reporter = OneLineReporter(io.StringIO(), {"show_out": True, "failure_verbosity": 0})
    reporter.add_failure(Task("kernel:amd64", None), TaskFailed("kernel:amd64: the build failed"))
    assert capsys.readouterr().err == "error: kernel:amd64: the build failed\n"
