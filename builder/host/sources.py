"""Sources are fetched on the host into a download cache and verified (sha256 and sha512) before use.

Lookup order: the cache (by sha256), then a local mirror directory (air-gapped sites), then the URL
(http, https or file). A file is only ever used after both digests match.

A download has two deadlines (settings, see builder/model/settings.py), kept by builder.host.http: FETCH_STALL_TIMEOUT
(default 60 s) fails a download that receives no byte for that long, whether connecting, waiting for the
response headers or reading the body; FETCH_TIMEOUT (default 3600 s) bounds the download as a whole, a
server that trickles its headers included.
Each failure is one line naming the URL: not found (HTTP 404/410), timed out (which deadline, and the setting
to raise), connection refused, HTTP error NNN, cannot resolve host, no space left on device (naming the cache
directory). The partial file never survives a failure, Ctrl-C included.

Credentials (builder.host.credentials): a URL's ``user:password@`` is sent as HTTP basic auth (to that scheme,
host and port only, not to a host it redirects to); a URL without one gets the ``machine HOST`` (or
``default``) entry of the netrc file, $NETRC or ~/.netrc, when there is one. A password never appears in a
message or a printed line: the URL is shown as ``https://user:***@host/path`` (a user name alone, often a
token, as ``***@host``).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from builder.core.errors import BuildError
from builder.host import http
from builder.host.credentials import Target, redact, scrub
from builder.model.recipe import Recipe, Source
from builder.model.settings import FetchLimits

CHUNK = 1 << 20


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("BUILDER_CACHE", Path(base) / "builder"))


def digests(path: Path) -> tuple[str, str]:
    """(sha256, sha512) of a file, read once."""
    h256, h512 = hashlib.sha256(), hashlib.sha512()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h256.update(chunk)
            h512.update(chunk)
    return h256.hexdigest(), h512.hexdigest()


@dataclass(frozen=True)
class SourceCache:
    root: Path
    mirror: Path | None = None
    limits: FetchLimits = FetchLimits()

    def cached_path(self, source: Source) -> Path:
        return self.root / "downloads" / source.sha256

    def fetch(self, recipe: Recipe, index: int) -> Path:
        """The verified local copy of ``recipe.sources[index]``; fetches it when absent.

        The cache never loses good data: a cached file that matches the recipe's sha256 but not its sha512
        stays (the recipe is wrong, or the file was forged: either way a person must look), and a file that
        matches neither is moved aside to downloads/.mismatched/, not deleted.
        """
        source = recipe.sources[index]
        where = recipe.where("sources", index)
        if self.mirror is not None and not self.mirror.is_dir():
            raise BuildError(f"SOURCE_MIRROR {self.mirror} is not a directory", where="SOURCE_MIRROR")
        cached = self.cached_path(source)
        if cached.is_file():
            sha256, sha512 = digests(cached)
            if (sha256, sha512) == (source.sha256, source.sha512):
                return cached
            if sha256 == source.sha256:
                raise BuildError(f"sha512 mismatch for the cached {source.filename} ({cached}): expected "
                                 f"{source.sha512}, got {sha512}", where=where,
                                 hint="its sha256 matches, so check the recipe's sha512; the file is kept")
            self._set_aside(cached)
        cached.parent.mkdir(parents=True, exist_ok=True)
        for candidate in self._mirror_candidates(source):
            if candidate.is_file():
                return self._store(candidate, source, where, cached)
        try:
            url = urlsplit(source.url)
        except ValueError as exc:  # e.g. an unclosed [ of an IPv6 address
            raise BuildError(f"malformed URL {redact(source.url)!r}: {exc}", where=where) from None
        if url.scheme == "file":
            local = Path(unquote(url.path))
            if not local.is_file():
                raise BuildError(f"source not found: {redact(source.url)}", where=where)
            return self._store(local, source, where, cached)
        if url.scheme in ("http", "https"):
            return self._download(source, where, cached)
        raise BuildError(f"unsupported URL scheme in {redact(source.url)!r}; expected http, https or file",
                         where=where)

    def _set_aside(self, path: Path) -> Path:
        """Move a cached file whose bytes match no digest out of the way, keeping it for a look."""
        aside = self.root / "downloads" / ".mismatched"
        aside.mkdir(parents=True, exist_ok=True)
        target = aside / f"{path.name}.{int(time.time())}"
        os.replace(path, target)
        print(f"    moved a cached file that matches no digest aside: {target}", file=sys.stderr, flush=True)
        return target

    def _mirror_candidates(self, source: Source) -> list[Path]:
        if self.mirror is None:
            return []
        names = [source.filename, PurePath(source.destination).name, f"sha256/{source.sha256}"]
        return [self.mirror / n for n in names if n]

    def _store(self, origin: Path, source: Source, where: str, cached: Path) -> Path:
        self._verify(origin, source, where, origin=str(origin))
        tmp = _partial_file(cached.parent, str(origin), where)
        try:
            try:
                shutil.copyfile(origin, tmp)
            except OSError as exc:
                raise cache_write_error(exc, cached.parent, str(origin), where) from None
            os.replace(tmp, cached)
        finally:
            tmp.unlink(missing_ok=True)
        return cached

    def _download(self, source: Source, where: str, cached: Path) -> Path:
        shown = redact(source.url)
        print(f"    fetching {shown}", file=sys.stderr, flush=True)
        tmp = _partial_file(cached.parent, shown, where)
        try:  # the partial file goes whatever happens, KeyboardInterrupt included
            try:
                with open(tmp, "wb") as out:
                    download(source.url, out, self.limits, where=where, cache_dir=cached.parent)
            except OSError as exc:  # the network's are BuildErrors by now: this is the file's (its last flush)
                raise cache_write_error(exc, cached.parent, shown, where) from None
            self._verify(tmp, source, where, origin=shown)
            os.replace(tmp, cached)
        finally:
            tmp.unlink(missing_ok=True)
        return cached

    @staticmethod
    def _verify(path: Path, source: Source, where: str, *, origin: str) -> None:
        sha256, sha512 = digests(path)
        for algo, want, got in (("sha256", source.sha256, sha256), ("sha512", source.sha512, sha512)):
            if want != got:
                raise BuildError(f"{algo} mismatch for {origin}: expected {want}, got {got}", where=where)


def _partial_file(folder: Path, shown: str, where: str) -> Path:
    """An empty .partial-PID-* file in the cache directory, for a copy that becomes the cached file by a rename."""
    _remove_orphans(folder)
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=f".partial-{os.getpid()}-")
    except OSError as exc:
        raise cache_write_error(exc, folder, shown, where) from None
    os.close(fd)
    return Path(name)


def _remove_orphans(folder: Path) -> None:
    """Remove the partial files of writers that no longer run (what a SIGKILL left). The cache is shared
    between projects and processes, so a live writer's file is never touched."""
    for leftover in folder.glob(".partial-*"):
        pid = leftover.name.split("-")[1]
        if not (pid.isdigit() and _alive(int(pid))):
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cache_write_error(exc: OSError, folder: Path, shown: str, where: str) -> BuildError:
    """A write into the download cache failed: a full disk says so and names the directory."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        return BuildError(f"{what}: cannot store {shown} in the download cache {folder}", where=where,
                          hint="free some space, or point BUILDER_CACHE at a directory on a bigger disk")
    return BuildError(f"cannot store {shown} in the download cache {folder}: {exc.strerror or exc}", where=where)


MIRROR_HINT = "or put the file in the download cache or a SOURCE_MIRROR directory"
HTTP_HINTS = {
    401: "the server wants credentials, or refused these: give them in the URL or a 'machine HOST login USER "
         "password PASSWORD' line in $NETRC or ~/.netrc",
    403: "the server refuses this client or these credentials",
    407: "the proxy wants credentials: put them in the http_proxy/https_proxy URL",
}


def download(url: str, out: BinaryIO, limits: FetchLimits, *, where: str, cache_dir: Path) -> None:
    """Write the body at ``url`` (http or https) to ``out`` within ``limits``; any failure is a BuildError."""
    shown = redact(url)
    target = Target.of(url)
    deadlines = http.Limits(stall=limits.stall, total=limits.total)
    try:
        with http.request(target.url, deadlines, basic=target.credentials) as response:
            if response.status >= 400:
                raise _refused(response, target, shown=shown, where=where)
            _copy(response, out, shown=shown, where=where, cache_dir=cache_dir)
    except http.Failure as failure:
        raise _failure(failure, target, shown=shown, where=where) from None


def _copy(response: http.Response, out: BinaryIO, *, shown: str, where: str, cache_dir: Path) -> None:
    """Copy the body in chunks as they come (the overall deadline is checked after each)."""
    received = 0
    for chunk in response.chunks():
        try:
            out.write(chunk)
        except OSError as exc:
            raise cache_write_error(exc, cache_dir, shown, where) from None
        received += len(chunk)
    if response.missing:
        raise BuildError(f"cannot fetch {shown}: the connection closed after {received} bytes, {response.missing} "
                         "short", where=where, hint=f"try again, {MIRROR_HINT}")
    try:
        out.flush()
    except OSError as exc:
        raise cache_write_error(exc, cache_dir, shown, where) from None


def _refused(response: http.Response, target: Target, *, shown: str, where: str) -> BuildError:
    """The server's own answer, not the file: one line with its status and what to do."""
    text = scrub(response.reason, target.secrets)
    if response.status in (404, 410):
        return BuildError(f"source not found: {shown}: HTTP {response.status} {text}", where=where,
                          hint=f"check the URL, {MIRROR_HINT}")
    return BuildError(f"HTTP error {response.status}: cannot fetch {shown}: {text}", where=where,
                      hint=HTTP_HINTS.get(response.status, f"try again later, {MIRROR_HINT}"))


