"""The command line, parsed once: a frozen Settings object used by doit and the CLI alike.

`NAME=value` words are either a setting (PLATFORM, BACKEND, NO_CACHE, ...), which says *how* to build,
or a template variable, which says *what* is built (recipes see it as ``{{ NAME }}``). Settings are typed
fields; template variables stay a separate mapping.

Source downloads have two deadlines, both in seconds (a positive number, at most a week):
FETCH_STALL_TIMEOUT (default 60) fails a download when no byte arrives for that long, while connecting,
waiting for the response or reading the body; FETCH_TIMEOUT (default 3600) bounds one download as a whole,
so a server that trickles a byte now and then fails too.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from builder.core.errors import BuildError
from builder.core.platforms import Platform, host_platform, parse_platforms
from builder.model.aptsources import AptSources

BACKENDS = ("auto", "buildx", "engine")
TRUE = frozenset({"1", "yes", "true", "on"})
FALSE = frozenset({"0", "no", "false", "off", ""})
MAX_SECONDS = 7 * 24 * 3600  # a week: longer is a typo, and a socket timeout must fit a C timeval

# Setting name -> what it means, for `builder --help` texts and error messages.
SETTINGS: dict[str, str] = {
    "PLATFORM": "target platforms, e.g. linux/amd64,linux/arm64 (default: the host's)",
    "BACKEND": "how to reach BuildKit: auto (buildx when present), buildx, or engine (DOCKER_BUILDKIT=1 docker build)",
    "BUILDER": "a named buildx builder (docker buildx --builder NAME)",
    "NO_CACHE": "1: build without the BuildKit cache",
    "DRY_RUN": "1: print the exact build commands instead of running them",
    "SOURCE_MIRROR": "a local directory searched for sources before their URLs (air-gapped sites)",
    "CACHE_FROM": "BuildKit cache import, e.g. type=registry,ref=host/cache (buildx only)",
    "CACHE_TO": "BuildKit cache export, e.g. type=registry,ref=host/cache,mode=max (buildx only)",
    "FETCH_STALL_TIMEOUT": "seconds a source download may receive nothing, connecting included (default 60)",
    "FETCH_TIMEOUT": "seconds one source download may take as a whole (default 3600)",
    "WITH_DEBUG": "1: build the debug flavor (the same as FLAVOR=debug)",
    "PUSH": "1: also push each built task's image (its output tree) to REGISTRY/USERNAME/NAME:TAG",
    "REGISTRY": "the registry PUSH=1 pushes to, e.g. 127.0.0.1:5005",
    "IMAGE_REGISTRY": "the same as REGISTRY (Talos's name for it)",
    "IMAGE_SIGNING_KEY": "a PEM EC P-256 private key on the host: PUSH=1 signs each image manifest and index it "
                         "pushes (cosign's key-based scheme)",
    "USERNAME": "the registry namespace PUSH=1 pushes into (default builder)",
    "TAG": "the tag PUSH=1 pushes (default: git describe --tags --always --dirty, else latest)",
    "PKGS_PREFIX": "with PKGS: take every recipe another one depends on as PKGS_PREFIX/NAME:PKGS, prebuilt",
    "PKGS": "the tag of the prebuilt packages (with PKGS_PREFIX)",
    "REGISTRY_TIMEOUT": "seconds a registry may take to answer one request (default 30)",
    "PROFILE": "the profiles (profiles/NAME.yaml) doit iso / disk / images build, comma-separated (default: all)",
    "META": "a META value for boot media, 0x0a=VALUE (repeatable), or a YAML file of them (key: value)",
    "OUT_DIR": "where artifacts are published, absolute or relative to the project (default out)",
    "STATE_DIR": "where build state is kept: logs, locks, the plan memo (default .builder)",
}
REPEATABLE = frozenset({"META"})  # given more than once, every value counts (joined by NUL inside words)
PACKAGE_WORD = re.compile(r"^PKG_[A-Z0-9_]+$")  # PKG_KERNEL=ref: take recipe kernel prebuilt from ref
FLAVOR_NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,31}$")


@dataclass(frozen=True)
class FetchLimits:
    """The deadlines of one source download, in seconds: ``stall`` without a byte, ``total`` overall."""

    stall: float = 60.0
    total: float = 3600.0


def flag(value: str, name: str) -> bool:
    """The one truthy-flag parser: 1/yes/true/on and 0/no/false/off/empty; anything else is an error."""
    word = value.strip().lower()
    if word in TRUE:
        return True
    if word in FALSE:
        return False
    raise BuildError(f"{value!r} is not a flag; expected 1 or 0 (yes/no, true/false)", where=name)


def seconds(value: str, name: str) -> float:
    """A positive number of seconds, at most MAX_SECONDS; anything else (abc, 0, -1, 1e30, nan) is an error."""
    try:
        number = float(value.strip())
    except ValueError:
        number = math.nan
    if not 0 < number <= MAX_SECONDS:  # false for nan too
        raise BuildError(f"{value!r} is not a number of seconds; expected a number greater than 0 and at most "
                         f"{MAX_SECONDS} (a week)", where=name)
    return number


def seconds_word(number: float) -> str:
    """A number of seconds as a word that parses back to exactly that number: 60, 0.5."""
    return str(int(number)) if number.is_integer() else repr(number)


@dataclass(frozen=True)
class Settings:
    """How to build. ``variables`` are the template variables given on the command line."""

    platforms: tuple[Platform, ...]
    backend: str = "auto"
    builder: str | None = None
    no_cache: bool = False
    dry_run: bool = False
    source_mirror: Path | None = None
    cache_from: str | None = None
    cache_to: str | None = None
    fetch_limits: FetchLimits = FetchLimits()
    push: bool = False
    registry: str | None = None
    username: str = "builder"
    tag: str | None = None
    image_signing_key: str | None = None  # IMAGE_SIGNING_KEY: a host path, read only by the push
    packages: Mapping[str, str] = field(default_factory=dict)  # PKG_NAME word (NAME part) -> image reference
    packages_prefix: str | None = None
    packages_tag: str | None = None
    registry_timeout: float = 30.0
    profiles: tuple[str, ...] = ()  # PROFILE=a,b; () means every profile
    meta: Mapping[int, str] = field(default_factory=dict)  # META=0x0a=VALUE, META=file.yaml
    out_dir: str | None = None  # OUT_DIR: as given; locations.Locations says where it is
    state_dir: str | None = None  # STATE_DIR: as given
    variables: Mapping[str, str] = field(default_factory=dict)
    apt: AptSources = AptSources()  # this machine's apt sources: DEBIAN_MIRROR's default, part of the memo key

    @classmethod
    def parse(cls, words: Mapping[str, str], *, host: Platform | None = None,
              apt: AptSources | None = None) -> Settings:
        """Split ``NAME=value`` words into settings and template variables, checking each setting. The
        machine's apt sources are read here, once per invocation, unless ``apt`` gives them."""
        for name, value in words.items():
            check_utf8(name, value)
        variables = dict(words)
        taken = {name: variables.pop(name) for name in list(variables) if name in SETTINGS}
        packages = {name[4:]: variables.pop(name) for name in list(variables) if PACKAGE_WORD.match(name)}
        _packages(packages, taken)
        spec = taken.get("PLATFORM")
        if spec is not None and not spec.strip():
            raise BuildError("empty; expected e.g. linux/amd64 or linux/amd64,linux/arm64",
                             where="PLATFORM")
        platforms = tuple(parse_platforms(spec)) if spec is not None else (host or host_platform(),)
        backend = taken.get("BACKEND", "auto").strip() or "auto"
        if backend not in BACKENDS:
            raise BuildError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}", where="BACKEND")
        mirror = taken.get("SOURCE_MIRROR") or None
        _flavor(variables, with_debug=flag(taken.get("WITH_DEBUG", "0"), "WITH_DEBUG"))
        return cls(
            platforms=platforms,
            backend=backend,
            builder=taken.get("BUILDER") or None,
            no_cache=flag(taken.get("NO_CACHE", "0"), "NO_CACHE"),
            dry_run=flag(taken.get("DRY_RUN", "0"), "DRY_RUN"),
            source_mirror=Path(mirror) if mirror else None,
            cache_from=taken.get("CACHE_FROM") or None,
            cache_to=taken.get("CACHE_TO") or None,
            fetch_limits=FetchLimits(
                stall=seconds(taken.get("FETCH_STALL_TIMEOUT", str(FetchLimits.stall)), "FETCH_STALL_TIMEOUT"),
                total=seconds(taken.get("FETCH_TIMEOUT", str(FetchLimits.total)), "FETCH_TIMEOUT")),
            push=flag(taken.get("PUSH", "0"), "PUSH"),
            registry=_registry(taken),
            username=taken.get("USERNAME") or "builder",
            tag=taken.get("TAG") or None,
            image_signing_key=taken.get("IMAGE_SIGNING_KEY") or None,
            packages=packages,
            packages_prefix=taken.get("PKGS_PREFIX") or None,
            packages_tag=taken.get("PKGS") or None,
            registry_timeout=seconds(taken.get("REGISTRY_TIMEOUT", "30"), "REGISTRY_TIMEOUT"),
            profiles=_profiles(taken.get("PROFILE", "")),
            meta=_meta(taken.get("META", "")),
            out_dir=_location(taken, "OUT_DIR"),
            state_dir=_location(taken, "STATE_DIR"),
            variables=variables,
            apt=AptSources.read() if apt is None else apt,
        )

    @property
    def flavor(self) -> str:
        """The flavor asked for (FLAVOR=name, WITH_DEBUG=1), or "" for the default build."""
        return self.variables.get("FLAVOR", "")

    def words(self) -> dict[str, str]:
        """The settings back as NAME=value words (for messages and a doit command line)."""
        out = {"PLATFORM": ",".join(p.docker for p in self.platforms), "BACKEND": self.backend}
        if self.builder:
            out["BUILDER"] = self.builder
        if self.no_cache:
            out["NO_CACHE"] = "1"
        if self.dry_run:
            out["DRY_RUN"] = "1"
        if self.source_mirror:
            out["SOURCE_MIRROR"] = str(self.source_mirror)
        if self.cache_from:
            out["CACHE_FROM"] = self.cache_from
        if self.cache_to:
            out["CACHE_TO"] = self.cache_to
        if self.fetch_limits.stall != FetchLimits.stall:
            out["FETCH_STALL_TIMEOUT"] = seconds_word(self.fetch_limits.stall)
        if self.fetch_limits.total != FetchLimits.total:
            out["FETCH_TIMEOUT"] = seconds_word(self.fetch_limits.total)
        if self.push:
            out["PUSH"] = "1"
        for name, value in (("REGISTRY", self.registry), ("TAG", self.tag), ("PKGS_PREFIX", self.packages_prefix),
                            ("PKGS", self.packages_tag), ("IMAGE_SIGNING_KEY", self.image_signing_key)):
            if value:
                out[name] = value
        if self.username != "builder":
            out["USERNAME"] = self.username
        if self.registry_timeout != 30.0:
            out["REGISTRY_TIMEOUT"] = seconds_word(self.registry_timeout)
        for name, value in (("OUT_DIR", self.out_dir), ("STATE_DIR", self.state_dir)):
            if value is not None:
                out[name] = value
        out.update({f"PKG_{name}": ref for name, ref in sorted(self.packages.items())})
        return out


