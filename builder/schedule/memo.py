"""The plan memo: what a no-op run needs from the pure plan, kept from the last full one.

Parsing recipes (pydantic), rendering them (jinja2) and hashing every context file is a pure function of
the recipe tree, this package's own code, the command line and the machine's apt sources; its result is
kept in the state directory's plan-memo.json (Locations.memo) under the digest of exactly those. On a
hit, doit gets its tasks without importing the parser or the renderer, and each up-to-date check
re-hashes only what can change without changing that digest: the project files the recipes give their
builds (and what their patterns match), published artifacts in out/, and image identities. Anything
else, or a changed pattern match, falls back to the full plan.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from builder.host import hashindex, outputs
from builder.model import files
from builder.model.aptsources import AptSources
from builder.resolve.identity import Identities

KEEP = 8  # memo entries kept (a user switching between PLATFORM=... lines keeps each fast)
CODE_SUFFIXES = (".py", ".j2", ".sh")
PROJECT_TREES = ("recipes", "profiles", "overlays")  # read whole by every full plan: part of the key


def _feed(h: Any, label: str, data: bytes) -> None:
    h.update(f"{label}\0{len(data)}\0".encode())
    h.update(data)


def key(root: Path, words: Mapping[str, str], apt: AptSources,
        environ: Mapping[str, str] = os.environ) -> str:
    """The digest of everything a full plan reads besides project files, artifacts and images (``apt``: the
    apt sources the settings read)."""
    h = hashlib.sha256()
    _feed(h, "words", json.dumps(sorted(words.items())).encode())
    _feed(h, "epoch", os.fsencode(environ.get("SOURCE_DATE_EPOCH", "-")))  # not UTF-8: the full plan says so
    _feed(h, "host", os.uname().machine.encode())
    package = Path(__file__).resolve().parents[1]  # builder/, all of it
    trees = [("code", package, [p for p in package.rglob("*") if p.suffix in CODE_SUFFIXES]),
             *((name, root / name, list((root / name).rglob("*"))) for name in PROJECT_TREES)]
    for label, base, found in trees:
        for path in sorted(found):
            name = f"{label}:{path.relative_to(base).as_posix()}"
            if path.is_symlink():  # what it says, always; what it leads to only when that is a project file
                _feed(h, f"{name} ->", os.readlink(path).encode())
                if files.link_out(root, path) is not None:
                    continue
            if path.is_file():
                _feed(h, name, path.read_bytes())
    for name, text in apt.files:
        _feed(h, f"apt:{name}", text.encode())
    return h.hexdigest()


def load(path: Path, digest: str) -> dict[str, Any] | None:
    """The entry for ``digest`` in the memo file ``path``, or None."""
    try:
        memo = json.loads(path.read_text())
        entry = memo.get(digest)
    except (OSError, ValueError, AttributeError):
        return None
    return entry if _well_formed(entry) else None


def _well_formed(entry: object) -> bool:
    """An entry this version wrote: a list of task descriptions and a check for each subtask."""
    if not isinstance(entry, dict) or not isinstance(entry.get("tasks"), list) or not isinstance(
            entry.get("checks"), dict):
        return False
    check_keys = {"static", "project_files", "patterns", "artifacts", "images", "secrets"}
    for task in entry["tasks"]:
        if not isinstance(task, dict) or not isinstance(task.get("basename"), str):
            return False
        command = (task.get("meta") or {}).get("command") if isinstance(task.get("meta") or {}, dict) else 0
        if command is not None:
            if not (isinstance(command, list) and len(command) == 2 and all(isinstance(c, str) for c in command)):
                return False
        elif task.get("name") is not None and not (task.get("meta") or {}).get("nothing"):
            check = entry["checks"].get(f"{task['basename']}:{task['name']}")
            if not isinstance(check, dict) or set(check) != check_keys or not all(
                    isinstance(v, dict) for v in check.values()):
                return False
    return True


def save(path: Path, digest: str, entry: dict[str, Any]) -> None:
    """Keep ``entry`` under ``digest`` in the memo file ``path`` (with the most recent others)."""
    try:
        memo = json.loads(path.read_text())
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):
        memo = {}
    memo.pop(digest, None)
    memo[digest] = entry
    memo = dict(list(memo.items())[-KEEP:])
    with contextlib.suppress(OSError):  # the memo only saves time: a run without it is slower, never wrong
        outputs.atomic_write(path, json.dumps(memo, sort_keys=False).encode())


def check_of(plan: Any) -> dict[str, Any]:
    """What the up-to-date check of ``plan`` needs, as plain data (the plan's context is rendered)."""
    from builder.resolve.render import secret_input

    context = plan.context
    everything = context.inputs({})
    moving = set(context.project_files) | {p for p, f in context.files.items() if f.artifact} | \
        {secret_input(sid) for sid in context.secrets}
    return {
        "static": {name: digest for name, digest in everything.items() if name not in moving},
        "project_files": dict(context.project_files),
        "patterns": dict(context.patterns),
        "artifacts": {p: f.artifact for p, f in context.files.items() if f.artifact},
        "images": plan.image_inputs(),
        "secrets": {secret_input(sid): str(path) for sid, path in context.secrets.items()},
    }


def inputs_now(root: Path, check: Mapping[str, Any], identities: Identities) -> dict[str, str] | None:
    """The plan's inputs as they are now, from its memo ``check``; None when a pattern matches other files
    than it did (the context itself changes: only the full plan can say how)."""
    for pattern, matched in check["patterns"].items():
        if files.match(root, pattern) != matched:
            return None
    named = dict(check["static"])
    for path, rel in check["project_files"].items():
        try:
            named[path] = hashindex.sha256_file(root / rel)
        except OSError:
            return None
    for name, path in check["secrets"].items():
        try:
            named[name] = hashindex.sha256_file(Path(path))
        except OSError:
            return None  # the full plan says what is wrong with it
    sums = identities.artifacts()
    for path, name in check["artifacts"].items():
        named[path] = sums.get(name, "absent")
    for name, (ref, where, platform) in check["images"].items():
        named[name] = identities.image(ref, where=where, platform=platform)
    return dict(sorted(named.items()))
