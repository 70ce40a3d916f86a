"""doit task dicts made from plans: what each task runs (executor.execute), when it is up to date, and
how it is cleaned. doitglue.py hands them to doit.

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
    from builder.resolve.plan import Plan, Workspace
    from builder.resolve.project import Project

class UpToDate:
    """doit uptodate check: stored input digest and output hashes against the current ones.

    doit asks it only once the task's dependencies have run, so artifacts are read as they are then."""

    def __init__(self, plan: Plan, workspace: Workspace) -> None:
        self.plan, self.workspace = plan, workspace

    def __call__(self, task: object, values: Mapping[str, Any]) -> bool:
        stored = values.get("digest")
        if not stored:
            return False
        try:
            if stored != self.plan.digest(self.plan.inputs(self.workspace.identities)):
                return False
        except BuildError:
            return False  # let the action run and report the problem as one line
        return _outputs_intact(self.plan.out_dir, values, self.workspace.hashes)


def _build_action(plan: Plan, workspace: Workspace) -> dict[str, object] | TaskFailed:
    from builder.build.executor import execute  # the executor (and what it imports) only when something builds

    return _guarded(plan, lambda: execute(plan, workspace))


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


def _dry_run_action(plan: Plan, workspace: Workspace) -> TaskFailed | None:
    from builder.build.executor import dry_run

    return _guarded(plan, lambda: print(dry_run(plan, workspace)))


def build_task(plan: Plan, workspace: Workspace, description: str) -> dict[str, object]:
    """The doit task that builds ``plan`` (or, with DRY_RUN=1, prints how it would)."""
    task: dict[str, object] = {
        "basename": plan.recipe.name,
        "name": plan.subtask,
        "meta": {"platform": plan.platform.arch},
        "doc": f"{description} for {plan.platform.docker} -> " + ", ".join(f"out/{o}" for o in plan.outputs),
        "task_dep": list(plan.upstream),
        "verbosity": 2,
    }
    if plan.settings.dry_run:
        task.update(actions=[(_dry_run_action, [plan, workspace])], uptodate=[False])
    else:
        uptodate: list[object] = [False] if plan.settings.push else [UpToDate(plan, workspace)]
        task.update(actions=[(_build_action, [plan, workspace])], targets=[str(t) for t in plan.targets],
                    uptodate=uptodate, clean=[(clean_action, [plan.locations, plan.slug, plan.outputs])])
    return task


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
                yield build_task(plan, project, description)
    yield from image_groups(project, plans)
    yield from command_tasks(project.command_plans(), project)


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


def command_tasks(plans: list[Plan], workspace: Workspace) -> Iterator[dict[str, object]]:
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
                   "actions": [(_dry_run_action if plan.settings.dry_run else _command_action, [plan, workspace])]}


def _command_action(plan: Plan, workspace: Workspace) -> TaskFailed | None:
    from builder.build.executor import run_command

    def work() -> None:
        run_command(plan, workspace)

    return _guarded(plan, work)


def _outputs_intact(out_dir: Path, values: Mapping[str, Any], hashes: HashIndex) -> bool:
    return all(hashes.still(out_dir / name, sha) for name, sha in (values.get("outputs") or {}).items())


class MemoUpToDate:
    """The up-to-date check from a plan memo: the same digest as UpToDate, without parsing anything."""

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


def _rendered(load: ProjectLoader) -> Project:
    """The full project, for a memo task that must run after all. Every plan is rendered, not only this
    task's: the host checks (keys, module lists, files) of the tasks after this one hold before this one
    builds, as on a run without a memo."""
    project = load()
    for plan in project.plans():
        plan.context  # noqa: B018 - rendering is what checks them
    return project


def _memo_build_action(load: ProjectLoader, name: str, arch: str) -> dict[str, object] | TaskFailed:
    """A memo task that must build after all: now the full plan is made (once per session)."""
    from builder.core.platforms import parse_platforms

    try:
        project = _rendered(load)
        return _build_action(project.plan(name, parse_platforms(arch)[0]), project)
    except BuildError as exc:
        return TaskFailed(str(exc))


def _memo_command_action(load: ProjectLoader, recipe: str, command: str, arch: str) -> TaskFailed | None:
    from builder.core.platforms import parse_platforms

    try:
        project = _rendered(load)
        return _command_action(project.command_plan(recipe, command, parse_platforms(arch)[0]), project)
    except BuildError as exc:
        return TaskFailed(str(exc))


MEMO_TASK_KEYS = ("basename", "name", "doc", "task_dep", "targets", "meta")


def memo_entry(project: Project, tasks: list[dict[str, object]]) -> dict[str, Any]:
    """What the plan memo keeps of a full plan's ``tasks``: their plain fields and each build's check."""
    checks = {plan.label: memo.check_of(plan) for plan in project.plans()}
    described = [{k: v for k, v in task.items() if k in MEMO_TASK_KEYS} for task in tasks]
    return {"tasks": described, "checks": checks}


def from_memo(load: ProjectLoader, locations: Locations, identities: Identities, hashes: HashIndex,
              entry: Mapping[str, Any]) -> Iterator[dict[str, object]]:
    """The tasks of a memo ``entry``: the full project is loaded (``load``) only by a task that must run."""
    for described in entry["tasks"]:
        task: dict[str, object] = dict(described)
        command = (task.get("meta") or {}).get("command")  # type: ignore[attr-defined]
        if command is not None and task["name"] is not None:
            recipe, name = command  # type: ignore[misc]
            task.update(actions=[(_memo_command_action, [load, recipe, name, task["name"]])],
                        uptodate=[False], verbosity=2)
        elif (task.get("meta") or {}).get("nothing"):  # type: ignore[attr-defined]
            task.update(actions=[(_fail, [task["meta"]["nothing"]])], verbosity=2)  # type: ignore[index]
        elif task["name"] is not None:
            label = f"{task['basename']}:{task['name']}"
            names = [Path(t).name for t in task.get("targets") or []]  # type: ignore[attr-defined]
            arch = (task.get("meta") or {}).get("platform", task["name"])  # type: ignore[attr-defined]
            task.update(actions=[(_memo_build_action, [load, task["basename"], arch])],
                        uptodate=[MemoUpToDate(locations, entry["checks"][label], identities, hashes)],
                        clean=[(clean_action, [locations, f"{task['basename']}-{task['name']}", names])], verbosity=2)
        yield task
