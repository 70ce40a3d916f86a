"""Layered template variables: defaults -> per-directory vars.yaml -> command line -> platform."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

from builder.core.errors import RecipeError
from builder.core.platforms import Platform
from builder.model import yamlfile
from builder.model.aptsources import AptSources

VARS_FILE = "vars.yaml"
MAX_EPOCH = 253402300799  # 9999-12-31T23:59:59Z
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

DEFAULTS: dict[str, str] = {
    # The toolchain image every build stage starts FROM; a site with a registry can use its own.
    "TOOLCHAIN": "builder-toolchain:bookworm",
    # The image boot media (profiles/) are assembled in: the same bootstrap, other packages (toolchain.py).
    "IMAGER": "builder-imager:bookworm",
    "DEBIAN_SUITE": "bookworm",
    "KBUILD_BUILD_USER": "builder",
    "KBUILD_BUILD_HOST": "builder",
    # The flavor (FLAVOR=debug, WITH_DEBUG=1) and what a flavored recipe appends to its output names.
    "FLAVOR": "",
    "FLAVOR_SUFFIX": "",
    # Who signs the kernel's modules: ephemeral (a throw-away key per kernel build) or release (a given
    # certificate; the private key only ever as a BuildKit secret).
    "MODULE_SIGNING": "ephemeral",
    "MODULE_SIGNING_CERT": "",  # release: the public certificate (PEM), a project path
    "MODULE_SIGNING_KEY": "",  # release: the private key, any host path; absent: the modules stay unsigned
    # Words appended to the kernel command line of every boot medium (profiles/), after the profile's own.
    "EXTRA_KERNEL_ARGS": "",
}
MODULE_SIGNING_POLICIES = ("ephemeral", "release")

# Variables that say where things are fetched from, not what is built: they never cause a rebuild.
LOCATION_VARIABLES = frozenset({"DEBIAN_MIRROR", "SOURCE_MIRROR"})

def load_vars_file(path: Path, display: str | None = None, *, root: Path | None = None) -> dict[str, str]:
    """A vars.yaml: a flat mapping of variable names to scalar values (``display``: its name in errors;
    ``root``: the project it must stay inside)."""
    name = display or str(path)
    data, lines = yamlfile.load(yamlfile.read_text(path, name, root), name)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError("expected a mapping of variable names to values", where=f"{name}:1")
    result = {}
    for key, value in data.items():
        where = f"{name}:{lines.get((key,), 1)}"
        if not isinstance(key, str) or not NAME.match(key):
            raise RecipeError(f"invalid variable name {key!r}; expected letters, digits and _", where=where)
        if isinstance(value, (dict, list)) or value is None:
            raise RecipeError(f"variable {key} must be a string or number", where=where)
        result[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return result


def directory_layers(recipes_root: Path, recipe_dir: Path) -> dict[str, str]:
    """vars.yaml files from ``recipes_root`` down to ``recipe_dir``, nearer ones winning."""
    merged: dict[str, str] = {}
    rel = recipe_dir.resolve().relative_to(recipes_root.resolve())
    current = recipes_root
    for part in ("", *rel.parts):
        current = current / part if part else current
        candidate = current / VARS_FILE
        if candidate.exists() or candidate.is_symlink():  # a fifo or a dangling link is an error, not absent
            merged.update(load_vars_file(candidate, candidate.relative_to(recipes_root.parent).as_posix(),
                                        root=recipes_root.parent))
    return merged


def command_line_layer(cli: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Command-line variables; SOURCE_DATE_EPOCH from the environment counts as one (reprotest, CI)."""
    from builder.model.settings import check_utf8

    layer = {}
    if "SOURCE_DATE_EPOCH" in environ:
        check_utf8("SOURCE_DATE_EPOCH", environ["SOURCE_DATE_EPOCH"])
        layer["SOURCE_DATE_EPOCH"] = environ["SOURCE_DATE_EPOCH"]
    layer.update(cli)
    return layer