PUSH_WORDS = frozenset({"PKGS_PREFIX", "PKGS", "PUSH", "REGISTRY", "IMAGE_REGISTRY", "IMAGE_SIGNING_KEY", "TAG",
                        "USERNAME"})


def _packages(packages: Mapping[str, str], taken: Mapping[str, str]) -> None:
    """PKG_NAME=ref, PKGS_PREFIX + PKGS and PUSH=1 + REGISTRY: each checked as a whole before any build."""
    if not (packages or taken.keys() & PUSH_WORDS):
        return  # the everyday command line: nothing to parse, and the parser is not imported
    from builder.model.reference import Reference

    for name, ref in packages.items():
        Reference.parse(ref, f"PKG_{name}")
    if bool(taken.get("PKGS_PREFIX")) != bool(taken.get("PKGS")):
        given, missing = ("PKGS_PREFIX", "PKGS") if taken.get("PKGS_PREFIX") else ("PKGS", "PKGS_PREFIX")
        raise BuildError(f"{given} needs {missing} too (prebuilt packages are PKGS_PREFIX/NAME:PKGS)", where=given)
    if taken.get("PKGS_PREFIX"):
        Reference.parse(f"{taken['PKGS_PREFIX']}/name:{taken['PKGS']}", "PKGS_PREFIX")
    registry = taken.get("REGISTRY") or taken.get("IMAGE_REGISTRY")
    pushing = flag(taken.get("PUSH", "0"), "PUSH")
    if pushing and not registry:
        raise BuildError("PUSH=1 needs REGISTRY=HOST[:PORT] to push to", where="PUSH")
    if taken.get("IMAGE_SIGNING_KEY") and not pushing:
        raise BuildError("IMAGE_SIGNING_KEY signs what PUSH=1 pushes; without PUSH=1 it would sign nothing",
                         where="IMAGE_SIGNING_KEY")
    if registry or taken.get("TAG") or taken.get("USERNAME"):  # the images' names: checked before any build
        where = "REGISTRY" if registry else ("TAG" if taken.get("TAG") else "USERNAME")
        user, tag = taken.get("USERNAME") or "builder", taken.get("TAG") or "x"
        Reference.parse(f"{registry or 'localhost'}/{user}/name:{tag}", where)


