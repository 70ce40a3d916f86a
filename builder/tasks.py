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
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from doit.exceptions import TaskFailed
from doit.reporter import ConsoleReporter

from builder import memo
from builder.errors import BuildError, os_reason
from builder.outputs import inputs_digest, sha256_file

if TYPE_CHECKING:  # imported when a plan is really needed: a no-op run with a plan memo never parses recipes
    from builder.identity import Identities
    from builder.plan import Plan
    from builder.project import Project
    from builder.settings import Settings

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


class DepFileError(BuildError):
    """doit's database cannot be read. Exit status 2, like every mistake found before doit runs anything."""

    exit_status = 2


SQLITE_BUSY = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED: another doit is writing it; not our business here
SQLITE_DAMAGED = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


def check_dep_file(path: Path) -> None:
    """A DepFileError when doit's sqlite3 database ``path`` exists and cannot be read whole: garbage bytes,
    a truncated copy, or values that are not doit's JSON. doit itself would stop with a traceback."""
    if not path.exists():
        return
    import sqlite3

    try:
        problem = _dep_file_problem(path)
    except sqlite3.Error as exc:
        code = (exc.sqlite_errorcode or 0) & 0xFF
        if code in SQLITE_BUSY:
            return
        if code not in SQLITE_DAMAGED:
            raise DepFileError(f"cannot read doit's database {path} ({exc})",
                               hint="it must be a readable and writable file") from None
        problem = str(exc)
    if problem:
        raise DepFileError(f"doit's database {path} is damaged ({problem})",
                           hint=f"delete it to forget what was built; out/ is kept and the next run rebuilds: "
                                f"rm {path}")


def _dep_file_problem(path: Path) -> str | None:
    """What is wrong inside the database (None: nothing); sqlite3.Error when sqlite cannot read it at all."""
    import json
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(str(path), timeout=5)) as db:
        check = "; ".join(str(row[0]) for row in db.execute("PRAGMA quick_check"))
        if check != "ok":
            return check or "no answer to an integrity check"
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'doit'").fetchone():
            return None  # a new database: doit creates its table
        for task_id, data in db.execute("SELECT task_id, task_data FROM doit"):
            try:
                values = json.loads(data)
            except (ValueError, TypeError):
                values = None
            if not isinstance(values, dict):
                return f"the values stored for {task_id} are not doit's JSON"
    return None


def doit_config(root: Path, argv: list[str] | None = None) -> dict[str, object]:
    """What a project's dodo.py gives doit as DOIT_CONFIG.

    Called when doit imports dodo.py, before doit opens its database: a damaged one is one line and exit
    status 2 here, not doit's traceback later. A dry run (DRY_RUN=1 on doit's command line ``argv``) uses
    a scratch database: doit saves what each task it "ran" returned, and a dry run's tasks return nothing,
    so the real database would forget every build it printed."""
    dep_file = _dry_run_dep_file(root, sys.argv if argv is None else argv) or root / DEP_FILE
    try:
        check_dep_file(dep_file)
    except DepFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_status)
    return {
        "backend": "sqlite3",
        "dep_file": str(dep_file),
        "reporter": OneLineReporter,
        "verbosity": 2,
        "default_tasks": DEFAULT_TASKS,
    }


def _dry_run_dep_file(root: Path, argv: list[str]) -> Path | None:
    """The scratch database of a dry run (None: not a dry run, or a command line doit_tasks refuses). A dry
    run never falls back to the real database: where its scratch one cannot be, it stops here."""
    from builder.settings import doit_words, flag

    try:
        if not flag(doit_words(argv[1:]).get("DRY_RUN", "0"), "DRY_RUN"):
            return None
    except BuildError:
        return None
    scratch = root / ".builder" / "dry-run"
    try:
        scratch.mkdir(parents=True, exist_ok=True)
        (scratch / DEP_FILE).unlink(missing_ok=True)  # it remembers nothing from one dry run to the next
    except OSError as exc:
        print(f"error: cannot make the dry run's scratch database in {_relative(scratch, root)}: {os_reason(exc)}",
              file=sys.stderr)
        sys.exit(2)
    return scratch / DEP_FILE


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
        return _outputs_intact(self.plan.project.out_dir, values)


