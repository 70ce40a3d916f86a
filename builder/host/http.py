"""The project's one HTTP client: source downloads and registry requests both go through ``request``.

Every request has two deadlines (``Limits``): ``stall`` is each socket's timeout, so nothing - connecting,
the TLS handshake, waiting for the status line or the headers, reading a chunk of the body - may wait
longer than that for a byte; ``total`` bounds the request as a whole: a watchdog shuts its sockets down at
the deadline, which also ends a server that trickles its headers, and the time is checked after every chunk
of the body. (Name resolution is bounded only by the system resolver's own timeouts.)

An HTTP status of any kind is an answer (``Response.status``), for the caller to judge; getting no answer
is a ``Failure`` whose ``kind`` says why (deadline, stall, refused, resolve, protocol, other), for the
caller to phrase. Redirects are followed for GET and HEAD. Credentials go only where they were meant to:
``basic`` to the URL's own scheme, host and port (a host it redirects to gets none), ``authorization`` to
the URL asked for and to no redirect at all. Proxies come from the environment (http_proxy, …) unless the
caller says ``proxies=False``.

Built on urllib and http.client: they give redirects, proxies and TLS; what they lack is the overall
deadline, which no maintained client has either (urllib3's ``Timeout(total=…)`` is a budget of
per-operation timeouts, not a limit a trickling server cannot stretch).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """The deadlines of one request, in seconds: ``stall`` without a byte, ``total`` overall."""

    stall: float
    total: float


class Failure(Exception):
    """A request that got no HTTP answer. ``kind``: deadline (``total`` passed), stall (no byte for
    ``stall`` seconds), refused (connection refused), resolve (unknown host), protocol (the peer does not
    speak HTTP), other; ``reason`` is what the library said (an exception or text)."""

    def __init__(self, kind: str, reason: object, limits: Limits) -> None:
        self.kind = kind
        self.reason = reason
        self.limits = limits
        super().__init__(f"{kind}: {reason}")

    @property
    def text(self) -> str:
        return str(self.reason) or type(self.reason).__name__


class Deadline:
    """The overall limit on one request. At the deadline a watchdog thread shuts the request's sockets
    down, which wakes a read blocked anywhere (TLS handshake, status line, headers, body); each socket's
    own timeout is the stall limit, cut to the time left."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []  # duplicates of the request's sockets, closed on exit
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


def _opener(url: str, deadline: Deadline, basic: tuple[str, str] | None,
            proxies: bool) -> urllib.request.OpenerDirector:
    handlers: list[urllib.request.BaseHandler] = [_HTTPHandler(deadline), _HTTPSHandler(deadline)]
    if not proxies:
        handlers.append(urllib.request.ProxyHandler({}))
    if basic is not None:
        parts = urlsplit(url)
        passwords = urllib.request.HTTPPasswordMgrWithPriorAuth()
        # sent up front, to this scheme, host and port only: not to another host a redirect names
        passwords.add_password(None, f"{parts.scheme}://{parts.netloc}/", *basic, is_authenticated=True)
        handlers.append(urllib.request.HTTPBasicAuthHandler(passwords))
    return urllib.request.build_opener(*handlers)


class Response:
    """An HTTP answer (any status), readable within the request's deadlines."""

    def __init__(self, raw: Any, deadline: Deadline, limits: Limits) -> None:
        self._raw = raw
        self._deadline = deadline
        self.limits = limits
        self.status: int = raw.status
        self.reason: str = str(getattr(raw, "reason", "") or "")
        self.headers: dict[str, str] = {k.lower(): v for k, v in raw.headers.items()}

    @property
    def kind(self) -> str:
        """The content type, without parameters."""
        return self.headers.get("content-type", "").split(";")[0].strip()

    def chunks(self) -> Iterator[bytes]:
        """The body as it arrives; a Failure when a deadline passes or the connection breaks."""
        read = getattr(self._raw, "read1", self._raw.read)  # read1: what has arrived, not a full CHUNK
        try:
            while chunk := read(CHUNK):
                self._deadline.check()
                yield chunk
            self._deadline.check()  # the watchdog ends a trickle with an end of file
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise _failure(exc, self._deadline, self.limits) from None

    @property
    def missing(self) -> int:
        """How many bytes of a Content-Length body never came (after reading it all)."""
        return int(getattr(self._raw, "length", 0) or 0)

    def read(self, limit: int) -> bytes:
        """The whole body, at most ``limit`` bytes of it."""
        body = bytearray()
        for chunk in self.chunks():
            body += chunk[: limit - len(body)]
            if len(body) >= limit:
                break
        return bytes(body)


@contextlib.contextmanager
def request(url: str, limits: Limits, *, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None, basic: tuple[str, str] | None = None,
            authorization: str | None = None, proxies: bool = True) -> Iterator[Response]:
    """One request to ``url`` (http or https) within ``limits``, its answer read inside the ``with``.

    ``basic``: (user, password) sent to the URL's origin only; ``authorization``: an Authorization header
    for this URL alone (never forwarded on a redirect). No answer is a Failure."""
    deadline = Deadline(limits.total)
    with deadline:
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        if authorization is not None:
            req.add_unredirected_header("Authorization", authorization)
        try:
            raw: Any = _opener(url, deadline, basic, proxies).open(req, timeout=limits.stall)
        except urllib.error.HTTPError as exc:  # an answer all the same
            raw = exc
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            raise _failure(exc, deadline, limits) from None
        with contextlib.closing(raw):
            yield Response(raw, deadline, limits)


def _failure(exc: BaseException, deadline: Deadline, limits: Limits) -> Failure:
    reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if deadline.passed:  # whatever the watchdog's shutdown looked like to the reader
        return Failure("deadline", reason, limits)
    if isinstance(reason, TimeoutError):
        return Failure("stall", reason, limits)
    if isinstance(reason, ConnectionRefusedError):
        return Failure("refused", reason, limits)
    if isinstance(reason, socket.gaierror):
        return Failure("resolve", reason, limits)
    if isinstance(reason, http.client.HTTPException):
        return Failure("protocol", reason, limits)
    return Failure("other", reason, limits)