def resolve(
    *,
    recipes_root: Path,
    recipe_dir: Path,
    cli: Mapping[str, str],
    platform: Platform,
    host: Platform,
    apt: AptSources,
) -> dict[str, str]:
    """All layers merged for one recipe directory and platform, then checked. ``apt``: this machine's apt
    sources, which give DEBIAN_MIRROR its default."""
    merged = dict(DEFAULTS)
    mirror = apt.mirror(merged["DEBIAN_SUITE"])
    if mirror:
        merged["DEBIAN_MIRROR"] = mirror
    merged.update(directory_layers(recipes_root, recipe_dir))
    layer = command_line_layer(cli)
    for name, value in layer.items():
        if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):  # a pasted line break, a NUL
            raise RecipeError(f"{name}: a value with a line break or control character ({value!r})",
                              where="command line")
    merged.update(layer)
    merged["FLAVOR_SUFFIX"] = f"-{merged['FLAVOR']}" if merged["FLAVOR"] else ""
    _check_signing(merged, layer)
    merged.update(platform.variables(host))
    _check_epoch(merged)
    _check_toolchain(merged, layer)
    return merged


IMAGE_FORMS = "expected [registry/]name[:tag][@sha256:digest], e.g. builder-toolchain:bookworm"


def check_image_reference(value: str) -> str:
    """``value`` when it is an image reference docker can read (builder.model.reference); a ValueError saying the
    forms otherwise."""
    from builder.model.reference import Reference

    try:
        Reference.of(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an image reference; {IMAGE_FORMS}") from None
    return value


def _check_toolchain(variables: dict[str, str], command_line: Mapping[str, str]) -> None:
    for name in ("TOOLCHAIN", "IMAGER"):
        try:
            check_image_reference(variables.get(name, ""))
        except ValueError as exc:
            raise RecipeError(f"{name}: {exc}", where="command line" if name in command_line else None) from None


def _check_epoch(variables: dict[str, str]) -> None:
    value = variables.get("SOURCE_DATE_EPOCH")
    if value is None:
        raise RecipeError("SOURCE_DATE_EPOCH is not set", where=f"recipes/{VARS_FILE}",
                          hint="set it there, on the command line or in the environment")
    if not (value.isascii() and value.isdigit()):
        raise RecipeError(f"SOURCE_DATE_EPOCH must be whole seconds since 1970, not {value!r}")
    if int(value) > MAX_EPOCH:
        raise RecipeError(f"SOURCE_DATE_EPOCH {value} is after 9999-12-31 (the last date time formats and "
                          f"archives can hold: at most {MAX_EPOCH})")


def _check_signing(merged: Mapping[str, str], command_line: Mapping[str, str]) -> None:
    """The module-signing words make sense together. A certificate or key from a vars.yaml is not an error
    when the command line asks for another policy (MODULE_SIGNING=ephemeral on a release checkout): the
    command line wins, and the recipes take them only with release."""
    words = ("MODULE_SIGNING", "MODULE_SIGNING_CERT", "MODULE_SIGNING_KEY")
    where = "command line" if any(name in command_line for name in words) else "recipes"
    policy = merged["MODULE_SIGNING"]
    if policy not in MODULE_SIGNING_POLICIES:
        raise RecipeError(f"MODULE_SIGNING={policy}: expected one of {', '.join(MODULE_SIGNING_POLICIES)}",
                          where=where)
    if policy == "release" and not merged["MODULE_SIGNING_CERT"]:
        raise RecipeError("MODULE_SIGNING=release needs MODULE_SIGNING_CERT=PATH: the public certificate (PEM) "
                          "the kernel trusts, a file in the project", where=where)
    if policy != "release":
        given = [name for name in ("MODULE_SIGNING_CERT", "MODULE_SIGNING_KEY") if command_line.get(name)]
        if given:
            raise RecipeError(f"{given[0]} is for MODULE_SIGNING=release; MODULE_SIGNING={policy} makes its own "
                              "throw-away key", where=where)


def build_environment(variables: Mapping[str, str]) -> dict[str, str]:
    """The reproducibility environment every build step gets, whatever the recipe says."""
    epoch = int(variables["SOURCE_DATE_EPOCH"])
    return {
        "SOURCE_DATE_EPOCH": str(epoch),
        "KBUILD_BUILD_TIMESTAMP": time.strftime("%a %b %e %H:%M:%S UTC %Y", time.gmtime(epoch)),
        "KBUILD_BUILD_USER": variables["KBUILD_BUILD_USER"],
        "KBUILD_BUILD_HOST": variables["KBUILD_BUILD_HOST"],
        "KBUILD_BUILD_VERSION": "1",
        "KCONFIG_NOTIMESTAMP": "1",
        "LC_ALL": "C",
        "LANG": "C",
        "TZ": "UTC",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    }