def _flavor(variables: dict[str, str], *, with_debug: bool) -> None:
    """FLAVOR=name (or WITH_DEBUG=1, which means FLAVOR=debug), checked as a name; FLAVOR_SUFFIX follows from
    it and is never given. Whether a recipe has the flavor is the project's question (recipes' flavors:)."""
    if "FLAVOR_SUFFIX" in variables:
        raise BuildError("FLAVOR_SUFFIX follows from FLAVOR (-NAME, or empty); set FLAVOR=NAME instead",
                         where="FLAVOR_SUFFIX")
    flavor = variables.get("FLAVOR", "")
    if with_debug:
        if flavor not in ("", "debug"):
            raise BuildError(f"WITH_DEBUG=1 means FLAVOR=debug, and FLAVOR={flavor} asks for another flavor",
                             where="WITH_DEBUG")
        flavor = variables["FLAVOR"] = "debug"
    if flavor and not FLAVOR_NAME.match(flavor):
        raise BuildError(f"{flavor!r} is not a flavor name; expected lowercase letters, digits and '_' (at most 32)",
                         where="FLAVOR")
    if "FLAVOR" in variables and not flavor:
        del variables["FLAVOR"]


def check_utf8(name: str, value: str) -> None:
    """A command-line or environment word must be UTF-8: Python hands other bytes over as lone surrogates,
    which no file, log or message can hold. One line naming the variable and the first such byte."""
    for what, text in (("name", name), ("value", value)):
        bad = next((i for i, c in enumerate(text) if "\udc80" <= c <= "\udcff"), None)
        if bad is not None:
            shown = name if what == "value" else os.fsencode(name).decode("ascii", "backslashreplace")
            raise BuildError(f"the {what} is not UTF-8 (byte 0x{ord(text[bad]) - 0xdc00:02x} at position {bad + 1})",
                             where=shown, hint="NAME=value words, on the command line or in the environment, are "
                             "UTF-8 text")


