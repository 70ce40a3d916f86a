"""Project files a recipe gives its build: how a ``files:`` pattern matches, the same for the renderer and
for the plan memo's cheap re-check."""

from __future__ import annotations

from pathlib import Path

GLOB_CHARACTERS = "*?["


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in GLOB_CHARACTERS)


def match(project_root: Path, pattern: str) -> list[str]:
    """The project-relative paths of the regular files ``pattern`` matches, sorted."""
    return sorted(p.relative_to(project_root).as_posix() for p in project_root.glob(pattern) if p.is_file())
