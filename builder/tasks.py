"""doit tasks made from build plans: a thin, pure layer over plan.Plan.

One task per exported recipe (`doit kernel`), one subtask per platform (`kernel:amd64`).
Up-to-date means: the digest of every build input (rendered Dockerfile and scripts, project files,
source digests, toolchain image ID) equals the one stored after the last successful build, and every
output in out/ still has the sha256 recorded then. Content, never mtimes.
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
from builder.plan import Plan, Project
from builder.platforms import parse_platforms

DEP_FILE = ".doit.db"
READ_ONLY_COMMANDS = {"list", "info", "help", "dumpdb", "tabcompletion", "strace"}


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
        "default_tasks": ["kernel", "initramfs"],
    }


class UpToDate:
    """doit uptodate check: stored input digest and output hashes against the current ones."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def __call__(self, task: object, values: Mapping[str, Any]) -> bool:
        stored = values.get("digest")
        if not stored:
            return False
        try:
            if stored != self.plan.digest:
                return False
        except BuildError:
            return False  # let the action run and report the problem as one line
        for name, sha in (values.get("outputs") or {}).items():
            path = self.plan.project.out_dir / name
            if not path.is_file() or sha256_file(path) != sha:
                return False
        return True


def _build_action(plan: Plan) -> dict[str, object] | TaskFailed:
    try:
        return plan.build()
    except BuildError as exc:
        return TaskFailed(str(exc))


def _dry_run_action(plan: Plan) -> None:
    print(plan.dry_run())


def generate(project: Project, platform_spec: str, *, dry_run: bool = False) -> Iterator[dict[str, object]]:
    """Task dicts for every exported recipe and every requested platform."""
    platforms = parse_platforms(platform_spec)
    names: dict[str, str] = {}
    for platform in platforms:
        for recipe in project.graph(platform).exported():
            names.setdefault(recipe.name, recipe.description)
    for name, description in sorted(names.items()):
        yield {"basename": name, "name": None, "doc": description or f"build {name}"}
        for platform in platforms:
            graph = project.graph(platform)
            recipe = graph[name]
            if recipe.platforms is not None and platform.docker not in recipe.platforms:
                continue
            plan = project.plan(name, platform)
            exported_deps = [f"{dep.name}:{platform.arch}" for dep in graph.closure(name)[:-1] if dep.outputs]
            task: dict[str, object] = {
                "basename": name,
                "name": platform.arch,
                "doc": f"{description or name} for {platform.docker} -> "
                       + ", ".join(f"out/{o}" for o in plan.outputs),
                "task_dep": exported_deps,
                "verbosity": 2,
            }
            if dry_run:
                task.update(actions=[(_dry_run_action, [plan])], uptodate=[False])
            else:
                task.update(actions=[(_build_action, [plan])], targets=[str(t) for t in plan.targets],
                            uptodate=[UpToDate(plan)], clean=True)
            yield task


_lock_file: IO[str] | None = None


def acquire_run_lock(root: Path) -> None:
    """One build at a time per project: a second concurrent run stops with a clear message."""
    global _lock_file
    if _lock_file is not None:
        return
    state = root / ".builder"
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