def pairs(words: Sequence[str]) -> dict[str, str]:
    """``NAME=value`` words as a mapping; a word without '=' or without a name is an error. A REPEATABLE
    name given again keeps every value (joined by NUL, which no command-line word can hold)."""
    result: dict[str, str] = {}
    for word in words:
        name, sep, value = word.partition("=")
        if not sep or not name:
            raise BuildError(f"expected NAME=value, not {word!r}")
        check_utf8(name, value)
        result[name] = f"{result[name]}\0{value}" if name in REPEATABLE and name in result else value
    return result


def _registry(taken: Mapping[str, str]) -> str | None:
    """REGISTRY, or IMAGE_REGISTRY (Talos's name): both may be given only with one value."""
    plain, talos = taken.get("REGISTRY") or None, taken.get("IMAGE_REGISTRY") or None
    if plain and talos and plain != talos:
        raise BuildError(f"REGISTRY={plain} and IMAGE_REGISTRY={talos} name two registries; give one",
                         where="IMAGE_REGISTRY")
    return plain or talos


def _location(taken: Mapping[str, str], name: str) -> str | None:
    """OUT_DIR= / STATE_DIR=: a path (absolute, or relative to the project root); where it may be is
    locations.Locations' question, once the root is known."""
    value = taken.get(name)
    if value is None:
        return None
    if not value.strip():
        raise BuildError("empty; expected a directory path (absolute, or relative to the project)", where=name)
    return value