def _build_action(plan: Plan) -> dict[str, object] | TaskFailed:
    from builder.executor import execute  # the executor (and what it imports) only when something builds

    return _guarded(plan, lambda: execute(plan))


def _guarded(plan: Plan, work: Callable[[], Any]) -> Any:
    """``work()``, with what the user can act on as one line: a BuildError, or an OSError (the machine, not
    the recipe: a full disk, a read-only .builder) naming the path. out/ changes only in one transaction,
    so it is as it was."""
    try:
        return work()
    except BuildError as exc:
        return TaskFailed(str(exc))
    except OSError as exc:
        where = f" ({_relative(exc.filename, plan.project.root)})" if exc.filename else ""
        return TaskFailed(f"{plan.label}: {os_reason(exc)}{where}; nothing in out/ changed")


def _relative(path: object, root: Path) -> str:
    """A host path as the user knows it: relative to the project when inside it."""
    text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    try:
        return str(Path(text).relative_to(root))
    except ValueError:
        return text


def _dry_run_action(plan: Plan) -> TaskFailed | None:
    from builder.executor import dry_run

    return _guarded(plan, lambda: print(dry_run(plan)))


def build_task(plan: Plan, description: str) -> dict[str, object]:
    """The doit task that builds ``plan`` (or, with DRY_RUN=1, prints how it would)."""
    task: dict[str, object] = {
        "basename": plan.recipe.name,
        "name": plan.variant,
        "meta": {"platform": plan.platform.arch},
        "doc": f"{description} for {plan.platform.docker} -> " + ", ".join(f"out/{o}" for o in plan.outputs),
        "task_dep": plan.upstream,
        "verbosity": 2,
    }
    if plan.project.settings.dry_run:
        task.update(actions=[(_dry_run_action, [plan])], uptodate=[False])
    else:
        uptodate: list[object] = [False] if plan.project.settings.push else [UpToDate(plan)]
        task.update(actions=[(_build_action, [plan])], targets=[str(t) for t in plan.targets], uptodate=uptodate,
                    clean=[(clean_action, [plan.project.root, plan.slug, plan.outputs])])
    return task


def clean_action(root: Path, slug: str, names: list[str], dryrun: bool = False) -> TaskFailed | None:
    """`doit clean`: the task's artifacts leave out/ together with their lines in SHA256SUMS and manifest.json
    and the task's input signature (one out/ transaction)."""
    from builder import outputs

    if dryrun:
        print(f"    would remove {', '.join(f'out/{n}' for n in names)}")
        return None
    try:
        outputs.publish(root / "out", outputs.Change(add={}, drop=names, signatures={slug: None}),
                        lock_dir=root / ".builder")
    except BuildError as exc:
        return TaskFailed(str(exc))
    print(f"    removed {', '.join(f'out/{n}' for n in names)}")
    return None


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
    yield from image_groups(project, plans)
    yield from command_tasks(project.command_plans())


# doit iso / disk / images (Talos's make iso, make image-PLATFORM): every profile of those kinds (PROFILE=...
# picks some), on every requested platform it is built for.
IMAGE_GROUPS = {"iso": ("iso",), "disk": ("disk",), "images": ("iso", "disk", "kernel", "initramfs", "cmdline")}


