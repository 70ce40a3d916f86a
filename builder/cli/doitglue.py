"""Everything between doit and builder, in one module: doit's configuration (DOIT_CONFIG), the one-line
reporter, the database check, the run lock, and the reading of doit's command-line words.

`doit` (a project's dodo.py) and `builder build` take one path: a `Session` made from the command line's
``NAME=value`` words, whose `doit_config` and `tasks` doit loads. `builder build` runs doit through its
public API (`DoitMain` with a `ModuleTaskLoader`); nothing here overrides a private part of doit, and the
one part of doit's grammar read here (which words are options taking a value, and doit's commands) is
held to doit's own by tests/unit/test_doitglue.py.

Exit statuses, for both: 0 done; 1 a task failed (doit's own); 2 the command line or the project is
wrong, found before anything runs.

Settings come from the command line only: an environment variable named like a setting
(``PLATFORM=linux/arm64 doit kernel``) is refused with one line rather than taken, Make-style, or silently
ignored. Taking it would let a shell's stray ``TAG`` or ``USERNAME`` change what is built or where it is
pushed, and no byte may depend on the caller's environment. SOURCE_DATE_EPOCH is the one exception: the
reproducible-builds convention is to pass it in the environment, and it is recorded with every artifact.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from doit.exceptions import TaskFailed
from doit.reporter import ConsoleReporter

from builder.core.errors import BuildError, os_reason
from builder.core.locations import Locations
from builder.host.hashindex import HashIndex
from builder.host.services import Services
from builder.model.settings import PACKAGE_WORD, SETTINGS, Settings, doit_words
from builder.schedule import memo

if TYPE_CHECKING:
    from builder.resolve.project import Project

READ_ONLY_COMMANDS = {"list", "info", "help", "dumpdb", "tabcompletion", "strace"}
DEFAULT_TASKS = ["kernel", "initramfs"]
DOIT_COMMANDS = {"run", "clean", "list", "info", "forget", "ignore", "dumpdb", "strace", "help", "tabcompletion",
                 "auto", "reset-dep"}
TASK_COMMANDS = {"run", "clean", "forget", "ignore", "info"}  # the commands whose words name tasks
VALUE_OPTIONS = {"-n", "--process", "-o", "--output-file", "-P", "--parallel-type", "--failure-verbosity", "-r",
                 "--reporter", "-v", "--verbosity", "--backend", "--check_file_uptodate", "-d", "--dir",
                 "--db-file", "-f", "--file", "--template", "--sort", "--shell"}  # -s: run's is a flag
USAGE_STATUS = 2


class OneLineReporter(ConsoleReporter):
    """doit's console reporter, but a task's BuildError is one line, never a traceback."""

    def _write_failure(self, result: dict[str, Any], write_exception: bool = True) -> None:
        fail = result["exception"]
        if isinstance(fail, TaskFailed) and not fail.traceback:
            sys.stderr.write(f"error: {fail.message}\n")
            return
        super()._write_failure(result, write_exception)


class DepFileError(BuildError):
    """doit's database cannot be read: found before doit runs anything, exit status 2 wherever found."""

    exit_status = USAGE_STATUS


SQLITE_BUSY = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED: another doit is writing it; not our business here
SQLITE_DAMAGED = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


def check_dep_file(path: Path) -> None:
    """A DepFileError when doit's sqlite3 database ``path`` exists and cannot be read whole: garbage bytes,
    a truncated copy, or values that are not doit's JSON. doit itself would stop with a traceback."""
    if not path.exists():
        return
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


def check_environment(words: Mapping[str, str], environ: Mapping[str, str]) -> None:
    """A setting set in the environment and not on the command line is refused (see the module's doc)."""
    for name in sorted(environ):
        if (name in SETTINGS or PACKAGE_WORD.match(name)) and name not in words:
            raise BuildError(f"{name} is set in the environment, which builder does not read: settings come from "
                             "the command line only, so that no build depends on the caller's environment",
                             hint=f"give it on the command line ({name}=VALUE), or unset {name}")


