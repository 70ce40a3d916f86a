"""Which kernel modules an exported modules tar holds, for out/manifest.json: per module its name, path,
the recipe it comes from, that recipe's version and source digest, and whether (and by whom) it is signed.

Out-of-tree modules (the ``module:`` recipe kind) are installed under extra/RECIPE/, so a path says which
recipe built it; every other module is the kernel's own (in-tree, patches included).
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from builder.plan import Plan
    from builder.recipe import Recipe

MODULE_PATH = re.compile(r"^(?:\./)?lib/modules/(?P<release>[^/]+)/(?P<path>.+\.ko(?:\.xz|\.zst|\.gz)?)$")
SIGNATURE_MAGIC = b"~Module signature appended~\n"


def inventory(plan: Plan, tar_path: Path) -> list[dict[str, Any]] | None:
    """The modules in ``tar_path`` with where each comes from; None when it holds no module tree."""
    recipes = {r.name: r for r in plan.graph.order(plan.recipe.name)}
    kernels = {r.module.kernel for r in recipes.values() if r.module is not None} or {"kernel"}
    try:
        with tarfile.open(tar_path) as archive:
            found = [_module(archive, member, match, recipes, kernels) for member in archive
                     if member.isfile() and (match := MODULE_PATH.match(member.name))]
    except (tarfile.TarError, OSError):
        return None
    return sorted(found, key=lambda m: m["path"]) or None


def _module(archive: tarfile.TarFile, member: tarfile.TarInfo, match: re.Match[str], recipes: dict[str, Recipe],
            kernels: set[str]) -> dict[str, Any]:
    path = match["path"]
    name = re.sub(r"\.ko(\.\w+)?$", "", path.rsplit("/", 1)[-1])
    owner = path.split("/")[1] if path.startswith("extra/") and path.count("/") >= 2 else ""
    recipe = recipes.get(owner)
    if recipe is None or recipe.module is None:
        recipe = next((recipes[k] for k in sorted(kernels) if k in recipes), None)
        version = match["release"]
    else:
        version = recipe.module.version or match["release"]
    handle = archive.extractfile(member)
    tail = handle.read()[-len(SIGNATURE_MAGIC):] if handle else b""
    return {
        "name": name,
        "path": path,
        "recipe": recipe.name if recipe else None,
        "version": version,
        "source": [f"sha256:{s.sha256}" for s in recipe.sources] if recipe else [],
        "signed": tail == SIGNATURE_MAGIC,
    }