def image_groups(project: Project, plans: list[Plan]) -> Iterator[dict[str, object]]:
    from builder.images import RECIPE_PREFIX

    profiles = {RECIPE_PREFIX + p.name: p for p in project.profiles}
    if not profiles:
        return  # a project without profiles/ has no boot media tasks
    chosen = project.settings.profiles
    for group, kinds in IMAGE_GROUPS.items():
        what = "every profile" if group == "images" else f"the {group} profiles"
        doc = f"boot media: {what}" + (f" among PROFILE={','.join(chosen)}" if chosen else "")
        deps = [plan.label for plan in plans if plan.recipe.name in profiles
                and profiles[plan.recipe.name].output.kind in kinds
                and (not chosen or profiles[plan.recipe.name].name in chosen)]
        yield {"basename": group, "name": None, "doc": doc, "task_dep": deps}
        if not deps:  # a subtask that says why (doit ignores the actions of a group's own task)
            message = _nothing_to_build(project, group, kinds)
            yield {"basename": group, "name": "nothing", "doc": message, "meta": {"nothing": message},
                   "actions": [(_fail, [message])], "verbosity": 2}


def _nothing_to_build(project: Project, group: str, kinds: tuple[str, ...]) -> str:
    chosen = [p for p in project.profiles if not project.settings.profiles or p.name in project.settings.profiles]
    arches = ",".join(p.arch for p in project.settings.platforms)
    wrong = [p for p in chosen if p.output.kind not in kinds]
    if wrong and len(wrong) == len(chosen):
        p = wrong[0]
        return f"doit {group}: profile {p.name} makes {p.output.kind} output, not {group} (doit image-{p.name})"
    return f"doit {group}: no {group} profile is built for {arches} (see 'arch' in profiles/)"


def _fail(message: str) -> TaskFailed:
    return TaskFailed(message)


def command_tasks(plans: list[Plan]) -> Iterator[dict[str, object]]:
    """A task per recipe command (`doit kernel-olddefconfig`), a subtask per platform: never up to date,
    not a default task; it writes project files, never out/."""
    for task in dict.fromkeys(plan.task for plan in plans):
        mine = [plan for plan in plans if plan.task == task]
        command = mine[0].recipe.commands[mine[0].command or ""]
        doc = command.description or f"run {mine[0].command} of {mine[0].recipe.name}"
        yield {"basename": task, "name": None, "doc": doc}
        for plan in mine:
            yield {"basename": task, "name": plan.platform.arch, "verbosity": 2, "uptodate": [False],
                   "doc": f"{doc} ({plan.platform.docker})", "meta": {"command": [plan.recipe.name, plan.command]},
                   "actions": [(_dry_run_action if plan.project.settings.dry_run else _command_action, [plan])]}


def _command_action(plan: Plan) -> TaskFailed | None:
    from builder.executor import run_command

    def work() -> None:
        run_command(plan)

    return _guarded(plan, work)


def _outputs_intact(out_dir: Path, values: Mapping[str, Any]) -> bool:
    for name, sha in (values.get("outputs") or {}).items():
        path = out_dir / name
        if not path.is_file() or sha256_file(path) != sha:
            return False
    return True


class MemoUpToDate:
    """The up-to-date check from a plan memo: the same digest as UpToDate, without parsing anything."""

    def __init__(self, root: Path, check: Mapping[str, Any], identities: Identities) -> None:
        self.root, self.check, self.identities = root, check, identities

    def __call__(self, task: object, values: Mapping[str, Any]) -> bool:
        stored = values.get("digest")
        if not stored:
            return False
        try:
            now = memo.inputs_now(self.root, self.check, self.identities)
        except BuildError:
            return False  # the action runs and reports the problem as one line
        return now is not None and inputs_digest(now) == stored and _outputs_intact(self.root / "out", values)


_projects: dict[tuple[Path, tuple[tuple[str, str], ...]], Project] = {}


def _memo_build_action(root: Path, words: dict[str, str], name: str, arch: str) -> dict[str, object] | TaskFailed:
    """A memo task that must build after all: now the full plan is made (once per process)."""
    from builder.platforms import parse_platforms

    try:
        return _build_action(_memo_project(root, words).plan(name, parse_platforms(arch)[0]))
    except BuildError as exc:
        return TaskFailed(str(exc))


