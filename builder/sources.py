"""Sources are fetched on the host into a download cache and verified (sha256 and sha512) before use.

Lookup order: the cache (by sha256), then a local mirror directory (air-gapped sites), then the URL
(http, https or file). A file is only ever used after both digests match.

A download has two deadlines (settings, see builder/settings.py): FETCH_STALL_TIMEOUT (default 60 s) is the
socket timeout, so it fails a download that receives no byte for that long, whether connecting, waiting for
the response headers or reading the body; FETCH_TIMEOUT (default 3600 s) bounds the download as a whole: a
watchdog shuts its sockets down at the deadline, which also ends a server that trickles its headers, and the
time is checked after every chunk. (Name resolution is bounded only by the system resolver's own timeouts.)
Each failure is one line naming the URL: not found (HTTP 404/410), timed out (which deadline, and the setting
to raise), connection refused, HTTP error NNN, cannot resolve host, no space left on device (naming the cache
directory). The partial file never survives a failure, Ctrl-C included.

Credentials: a URL's ``user:password@`` is sent as HTTP basic auth (to that scheme, host and port only, not
to a host it redirects to); a URL without one gets the ``machine HOST`` (or ``default``) entry of the netrc
file, $NETRC or ~/.netrc, when there is one. A password never appears in a message or a printed line: the
URL is shown as ``https://user:***@host/path`` (a user name alone, often a token, as ``***@host``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import netrc
import os
import re
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePath
from types import TracebackType
from typing import Any, BinaryIO
from urllib.parse import quote, unquote, urlsplit

from builder.errors import BuildError
from builder.recipe import Recipe, Source
from builder.settings import FetchLimits

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


# --- URLs and credentials ------------------------------------------------------------------------------------

AUTHORITY = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)")


def redact(url: str) -> str:
    """The URL as it may be shown: a password (or a user name alone, often a token) becomes ***.

    A pattern, not urlsplit: this must work on any text, a malformed URL included."""
    found = AUTHORITY.match(url)
    if not found or "@" not in found[2]:
        return url
    userinfo, _, hostport = found[2].rpartition("@")
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:***@{hostport}" if colon else f"***@{hostport}"
    return found[1] + shown + url[found.end():]


def netrc_path() -> Path:
    """The netrc file: $NETRC when set, else ~/.netrc."""
    return Path(os.environ.get("NETRC") or Path.home() / ".netrc")


def netrc_credentials(host: str, path: Path | None = None) -> tuple[str, str] | None:
    """(login, password) of the netrc entry for ``host`` (or its ``default`` entry); None without one or a file.

    The file is named explicitly: Python 3.11's netrc reads ~/.netrc alone, whatever $NETRC says.
    """
    path = path or netrc_path()
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except FileNotFoundError:
        return None
    except netrc.NetrcParseError as exc:
        # "bad follower token 'WORD'": WORD may be half of a password with a space in it; never show it
        reason = re.sub(r"^(bad \w+ token) .*", r"\1 (not shown: it may be a secret)", exc.msg)
        raise BuildError(f"malformed netrc file: {reason}", where=f"{exc.filename or path}:{exc.lineno}",
                         hint="each entry is: machine HOST login USER password PASSWORD") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else "not UTF-8 text"
        raise BuildError(f"cannot read the netrc file: {reason}", where=str(path)) from None
    if entry is None:
        return None
    login, _, password = entry
    return (login, password or "") if login or password else None


@dataclass(frozen=True)
class Target:
    """A URL split into what urllib is given (no userinfo: urllib would take it for the port) and credentials."""

    url: str
    host: str
    credentials: tuple[str, str] | None

    @classmethod
    def of(cls, url: str) -> Target:
        parts = urlsplit(url)
        userinfo, at, hostport = parts.netloc.rpartition("@")
        host = parts.hostname or ""
        if not at:
            return cls(url, host, netrc_credentials(host) if host else None)
        user, _, password = userinfo.partition(":")
        return cls(url.replace(parts.netloc, hostport, 1), host, (unquote(user), unquote(password)))

    @property
    def secrets(self) -> list[str]:
        """What must never be shown: the password (or a lone user name, often a token), raw and decoded."""
        if self.credentials is None:
            return []
        user, password = self.credentials
        secret = password or user
        return [s for s in {secret, quote(secret, safe="")} if s]


# --- one download with two deadlines -------------------------------------------------------------------------

class Deadline:
    """The overall limit on one download. At the deadline a watchdog thread shuts the download's sockets
    down, which wakes a read blocked anywhere (TLS handshake, status line, headers, body); each socket's
    own timeout is the stall limit, cut to the time left."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []  # duplicates of the download's sockets, closed on exit
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._watched:
                sock.close()
            self._watched.clear()

    @property
    def passed(self) -> bool:
        return self.expired or time.monotonic() >= self.end

    def check(self) -> None:
        if self.passed:
            raise TimeoutError(f"took longer than {self.seconds:g} s")

    def connect(self, address: tuple[str, int], timeout: float,
                source_address: tuple[str, int] | None = None) -> socket.socket:
        """socket.create_connection, with each attempt's timeout cut to the time left and the socket watched."""
        error: OSError | None = None
        for family, kind, proto, _, sockaddr in socket.getaddrinfo(*address, type=socket.SOCK_STREAM):
            left = self.end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"took longer than {self.seconds:g} s")
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(min(timeout, left))
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                self._watch(sock)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error or OSError(f"no address for {address[0]}")

    def _watch(self, sock: socket.socket) -> None:
        # a duplicate descriptor, ours to close: shutting it down ends the connection, and it cannot be a
        # descriptor number some other file has reused after the connection closed
        twin = socket.socket(fileno=os.dup(sock.fileno()))
        with self._lock:
            self._watched.append(twin)
            if self.expired:
                _shut(twin)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._watched:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the peer
        sock.shutdown(socket.SHUT_RDWR)


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, *, deadline: Deadline, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._create_connection = deadline.connect  # the hook http.client keeps for exactly this


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, *, deadline: Deadline, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._create_connection = deadline.connect


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        def connection(host: str, **kwargs: Any) -> http.client.HTTPConnection:
            return _HTTPConnection(host, deadline=self.deadline, **kwargs)
        return self.do_open(connection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self.deadline = deadline
        self.tls = ssl.create_default_context()

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        def connection(host: str, **kwargs: Any) -> http.client.HTTPConnection:
            return _HTTPSConnection(host, deadline=self.deadline, **kwargs)
        return self.do_open(connection, req, context=self.tls)


def _opener(target: Target, deadline: Deadline) -> urllib.request.OpenerDirector:
    handlers: list[urllib.request.BaseHandler] = [_HTTPHandler(deadline), _HTTPSHandler(deadline)]
    if target.credentials is not None:
        parts = urlsplit(target.url)
        passwords = urllib.request.HTTPPasswordMgrWithPriorAuth()
        # sent up front, to this scheme, host and port only: not to another host a redirect names
        passwords.add_password(None, f"{parts.scheme}://{parts.netloc}/", *target.credentials,
                               is_authenticated=True)
        handlers.append(urllib.request.HTTPBasicAuthHandler(passwords))
    return urllib.request.build_opener(*handlers)


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
    deadline = Deadline(limits.total)
    try:
        with deadline, _opener(target, deadline).open(target.url, timeout=limits.stall) as response:
            _copy(response, out, deadline, shown=shown, where=where, cache_dir=cache_dir)
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        raise _failure(exc, target, limits, deadline, shown=shown, where=where) from None


def _copy(response: Any, out: BinaryIO, deadline: Deadline, *, shown: str, where: str, cache_dir: Path) -> None:
    """Copy the body in chunks as they come, checking the overall deadline after each."""
    read = getattr(response, "read1", response.read)  # read1: what has arrived, not a full CHUNK
    received = 0
    while chunk := read(CHUNK):
        deadline.check()
        try:
            out.write(chunk)
        except OSError as exc:
            raise cache_write_error(exc, cache_dir, shown, where) from None
        received += len(chunk)
    deadline.check()  # the watchdog ends a trickle with an end of file
    left = getattr(response, "length", None)
    if left:
        raise BuildError(f"cannot fetch {shown}: the connection closed after {received} bytes, {left} short",
                         where=where, hint=f"try again, {MIRROR_HINT}")
    try:
        out.flush()
    except OSError as exc:
        raise cache_write_error(exc, cache_dir, shown, where) from None


def _failure(exc: BaseException, target: Target, limits: FetchLimits, deadline: Deadline, *, shown: str,
             where: str) -> BuildError:
    """The one-line message for a failed download: what happened, the URL (redacted) and what to do."""
    reason: object = exc
    if isinstance(exc, urllib.error.HTTPError):
        exc.close()
    elif isinstance(exc, urllib.error.URLError):
        reason = exc.reason
    if isinstance(exc, urllib.error.HTTPError):  # the server's own answer, whenever it came
        text = _printable(str(exc.reason), target.secrets)
        if exc.code in (404, 410):
            return BuildError(f"source not found: {shown}: HTTP {exc.code} {text}", where=where,
                              hint=f"check the URL, {MIRROR_HINT}")
        return BuildError(f"HTTP error {exc.code}: cannot fetch {shown}: {text}", where=where,
                          hint=HTTP_HINTS.get(exc.code, f"try again later, {MIRROR_HINT}"))
    if deadline.passed:  # whatever the watchdog's shutdown looked like to the reader
        return BuildError(f"timed out: fetching {shown} took longer than {limits.total:g} s overall", where=where,
                          hint=f"raise FETCH_TIMEOUT=SECONDS for a big file on a slow link, {MIRROR_HINT}")
    if isinstance(reason, TimeoutError):
        return BuildError(f"timed out: no data from {shown} for {limits.stall:g} s", where=where,
                          hint=f"raise FETCH_STALL_TIMEOUT=SECONDS for a slow server, {MIRROR_HINT}")
    if isinstance(reason, ConnectionRefusedError):
        return BuildError(f"connection refused: cannot fetch {shown}", where=where,
                          hint=f"is the server up, and are its host and port right? {MIRROR_HINT}")
    if isinstance(reason, socket.gaierror):
        return BuildError(f"cannot resolve host {target.host or '(none)'}: cannot fetch {shown}", where=where,
                          hint=f"check the host name and the network's DNS, {MIRROR_HINT}")
    text = _printable(str(reason) or type(reason).__name__, target.secrets)
    return BuildError(f"cannot fetch {shown}: {text}", where=where,
                      hint=f"check the URL and the network, {MIRROR_HINT}")


def _printable(text: str, secrets: list[str], limit: int = 200) -> str:
    """Server- or library-made text made safe for one line: no secrets, no control characters, not too long."""
    for secret in secrets:
        text = text.replace(secret, "***")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[:limit] + "..."