class RunLock:
    """One build at a time per project (per state directory): a second concurrent run stops with a clear
    message. Held until the process ends; taking it removes what a killed run left in the scratch space."""

    def __init__(self, locations: Locations) -> None:
        self.locations = locations
        self._handle: IO[bytes] | None = None
        self._mutex = threading.Lock()

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self) -> None:
        with self._mutex:
            if self._handle is None:
                self._handle = self._take()
                # what a killed run left (its build's scratch directory): removed now that no other run can
                # use it, whether or not this run builds anything
                shutil.rmtree(self.locations.tmp, ignore_errors=True)

    def release(self) -> None:
        with self._mutex:
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def _take(self) -> IO[bytes]:
        path, shown = self.locations.run_lock, self.locations.shown(self.locations.run_lock)
        hint = f"{self.locations.shown(self.locations.state)} must be a writable directory with space left"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a+b", buffering=0)  # noqa: SIM115 - held for the life of the process
        except OSError as exc:
            raise BuildError(f"cannot take the run lock {shown}: {os_reason(exc)}", hint=hint) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read(64).decode(errors="replace").strip() or "?"
            handle.close()
            raise BuildError(f"another build is already running in {self.locations.root} (pid {holder}); "
                             "wait for it to finish") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()).encode())  # unbuffered: the write fails here, never at close
        except OSError as exc:  # a full or read-only state directory: every later write of state would fail too
            handle.close()
            raise BuildError(f"cannot write the run lock {shown}: {os_reason(exc)}", hint=hint) from None
        return handle