def _memo_project(root: Path, words: dict[str, str]) -> Project:
    """The full project, made once per process, for a memo task that must run after all."""
    from builder.project import Project

    cache_key = (root, tuple(sorted(words.items())))
    if cache_key not in _projects:
        project = Project.load(root, words)
        # every plan, not only this task's: the host checks (keys, module lists, files) of the tasks after
        # this one hold before this one builds, as on a run without a memo
        for plan in project.plans():
            plan.context  # noqa: B018 - rendering is what checks them
        _projects[cache_key] = project
    return _projects[cache_key]


def _memo_command_action(root: Path, words: dict[str, str], recipe: str, command: str,
                         arch: str) -> TaskFailed | None:
    from builder.platforms import parse_platforms

    try:
        return _command_action(_memo_project(root, words).command_plan(recipe, command, parse_platforms(arch)[0]))
    except BuildError as exc:
        return TaskFailed(str(exc))


def _memo_entry(project: Project, tasks: list[dict[str, object]]) -> dict[str, Any]:
    checks = {plan.label: memo.check_of(plan) for plan in project.plans()}
    described = [{k: v for k, v in task.items() if k in ("basename", "name", "doc", "task_dep", "targets", "meta")}
                 for task in tasks]
    return {"tasks": described, "checks": checks}


def _from_memo(root: Path, words: dict[str, str], entry: Mapping[str, Any]) -> Iterator[dict[str, object]]:
    from builder.identity import Identities

    identities = Identities(root / "out")
    for described in entry["tasks"]:
        task: dict[str, object] = dict(described)
        command = (task.get("meta") or {}).get("command")  # type: ignore[attr-defined]
        if command is not None and task["name"] is not None:
            recipe, name = command  # type: ignore[misc]
            task.update(actions=[(_memo_command_action, [root, words, recipe, name, task["name"]])],
                        uptodate=[False], verbosity=2)
        elif (task.get("meta") or {}).get("nothing"):  # type: ignore[attr-defined]
            task.update(actions=[(_fail, [task["meta"]["nothing"]])], verbosity=2)  # type: ignore[index]
        elif task["name"] is not None:
            label = f"{task['basename']}:{task['name']}"
            names = [Path(t).name for t in task.get("targets") or []]  # type: ignore[attr-defined]
            arch = (task.get("meta") or {}).get("platform", task["name"])  # type: ignore[attr-defined]
            task.update(actions=[(_memo_build_action, [root, words, task["basename"], arch])],
                        uptodate=[MemoUpToDate(root, entry["checks"][label], identities)],
                        clean=[(clean_action, [root, f"{task['basename']}-{task['name']}", names])], verbosity=2)
        yield task


def dodo_tasks(root: Path, argv: list[str]) -> Iterator[dict[str, object]]:
    """What a project's dodo.py yields: tasks for the settings on doit's command line ``argv``.

    A user's mistake here is one line and exit status 2, before doit runs anything."""
    from builder.settings import Settings, doit_words

    try:
        words = doit_words(argv[1:])
        settings = Settings.parse(words)
        state = root / ".builder"  # Project.state_dir
        if state.exists() and not state.is_dir():
            raise BuildError(".builder is not a directory; it holds build state (logs, locks, the plan memo)",
                             hint="move it aside")
        if wants_lock(argv) and not settings.dry_run:
            acquire_run_lock(root)
        digest = memo.key(root, words)
        fresh = settings.dry_run or settings.push  # PUSH=1 runs every build (BuildKit's cache makes it cheap)
        entry = None if fresh else memo.load(state, digest)
        if entry is not None:
            tasks = list(_from_memo(root, words, entry))
        else:
            from builder.project import Project

            project = Project(root, settings)
            tasks = list(generate(project))
            project.check_words()
            if not fresh:
                memo.save(state, digest, _memo_entry(project, tasks))
        check_task_words(argv, tasks)
        if wants_lock(argv):
            check_push_target(settings)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # the machine: a full disk or a read-only file system under the project
        where = f"{_relative(exc.filename, root)}: " if exc.filename else ""
        print(f"error: {where}{os_reason(exc)}", file=sys.stderr)
        sys.exit(2)
    yield from tasks


