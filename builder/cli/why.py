""""Why did this rebuild?" - the stored inputs of a task's last build against the current ones."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.core.errors import BuildError
from builder.host.engine import EngineError
from builder.resolve.plan import Plan, Workspace


@dataclass(frozen=True)
class Explanation:
    label: str
    up_to_date: bool
    reasons: list[str]


def stored_values(dep_file: Path, task: str) -> dict[str, Any]:
    """What doit stored for ``task`` after its last successful run ({} if never).

    A damaged database is a DepFileError (one line, exit status 2) saying how to reset it."""
    if not dep_file.exists():
        return {}
    from doit.dependency import Dependency, SqliteDB

    from builder.cli.doitglue import check_dep_file

    check_dep_file(dep_file)
    db = Dependency(SqliteDB, str(dep_file))
    try:
        return dict(db.get_values(task) or {})
    finally:
        db.close()


def differences(before: Mapping[str, str], now: Mapping[str, str],
                origin: Callable[[str], str] = str, *, width: int = 0) -> list[str]:
    """Input by input, what differs between two signatures (name -> digest), each a line naming the input
    (and where a user knows it from); digests cut to ``width`` characters when given."""
    def cut(digest: str) -> str:
        return digest[:width] if width else digest

    lines = []
    for name in sorted(set(before) | set(now)):
        known = origin(name)
        shown = f"{name} ({known})" if known != name else name
        if name not in before:
            lines.append(f"new input: {shown}")
        elif name not in now:
            lines.append(f"input removed: {shown}")
        elif before[name] != now[name]:
            lines.append(f"changed: {shown}  {cut(before[name])} -> {cut(now[name])}")
    return lines


def explain(plan: Plan, workspace: Workspace, stored: Mapping[str, Any],
            verdicts: Mapping[str, Explanation] | None = None) -> Explanation:
    """Input by input: what changed since the last build, and whether the outputs are intact.

    ``verdicts`` holds those already given for upstream tasks: a task whose artifacts will be rebuilt
    first is said to rebuild because of them (if their bytes change)."""
    reasons = []
    for label in plan.upstream:
        upstream = (verdicts or {}).get(label)
        if upstream is not None and not upstream.up_to_date:
            reasons.append(f"{label} would rebuild first, and its outputs are inputs here (if their bytes change)")
    if not stored.get("inputs"):
        return Explanation(plan.label, False, ["never built here", *reasons])
    before: dict[str, str] = stored["inputs"]
    try:
        now = plan.inputs(workspace.identities)
    except EngineError:
        raise  # nothing can be said about any task until the engine answers
    except BuildError as exc:
        return Explanation(plan.label, False, [f"cannot check: {exc}", *reasons])
    reasons += differences(before, now, plan.origin, width=20)
    for name, sha in (stored.get("outputs") or {}).items():
        path = plan.out_dir / name
        if not path.is_file():
            reasons.append(f"output missing: out/{name}")
        elif not workspace.hashes.still(path, sha):
            reasons.append(f"output modified since it was built: out/{name}")
    return Explanation(plan.label, not reasons, reasons)
