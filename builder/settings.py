"""The command line, parsed once: a frozen Settings object used by doit and the CLI alike.

`NAME=value` words are either a setting (PLATFORM, BACKEND, NO_CACHE, ...), which says *how* to build,
or a template variable, which says *what* is built (recipes see it as ``{{ NAME }}``). Settings are typed
fields; template variables stay a separate mapping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import BuildError
from builder.platforms import Platform, host_platform, parse_platforms

BACKENDS = ("auto", "buildx", "engine")
TRUE = frozenset({"1", "yes", "true", "on"})
FALSE = frozenset({"0", "no", "false", "off", ""})

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
}


def flag(value: str, name: str) -> bool:
    """The one truthy-flag parser: 1/yes/true/on and 0/no/false/off/empty; anything else is an error."""
    word = value.strip().lower()
    if word in TRUE:
        return True
    if word in FALSE:
        return False
    raise BuildError(f"{value!r} is not a flag; expected 1 or 0 (yes/no, true/false)", where=name)


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
    variables: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, words: Mapping[str, str], *, host: Platform | None = None) -> Settings:
        """Split ``NAME=value`` words into settings and template variables, checking each setting."""
        variables = dict(words)
        taken = {name: variables.pop(name) for name in list(variables) if name in SETTINGS}
        spec = taken.get("PLATFORM")
        if spec is not None and not spec.strip():
            raise BuildError("empty; expected e.g. linux/amd64 or linux/amd64,linux/arm64",
                             where="PLATFORM")
        platforms = tuple(parse_platforms(spec)) if spec is not None else (host or host_platform(),)
        backend = taken.get("BACKEND", "auto").strip() or "auto"
        if backend not in BACKENDS:
            raise BuildError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}", where="BACKEND")
        mirror = taken.get("SOURCE_MIRROR") or None
        return cls(
            platforms=platforms,
            backend=backend,
            builder=taken.get("BUILDER") or None,
            no_cache=flag(taken.get("NO_CACHE", "0"), "NO_CACHE"),
            dry_run=flag(taken.get("DRY_RUN", "0"), "DRY_RUN"),
            source_mirror=Path(mirror) if mirror else None,
            cache_from=taken.get("CACHE_FROM") or None,
            cache_to=taken.get("CACHE_TO") or None,
            variables=variables,
        )

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
        return out


def pairs(words: Sequence[str]) -> dict[str, str]:
    """``NAME=value`` words as a mapping; a word without '=' or without a name is an error."""
    result = {}
    for word in words:
        name, sep, value = word.partition("=")
        if not sep or not name:
            raise BuildError(f"expected NAME=value, not {word!r}")
        result[name] = value
    return result


def doit_words(argv: Sequence[str]) -> dict[str, str]:
    """The NAME=value words of a doit command line, by doit's own rule: a word that does not start
    with '-' and contains '=' is a variable, not a task name or command."""
    return pairs([word for word in argv if word and word[0] != "-" and "=" in word])