DOIT_COMMANDS = {"run", "clean", "list", "info", "forget", "ignore", "dumpdb", "strace", "help", "tabcompletion",
                 "auto", "reset-dep"}
TASK_COMMANDS = {"run", "clean", "forget", "ignore", "info"}  # the commands whose words name tasks
VALUE_OPTIONS = {"-n", "--process", "-o", "--output-file", "-P", "--parallel-type", "--failure-verbosity", "-r",
                 "--reporter", "-v", "--verbosity", "--backend", "--check_file_uptodate", "-d", "--dir",
                 "--db-file", "-f", "--file"}


def check_task_words(argv: list[str], tasks: list[dict[str, object]]) -> None:
    """Every task word on doit's command line names a task (or a target): a typo is one line naming the
    closest tasks, not doit's 'Invalid parameter'. A command line this cannot read is left to doit."""
    import difflib

    args = argv[1:]
    words: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in VALUE_OPTIONS:
            skip = True
        elif arg.startswith("-"):
            if arg.split("=", 1)[0] not in VALUE_OPTIONS and not re.fullmatch(r"-[acksv0-9]+|--[a-z-]+", arg):
                return  # an option this does not know: doit decides
        elif "=" not in arg:
            words.append(arg)
    if words and words[0] in DOIT_COMMANDS:
        if words[0] not in TASK_COMMANDS:
            return
        words = words[1:]
    known = {str(t["basename"]) if t.get("name") is None else f"{t['basename']}:{t['name']}" for t in tasks}
    targets = {str(p) for t in tasks for p in t.get("targets") or []}  # type: ignore[attr-defined]
    targets |= {os.path.relpath(p) for p in targets}
    for word in words:
        if word in known or word in targets or any(c in word for c in "*?["):
            continue
        close = difflib.get_close_matches(word, sorted(known), n=3)
        hint = f"did you mean {' or '.join(close)}?" if close else f"known tasks: {', '.join(sorted(known)[:12])}"
        shown = os.fsencode(word).decode("utf-8", "backslashreplace")  # bytes that are not UTF-8 as \\xff
        raise BuildError(f"command line: unknown task '{shown}'", hint=hint)


def check_push_target(settings: Settings) -> None:
    """PUSH=1: the registry answers as one, within REGISTRY_TIMEOUT, before any build starts."""
    if settings.push and not settings.dry_run and settings.registry:
        from builder import registry

        registry.check_push_target(settings.registry, seconds=settings.registry_timeout)


_lock_file: IO[bytes] | None = None


def acquire_run_lock(root: Path) -> None:
    """One build at a time per project: a second concurrent run stops with a clear message."""
    global _lock_file
    if _lock_file is not None:
        return
    state = root / ".builder"  # Project.state_dir
    path = state / "run.lock"
    try:
        state.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+b", buffering=0)  # noqa: SIM115 - held for the life of the process
    except OSError as exc:
        raise BuildError(f"cannot take the run lock {_relative(path, root)}: {os_reason(exc)}",
                         hint=".builder must be a writable directory with space left") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read(64).decode(errors="replace").strip() or "?"
        handle.close()
        raise BuildError(f"another build is already running in {root} (pid {holder}); "
                         "wait for it to finish") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()).encode())  # unbuffered: the write fails here, never at close
    except OSError as exc:  # a full or read-only .builder: every later write of state would fail too
        handle.close()
        raise BuildError(f"cannot write the run lock {_relative(path, root)}: {os_reason(exc)}",
                         hint=".builder must be a writable directory with space left") from None
    _lock_file = handle
    # what a killed run left (its build's scratch directory): removed now that no other run can use it,
    # whether or not this run builds anything
    shutil.rmtree(state / "tmp", ignore_errors=True)


def wants_lock(argv: list[str]) -> bool:
    """True when this doit invocation may run tasks (so it must hold the project lock)."""
    words = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]
    return not (words and words[0] in READ_ONLY_COMMANDS)