def _failure(failure: http.Failure, target: Target, *, shown: str, where: str) -> BuildError:
    """The one-line message for a download that got no answer: what happened, the URL (redacted), what to do."""
    limits = failure.limits
    if failure.kind == "deadline":
        return BuildError(f"timed out: fetching {shown} took longer than {limits.total:g} s overall", where=where,
                          hint=f"raise FETCH_TIMEOUT=SECONDS for a big file on a slow link, {MIRROR_HINT}")
    if failure.kind == "stall":
        return BuildError(f"timed out: no data from {shown} for {limits.stall:g} s", where=where,
                          hint=f"raise FETCH_STALL_TIMEOUT=SECONDS for a slow server, {MIRROR_HINT}")
    if failure.kind == "refused":
        return BuildError(f"connection refused: cannot fetch {shown}", where=where,
                          hint=f"is the server up, and are its host and port right? {MIRROR_HINT}")
    if failure.kind == "resolve":
        return BuildError(f"cannot resolve host {target.host or '(none)'}: cannot fetch {shown}", where=where,
                          hint=f"check the host name and the network's DNS, {MIRROR_HINT}")
    return BuildError(f"cannot fetch {shown}: {scrub(failure.text, target.secrets)}", where=where,
                      hint=f"check the URL and the network, {MIRROR_HINT}")
