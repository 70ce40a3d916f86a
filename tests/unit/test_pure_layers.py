"""Planning asks nothing of the world: the shipped project's plans and doit tasks, for both platforms and
every profile, are made with the Docker engine, the network and every subprocess unreachable. Only a task
that runs (its up-to-date check or its build) asks the engine or a registry."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from builder.cli.doitglue import Session
from builder.core.platforms import AMD64
from builder.host.services import Services
from builder.resolve.identity import Identities
from builder.resolve.project import Project

from .test_render import FILES, MakeProject

ROOT = Path(__file__).resolve().parents[2]
IGNORE = shutil.ignore_patterns("out", ".builder", ".doit.db*", ".git", "__pycache__", ".pytest_cache", "*.egg-info",
                                ".ruff_cache", ".mypy_cache", ".venv", "tests", "bench")


class Asked(AssertionError):
    pass


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    def connect(self: socket.socket, address: object) -> None:
        raise Asked(f"planning connected to {address!r}")

    def popen(*args: object, **kwargs: object) -> None:
        raise Asked(f"planning started {args[0]!r}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    monkeypatch.setattr(subprocess, "Popen", popen)


@pytest.mark.parametrize("command", [None, "list"])
def test_the_shipped_projects_tasks_are_made_without_asking_the_engine_or_the_network(
        tmp_path: Path, unreachable: None, no_host_apt: str, command: str | None) -> None:
    root = tmp_path / "project"
    shutil.copytree(ROOT, root, ignore=IGNORE)
    words = {"PLATFORM": "linux/amd64,linux/arm64", "SOURCE_DATE_EPOCH": "1735689600"}
    session = Session(root, words, command=command, environ={})
    try:
        tasks = session.tasks()  # takes the run lock when it may run tasks: a file lock, no engine, no network
        project = session.project()
        for plan in project.plans():
            plan.context  # noqa: B018 - rendering is planning too
            assert plan.image_inputs()  # named, not yet asked
    finally:
        session.lock.release()
    names = {t["basename"] for t in tasks}
    assert {"kernel", "initramfs", "iso", "disk", "images"} <= names
    memo = Session(root, words, command=command, environ={})
    try:
        again = memo.tasks()  # the memo's tasks: no I/O either
    finally:
        memo.lock.release()
    assert memo._project is None
    assert [t["basename"] for t in again] == [t["basename"] for t in tasks]


def test_a_plan_is_a_value_that_holds_no_project(make_project: MakeProject) -> None:
    """A plan is made once, with every choice taken, and then only read: the executor and the up-to-date
    check get the workspace (engine, identities, caches) beside it, never through it."""
    project = make_project(FILES)
    plan = project.plan("b", AMD64)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.flavor = "debug"  # type: ignore[misc]
    held = [getattr(plan, f.name) for f in dataclasses.fields(plan)]
    assert not any(isinstance(value, (Project, Services, Identities)) for value in held)
    assert plan.upstream == tuple(project.plan(name, AMD64).label for name in plan.graph.upstream_tasks("b"))
