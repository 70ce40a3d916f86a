"""doit tasks made from plans: a thin, pure layer over plan.Plan and executor.execute.

One task per exported recipe (`doit kernel`), one subtask per platform (`kernel:amd64`). A task whose
build takes another's published outputs (an ``artifact`` dependency) depends on that task.
Up-to-date means: the digest of every build input (rendered Dockerfile and scripts, project files,
source digests, artifacts' sha256, the toolchain's portable identity) equals the one stored after the
last successful build, and every output in out/ still has the sha256 recorded then. Content, never mtimes.
Any other kind of task (one spanning platforms, an interactive one) is a dict like these, with its own
actions; nothing here is special to builds.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from doit.exceptions import TaskFailed
from doit.reporter import ConsoleReporter

from builder.errors import BuildError
from builder.outputs import sha256_file
from builder.plan import Plan
from builder.project import Project

DEP_FILE = ".doit.db"
READ_ONLY_COMMANDS = {"list", "info", "help", "dumpdb", "tabcompletion", "strace"}
DEFAULT_TASKS = ["kernel", "initramfs"]


class OneLineReporter(ConsoleReporter):
    """doit's console reporter, but a task's BuildError is one line, never a traceback."""

    def _write_failure(self, result: dict[str, Any], write_exception: bool = True) -> None:
        fail = result["exception"]
        if isinstance(fail, TaskFailed) and not fail.traceback:
            sys.stderr.write(f"error: {fail.message}\n")
            return
        super()._write_failure(result, write_exception)


def doit_config(root: Path) -> dict[str, object]:
    return {
        "backend": "sqlite3",
        "dep_file": str(root / DEP_FILE),
        "reporter": OneLineReporter,
        "verbosity": 2,
        "default_tasks": DEFAULT_TASKS,
    }


class UpToDate:
    """doit uptodate check: stored input digest and output hashes against the current ones.

    doit asks it only once the task's dependencies have run, so artifacts are read as they are then."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def __call__(self, task: object, values: Mapping[str, Any]) -> bool:
        stored = values.get("digest")
        if not stored:
            return False
        try:
            if stored != self.plan.digest(self.plan.inputs(self.plan.project.identities)):
                return False
        except BuildError:
            return False  # let the action run and report the problem as one line
        for name, sha in (values.get("outputs") or {}).items():
            path = self.plan.project.out_dir / name
            if not path.is_file() or sha256_file(path) != sha:
                return False
        return True


def _build_action(plan: Plan) -> dict[str, object] | TaskFailed:
    from builder.executor import execute  # the executor (and what it imports) only when something builds

    try:
        return execute(plan)
    except BuildError as exc:
        return TaskFailed(str(exc))


def _dry_run_action(plan: Plan) -> TaskFailed | None:
    from builder.executor import dry_run

    try:
        print(dry_run(plan))
    except BuildError as exc:
        return TaskFailed(str(exc))
    return None


def build_task(plan: Plan, description: str) -> dict[str, object]:
    """The doit task that builds ``plan`` (or, with DRY_RUN=1, prints how it would)."""
    task: dict[str, object] = {
        "basename": plan.recipe.name,
        "name": plan.platform.arch,
        "doc": f"{description} for {plan.platform.docker} -> " + ", ".join(f"out/{o}" for o in plan.outputs),
        "task_dep": plan.upstream,
        "verbosity": 2,
    }
    if plan.project.settings.dry_run:
        task.update(actions=[(_dry_run_action, [plan])], uptodate=[False])
    else:
        task.update(actions=[(_build_action, [plan])], targets=[str(t) for t in plan.targets],
                    uptodate=[UpToDate(plan)], clean=True)
    return task


def generate(project: Project) -> Iterator[dict[str, object]]:
    """Task dicts for every exported recipe and every requested platform."""
    plans = project.plans()
    names: dict[str, str] = {}
    for plan in plans:
        names.setdefault(plan.recipe.name, plan.recipe.description or f"build {plan.recipe.name}")
    for name, description in sorted(names.items()):
        yield {"basename": name, "name": None, "doc": description}
        for plan in plans:
            if plan.recipe.name == name:
                yield build_task(plan, description)


def dodo_tasks(root: Path, argv: list[str]) -> Iterator[dict[str, object]]:
    """What a project's dodo.py yields: tasks for the settings on doit's command line ``argv``.

    A user's mistake here is one line and exit status 2, before doit runs anything."""
    from builder.settings import doit_words

    try:
        project = Project.load(root, doit_words(argv[1:]))
        if wants_lock(argv) and not project.settings.dry_run:
            acquire_run_lock(root)
        yield from list(generate(project))
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


_lock_file: IO[str] | None = None


def acquire_run_lock(root: Path) -> None:
    """One build at a time per project: a second concurrent run stops with a clear message."""
    global _lock_file
    if _lock_file is not None:
        return
    state = root / ".builder"  # Project.state_dir
    state.mkdir(parents=True, exist_ok=True)
    handle = open(state / "run.lock", "a+")  # noqa: SIM115 - held for the life of the process
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise BuildError(f"another build is already running in {root} (pid {holder}); "
                         "wait for it to finish") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _lock_file = handle


def wants_lock(argv: list[str]) -> bool:
    """True when this doit invocation may run tasks (so it must hold the project lock)."""
    words = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]
    return not (words and words[0] in READ_ONLY_COMMANDS)
