"""This machine's apt sources: where its Debian archive is, so that no mirror host is written into the project.

Read once per invocation, by the settings (Settings.parse), as the text of every file in apt's order; a
test or a caller gives its own (``AptSources.of``) instead. Parsed only when a mirror is asked for: a no-op
run hashes the text into its memo key and never imports the deb822 parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))

# Debian release suites (codenames and aliases) whose archive also serves every other release: the
# fallback of AptSources.mirror(). Security, updates and backports suites (bookworm-security, ...) are not.
DEBIAN_RELEASE_SUITES = frozenset({
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
    "oldoldstable", "oldstable", "stable", "testing", "unstable", "experimental",
})

Entry = tuple[list[str], list[str], list[str]]  # (URIs, suites, components) of one enabled deb entry


@dataclass(frozen=True)
class AptSources:
    """The apt source files as read: (path, text) of each, in apt's order of files."""

    files: tuple[tuple[str, str], ...] = ()

    @classmethod
    def read(cls, places: tuple[Path, ...] | None = None) -> AptSources:
        """The files of ``places`` (default: /etc/apt's sources.list and sources.list.d), an unreadable one
        left out as apt leaves it out."""
        found: list[Path] = []
        for place in APT_SOURCES if places is None else places:
            if place.is_dir():
                found += sorted(p for p in place.iterdir() if p.suffix in (".list", ".sources") and p.is_file())
            elif place.is_file():
                found.append(place)
        files = []
        for path in found:
            try:
                files.append((str(path), path.read_text(errors="replace")))
            except OSError:
                continue
        return cls(tuple(files))

    @classmethod
    def of(cls, mirror: str, suites: str = "bookworm") -> AptSources:
        """Sources of one entry (a test's, or a caller's who knows its mirror): ``deb MIRROR SUITES main``."""
        return cls((("given.sources", f"Types: deb\nURIs: {mirror}\nSuites: {suites}\nComponents: main\n"),))

    @cached_property
    def entries(self) -> list[Entry]:
        entries = []
        for path, text in self.files:
            entries += _deb822_entries(text) if path.endswith(".sources") else _one_line_entries(text)
        return entries

    def mirror(self, suite: str) -> str | None:
        """The first Debian archive URL apt uses for ``suite`` (main component).

        When no entry lists ``suite`` (a Debian 13 host asked for bookworm), a release suite ``suite``
        falls back to the first enabled entry with component main for another Debian release (not a
        security, updates or backports suite): one archive serves all releases."""
        entries = [(uri, suites) for uris, suites, components in self.entries if "main" in components
                   for uri in uris if uri.startswith(("http://", "https://", "file:"))]
        for uri, suites in entries:
            if suite in suites:
                return uri.rstrip("/")
        if suite in DEBIAN_RELEASE_SUITES:
            for uri, suites in entries:
                if any(other in DEBIAN_RELEASE_SUITES for other in suites):
                    return uri.rstrip("/")
        return None


def _deb822_entries(text: str) -> list[Entry]:
    """The entries of a deb822 .sources file (sources.list(5)), parsed by python-debian: comments, folded
    fields and case-insensitive field names as apt reads them."""
    from debian.deb822 import Deb822

    entries = []
    for stanza in Deb822.iter_paragraphs(text.splitlines(keepends=True), use_apt_pkg=False):
        enabled = stanza.get("Enabled", "yes").strip().lower() not in ("no", "false", "0")
        if enabled and "deb" in stanza.get("Types", "").split():
            entries.append((stanza.get("URIs", "").split(), stanza.get("Suites", "").split(),
                            stanza.get("Components", "").split()))
    return entries


def _one_line_entries(text: str) -> list[Entry]:
    """The entries of a one-line .list file: ``deb [options] URI SUITE COMPONENT...``, one a line.

    Parsed here: python-debian reads deb822 only, and the one parser of this format, python-apt's aptsources,
    is a binding of Debian's libapt that is not installable from PyPI into the project's Python. The format
    is words on a line, with an optional [...] of options and # comments.
    """
    entries = []
    for line in text.splitlines():
        words = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).split()
        if len(words) >= 4 and words[0] == "deb":
            entries.append(([words[1]], [words[2]], words[3:]))
    return entries