def _profiles(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    for name in names:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", name):
            raise BuildError(f"{name!r} is not a profile name (profiles/NAME.yaml)", where="PROFILE")
    return names


def _meta(value: str) -> dict[int, str]:
    """META=0x0a=VALUE words (and META=FILE.yaml: a mapping of key -> value); a later word wins a key."""
    if not value:
        return {}
    from builder.model import meta

    result: dict[int, str] = {}
    for item in value.split("\0") if value else []:
        key, sep, data = item.partition("=")
        found: dict[object, object]
        if sep and re.fullmatch(r"0x[0-9a-fA-F]+|[0-9]+", key.strip()):
            found = {key.strip(): data}
            where = "META"
        elif item.endswith((".yaml", ".yml")):
            found, where = _meta_file(Path(item)), item
        else:
            raise BuildError(f"{item!r}: expected 0xKEY=VALUE (e.g. 0x0a=...) or a YAML file", where="META")
        for k, v in found.items():
            try:
                number = meta.parse_key(k)
            except meta.MetaError as exc:
                raise BuildError(exc.message, where=where) from None
            if not isinstance(v, str):
                raise BuildError(f"{meta.key_name(number)}: expected a string value, not {v!r}", where=where)
            if any(ord(c) == 0 for c in v):
                raise BuildError(f"{meta.key_name(number)}: a value with a NUL", where=where)
            result[number] = v
    try:
        meta.encode({k: v.encode() for k, v in result.items()})
    except meta.MetaError as exc:
        raise BuildError(exc.message, where="META") from None
    return result


def _meta_file(path: Path) -> dict[object, object]:
    from builder.model import yamlfile

    data, _ = yamlfile.load(yamlfile.read_text(path, str(path)), str(path))
    if not isinstance(data, dict):
        raise BuildError("a META file is a YAML mapping of keys (0x0a) to string values", where=str(path))
    return data


def doit_words(argv: Sequence[str]) -> dict[str, str]:
    """The NAME=value words of a doit command line, by doit's own rule: a word that does not start
    with '-' and contains '=' is a variable, not a task name or command."""
    return pairs([word for word in argv if word and word[0] != "-" and "=" in word])