def command_words(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """doit's command (None: none given, which means run) and the task words of a doit command line
    (``argv`` without the program), by doit's grammar: options, their values and NAME=value words left out.
    ("?", []) when a word is an option this does not know: then doit decides what it means."""
    words: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in VALUE_OPTIONS:
            skip = True
        elif arg.startswith("-"):
            if arg.split("=", 1)[0] not in VALUE_OPTIONS and not re.fullmatch(r"-[acksv0-9]+|--[a-z-]+", arg):
                return "?", []
        elif "=" not in arg:
            words.append(arg)
    if words and words[0] in DOIT_COMMANDS:
        return words[0], words[1:]
    return None, words


class Session:
    """One invocation of doit or `builder build`: its settings and places, its run lock, and the project,
    made once and passed down (nothing of it is a module global). Safe to share between threads: the
    project is made under a lock, the run lock has its own."""

    def __init__(self, root: Path, words: Mapping[str, str], *, command: str | None = None,
                 task_words: Sequence[str] = (), tool: str = "doit",
                 environ: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.words = dict(words)
        self.command = command  # doit's command (None: run)
        self.task_words = list(task_words)
        self.tool = tool  # how the user types a build: "doit" or "builder build", for hints
        check_environment(self.words, os.environ if environ is None else environ)
        self.settings = Settings.parse(self.words)
        self.locations = Locations.of(root, self.settings.out_dir, self.settings.state_dir)
        self.lock = RunLock(self.locations)
        self.services = Services()  # the engine, BuildKit and registries, asked on behalf of this session
        # one identity per image and one stat record of out/ per session, whether the tasks come from the memo
        # or the full plan, and the project (when one is loaded) takes the same
        from builder.resolve.identity import Identities

        self.identities = Identities(self.locations.out, self.services, registry_seconds=self.settings.registry_timeout)
        self.hashes = HashIndex(self.locations.state)
        self._project: Project | None = None
        self._mutex = threading.Lock()

    @classmethod
    def from_argv(cls, root: Path, argv: Sequence[str]) -> Session:
        """The session of doit's command line ``argv`` (sys.argv); a mistake in it is one line and exit 2."""
        try:
            command, task_words = command_words(argv[1:])
            return cls(root, doit_words(argv[1:]), command=command, task_words=task_words)
        except BuildError as exc:
            _refuse(exc)

    @property
    def runs_tasks(self) -> bool:
        """This invocation may run tasks (so it must hold the run lock)."""
        return self.command not in READ_ONLY_COMMANDS

    @property
    def dep_file(self) -> Path:
        """doit's database: a dry run's is a scratch one. doit saves what each task it "ran" returned, and
        a dry run's tasks return nothing, so the real database would forget every build it printed."""
        if self.settings.dry_run:
            return self.locations.dry_run / self.locations.dep_file.name
        return self.locations.dep_file

    def doit_config(self) -> dict[str, object]:
        """DOIT_CONFIG: asked when doit imports dodo.py, before it opens its database. A damaged database is
        one line and exit 2 here, not doit's traceback later; a dry run's scratch one is made afresh."""
        try:
            self.locations.check()
            if self.settings.dry_run:
                try:
                    self.locations.dry_run.mkdir(parents=True, exist_ok=True)
                    self.dep_file.unlink(missing_ok=True)
                except OSError as exc:
                    raise BuildError(f"cannot make the dry run's scratch database in "
                                     f"{self.locations.shown(self.locations.dry_run)}: {os_reason(exc)}") from None
            else:
                self.dep_file.parent.mkdir(parents=True, exist_ok=True)
                check_dep_file(self.dep_file)
        except BuildError as exc:
            _refuse(exc)
        except OSError as exc:
            _refuse_os(exc, self.locations)
        return {
            "backend": "sqlite3",
            "dep_file": str(self.dep_file),
            "reporter": OneLineReporter,
            "verbosity": 2,
            "default_tasks": DEFAULT_TASKS,
        }

    def project(self) -> Project:
        """The full project (parsed and validated), made once per session."""
        with self._mutex:
            if self._project is None:
                from builder.resolve.project import Project

                self._project = Project(self.root, self.settings, services=self.services,
                                        given_identities=self.identities, given_hashes=self.hashes)
            return self._project

    def tasks(self) -> list[dict[str, object]]:
        """The tasks doit loads: from the plan memo when it holds this command line's, else from the full
        plan (then remembered). Every check that can be made on the host is made here, before any task
        runs; a mistake is one line and exit 2."""
        try:
            return self._tasks()
        except BuildError as exc:
            _refuse(exc)
        except OSError as exc:  # the machine: a full disk or a read-only file system under the project
            _refuse_os(exc, self.locations)

    def _tasks(self) -> list[dict[str, object]]:
        from builder.schedule import tasks as build_tasks

        settings = self.settings
        self.locations.check()
        if self.runs_tasks and not settings.dry_run:
            self.lock.acquire()
        digest = memo.key(self.root, self.words, settings.apt)
        fresh = settings.dry_run or settings.push  # PUSH=1 runs every build (BuildKit's cache makes it cheap)
        entry = None if fresh else memo.load(self.locations.memo, digest)
        if entry is not None:  # the memo's description: nothing parsed, the project loaded by a task that runs
            tasks = list(build_tasks.tasks(entry, load=self.project, locations=self.locations, hashes=self.hashes,
                                           identities=self.identities))
        else:
            project = self.project()
            entry = build_tasks.describe(project, checks=not fresh)
            tasks = list(build_tasks.generate(project, entry))
            project.check_words()
            if not fresh:
                memo.save(self.locations.memo, digest, entry)
        check_task_words(self.command, self.task_words, tasks,
                         explain=lambda word: explain_target(self.project(), word, self.tool))
        if self.runs_tasks:
            check_push_target(settings, self.services, self.locations.root)
        return tasks

    def run(self) -> int:
        """Run this session's tasks through doit's public API (what `builder build` does): doit's status."""
        from doit.cmd_base import ModuleTaskLoader
        from doit.doit_cmd import DoitMain

        config = self.doit_config()
        tasks = self.tasks()

        def task_recipes() -> Iterator[dict[str, object]]:
            yield from tasks

        loader = ModuleTaskLoader({"task_recipes": task_recipes, "DOIT_CONFIG": config})
        return int(DoitMain(loader).run([self.command or "run", *self.task_words]))


def check_task_words(command: str | None, words: Sequence[str], tasks: list[dict[str, object]], *,
                     explain: Callable[[str], None] | None = None) -> None:
    """Every task word of a command that takes them names a task (or a target): a typo is one line naming
    the closest tasks, not doit's 'Invalid parameter'. ``explain(word)`` may raise what the recipes say
    about that word first (see explain_target)."""
    if command is not None and command not in TASK_COMMANDS:
        return
    known = {str(t["basename"]) if t.get("name") is None else f"{t['basename']}:{t['name']}" for t in tasks}
    targets = {str(p) for t in tasks for p in t.get("targets") or []}  # type: ignore[attr-defined]
    targets |= {os.path.relpath(p) for p in targets}
    for word in words:
        if word in known or word in targets or any(c in word for c in "*?["):
            continue
        shown = os.fsencode(word).decode("utf-8", "backslashreplace")  # bytes that are not UTF-8 as \\xff
        if explain is not None:
            explain(shown)
        import difflib  # only on this error path

        close = difflib.get_close_matches(word, sorted(known), n=3)
        bases = sorted({str(t["basename"]) for t in tasks})  # kernel, not kernel:amd64 too: the list stays short
        hint = f"did you mean {' or '.join(close)}?" if close else f"known tasks: {', '.join(bases[:24])}"
        raise BuildError(f"command line: unknown task '{shown}'", hint=hint)


def explain_target(project: Project, target: str, tool: str) -> None:
    """A BuildError saying why ``target`` (NAME or NAME:ARCH) is not a task of this run, when the recipes
    know: a stage without outputs, a recipe not built for the platforms asked, an arch that is not one."""
    from builder.core.platforms import PLATFORMS

    plans = project.plans()
    names = sorted({plan.recipe.name for plan in plans})
    name, _, arch = target.partition(":")
    recipes = project.graph(project.settings.platforms[0]).recipes
    if target in names or target in {plan.label for plan in plans}:
        return
    if name not in recipes:
        return
    platform_word = "--platform " if tool == "builder build" else "PLATFORM="
    if not recipes[name].outputs:
        users = sorted(r.name for r in recipes.values() if any(d.stage == name for d in r.dependencies))
        built = [user for user in users if user in names]
        raise BuildError(f"recipe {name} has no outputs; nothing to build - it is a stage "
                         + (f"for {', '.join(users)}" if users else "no recipe uses"),
                         hint=f"{tool} {' '.join(built)}" if built else
                         f"add outputs: to {recipes[name].where('name').rsplit(':', 1)[0]} to build it on its own")
    asked = ",".join(p.docker for p in project.settings.platforms)
    if not arch:  # its `platforms` leave out every one asked for
        wanted = ",".join(recipes[name].platforms or [])
        raise BuildError(f"recipe {name} is not built for {asked} (its platforms: {wanted})",
                         hint=f"{tool} {name} {platform_word}{wanted}")
    if f"linux/{arch}" in PLATFORMS:
        hint = f"this run builds {asked}; for {arch}: {tool} {name} {platform_word}linux/{arch}"
    else:
        hint = f"there is no platform {arch}; the platforms are {', '.join(PLATFORMS)}"
    known = f"known targets: {', '.join([*names, *sorted(plan.label for plan in plans)]) or 'none'}"
    raise BuildError(f"unknown target {target!r}; {known}", hint=hint)


def check_push_target(settings: Settings, services: Services, root: Path) -> None:
    """PUSH=1: IMAGE_SIGNING_KEY is a key, and the registry answers as one within REGISTRY_TIMEOUT, before any
    build starts."""
    if settings.image_signing_key and not settings.dry_run:  # a key that is not one: said before any build
        from builder.host import cosign

        cosign.load_private_key(root / settings.image_signing_key, root=root)
    if settings.push and not settings.dry_run and settings.registry:
        from builder.host import registry

        registry.check_push_target(settings.registry, seconds=settings.registry_timeout,
                                   session=services.registries)


def _refuse(exc: BuildError) -> NoReturn:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(USAGE_STATUS)


def _refuse_os(exc: OSError, locations: Locations) -> NoReturn:
    where = f"{locations.shown(exc.filename)}: " if exc.filename else ""
    print(f"error: {where}{os_reason(exc)}", file=sys.stderr)
    sys.exit(USAGE_STATUS)
