"""doit task dicts, made by one function from one description: what each task runs (executor.execute),
when it is up to date, and how it is cleaned. doitglue.py hands them to doit.

A full plan is first described (describe): every task as plain data, and for each build the inputs its
up-to-date check needs (memo.check_of). The plan memo keeps that description; tasks() makes the doit dicts
from it, on a memo hit and after a full plan alike, so both give the same tasks by construction. A task's
action asks for the full project (``load``) only when it runs.

One task per exported recipe (`doit kernel`), one subtask per platform (`kernel:amd64`). A task whose
build takes another's published outputs (an ``artifact`` dependency) depends on that task.
Up-to-date means: the digest of every build input (rendered Dockerfile and scripts, project files,
source digests, artifacts' sha256, the toolchain's portable identity) equals the one stored after the
last successful build, and every output in out/ still has the sha256 recorded then. Content, never mtimes:
an output is read again unless its full stat (ctime and inode too) is what it was when its sha256 was last
computed (builder.host.hashindex, git's index model).
Any other kind of task (one spanning platforms, an interactive one) is a dict like these, with its own
actions; nothing here is special to builds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doit.exceptions import TaskFailed

from builder.core.errors import BuildError, os_reason
from builder.host.outputs import inputs_digest
from builder.schedule import memo

if TYPE_CHECKING:  # imported when a plan is really needed: a no-op run with a plan memo never parses recipes
    from builder.core.locations import Locations
    from builder.host.hashindex import HashIndex
    from builder.resolve.identity import Identities
    from builder.resolve.plan import Plan
    from builder.resolve.project import Project

def _guarded(plan: Plan, work: Callable[[], Any]) -> Any:
    """``work()``, with what the user can act on as one line: a BuildError, or an OSError (the machine, not
    the recipe: a full disk, a read-only state directory) naming the path. out/ changes only in one transaction,
    so it is as it was."""
    try:
        return work()
    except BuildError as exc:
        return TaskFailed(str(exc))
    except OSError as exc:
        where = f" ({plan.locations.shown(exc.filename)})" if exc.filename else ""
        return TaskFailed(f"{plan.label}: {os_reason(exc)}{where}; nothing in out/ changed")


def build_task(plan: Plan, description: str) -> dict[str, object]:
    """The description of the task that builds ``plan``: plain data (the memo keeps it)."""
    return {
        "basename": plan.recipe.name,
        "name": plan.subtask,
        "meta": {"platform": plan.platform.arch},
        "doc": f"{description} for {plan.platform.docker} -> " + ", ".join(f"out/{o}" for o in plan.outputs),
        "task_dep": list(plan.upstream),
        "targets": [str(t) for t in plan.targets],
    }


def clean_action(locations: Locations, slug: str, names: list[str], dryrun: bool = False) -> None:
    """`doit clean`: the task's artifacts leave out/ together with their lines in SHA256SUMS and manifest.json
    and the task's input signature (one out/ transaction). doit's clean ignores what an action returns (it
    prints a TaskFailed's repr and exits 0), so a failure is one line and exit status 1 here."""
    from builder.host import outputs

    if dryrun:
        print(f"    would remove {', '.join(f'out/{n}' for n in names)}")
        return None
    try:
        outputs.publish(locations.out, outputs.Change(add={}, drop=names, signatures={slug: None}),
                        lock_dir=locations.state)
    except BuildError as exc:
        # doit's PythonAction catches Exception only, and holds the action's stderr: the message goes with
        # the SystemExit, which Python prints once doit has given stderr back
        sys.exit(f"error: {exc}")
    print(f"    removed {', '.join(f'out/{n}' for n in names)}")
    return None


def _described(project: Project) -> Iterator[dict[str, object]]:
    """The description of every task: each exported recipe on every requested platform, the boot-media
    groups, the recipes' commands."""
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
    from builder.resolve.images import RECIPE_PREFIX

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
            yield {"basename": group, "name": "nothing", "doc": message, "meta": {"nothing": message}}


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
            yield {"basename": task, "name": plan.platform.arch, "doc": f"{doc} ({plan.platform.docker})",
                   "meta": {"command": [plan.recipe.name, plan.command]}}


def _outputs_intact(out_dir: Path, values: Mapping[str, Any], hashes: HashIndex) -> bool:
    return all(hashes.still(out_dir / name, sha) for name, sha in (values.get("outputs") or {}).items())


class UpToDate:
    """doit's up-to-date check of a build: the digest of its inputs as they are now (memo.inputs_now, from the
    description's ``check``) is the one stored after its last build, and every output in out/ still has the
    sha256 recorded then. It parses nothing: a no-op run never loads the recipes.

    doit asks it only once the task's dependencies have run, so artifacts are read as they are then."""

    def __init__(self, locations: Locations, check: Mapping[str, Any], identities: Identities,
                 hashes: HashIndex) -> None:
        self.locations, self.check, self.identities, self.hashes = locations, check, identities, hashes

    def __call__(self, task: object, values: Mapping[str, Any]) -> bool:
        stored = values.get("digest")
        if not stored:
            return False
        try:
            now = memo.inputs_now(self.locations.root, self.check, self.identities)
        except BuildError:
            return False  # the action runs and reports the problem as one line
        return now is not None and inputs_digest(now) == stored and _outputs_intact(self.locations.out, values,
                                                                                   self.hashes)


ProjectLoader = Callable[[], "Project"]


def _project(load: ProjectLoader, render_all: bool) -> Project:
    """The full project, for a task that runs. With ``render_all`` (the description came from the memo)
    every plan is rendered first, not only this task's: the host checks (keys, module lists, files) of the
    tasks after this one hold before this one builds, as on a run without a memo."""
    project = load()
    if render_all:
        for plan in project.plans():
            plan.context  # noqa: B018 - rendering is what checks them
    return project


def _build_action(load: ProjectLoader, name: str, arch: str, render_all: bool) -> dict[str, object] | TaskFailed:
    from builder.build.executor import execute  # the executor (and what it imports) only when something builds
    from builder.core.platforms import parse_platforms

    try:
        project = _project(load, render_all)
        plan = project.plan(name, parse_platforms(arch)[0])
    except BuildError as exc:
        return TaskFailed(str(exc))
    return _guarded(plan, lambda: execute(plan, project))


def _dry_run_action(load: ProjectLoader, name: str, arch: str, command: str | None,
                    render_all: bool) -> TaskFailed | None:
    from builder.build.executor import dry_run
    from builder.core.platforms import parse_platforms

    try:
        project = _project(load, render_all)
        platform = parse_platforms(arch)[0]
        plan = project.command_plan(name, command, platform) if command else project.plan(name, platform)
    except BuildError as exc:
        return TaskFailed(str(exc))
    return _guarded(plan, lambda: print(dry_run(plan, project)))


def _command_action(load: ProjectLoader, recipe: str, command: str, arch: str, render_all: bool) -> TaskFailed | None:
    from builder.build.executor import run_command
    from builder.core.platforms import parse_platforms

    try:
        project = _project(load, render_all)
        plan = project.command_plan(recipe, command, parse_platforms(arch)[0])
    except BuildError as exc:
        return TaskFailed(str(exc))

    def work() -> None:
        run_command(plan, project)

    return _guarded(plan, work)


def describe(project: Project, *, checks: bool = True) -> dict[str, Any]:
    """The full plan as plain data, what the plan memo keeps: every task's description and, with
    ``checks``, each build's up-to-date check (a run that builds everything, DRY_RUN=1 or PUSH=1, needs none)."""
    described = list(_described(project))
    return {"tasks": described,
            "checks": {plan.label: memo.check_of(plan) for plan in project.plans()} if checks else {}}


def tasks(entry: Mapping[str, Any], *, load: ProjectLoader, locations: Locations, identities: Identities,
          hashes: HashIndex, dry_run: bool = False, push: bool = False,
          render_all: bool = True) -> Iterator[dict[str, object]]:
    """The doit tasks of a description ``entry`` (describe, or the plan memo's): the one way tasks are made.
    The full project is loaded (``load``) only by a task that runs; ``render_all``: the description came
    from the memo, so nothing has been rendered yet (see _project)."""
    for described in entry["tasks"]:
        task: dict[str, object] = dict(described)
        meta: Mapping[str, Any] = task.get("meta") or {}  # type: ignore[assignment]
        command = meta.get("command")
        if command is not None and task["name"] is not None:
            recipe, name = command
            action = (_dry_run_action, [load, recipe, task["name"], name, render_all]) if dry_run else \
                (_command_action, [load, recipe, name, task["name"], render_all])
            task.update(actions=[action], uptodate=[False], verbosity=2)
        elif meta.get("nothing"):
            task.update(actions=[(_fail, [meta["nothing"]])], verbosity=2)
        elif task["name"] is not None:
            arch = meta.get("platform", task["name"])
            if dry_run:
                task.pop("targets", None)
                task.update(actions=[(_dry_run_action, [load, task["basename"], arch, None, render_all])],
                            uptodate=[False], verbosity=2)
                yield task
                continue
            label = f"{task['basename']}:{task['name']}"
            names = [Path(t).name for t in task.get("targets") or []]  # type: ignore[attr-defined]
            check: list[object] = [False] if push else [UpToDate(locations, entry["checks"][label], identities, hashes)]
            task.update(actions=[(_build_action, [load, task["basename"], arch, render_all])], uptodate=check,
                        clean=[(clean_action, [locations, f"{task['basename']}-{task['name']}", names])], verbosity=2)
        yield task


def generate(project: Project, entry: Mapping[str, Any] | None = None) -> Iterator[dict[str, object]]:
    """The doit tasks of ``project``'s full plan (``entry``: its description, when already made), as a run
    without a memo makes them: its plans are rendered, so no task renders them again."""
    settings = project.settings
    if entry is None:
        entry = describe(project, checks=not (settings.dry_run or settings.push))
    yield from tasks(entry, load=lambda: project, locations=project.locations, identities=project.identities,
                     hashes=project.hashes, dry_run=settings.dry_run, push=settings.push, render_all=False)
