"""Downloads end, with one clear line, however a server misbehaves; no password is ever shown.

Each test runs a tiny HTTP server on 127.0.0.1 (a thread, port 0) that hangs, trickles, stalls, refuses or
wants credentials, with tiny deadlines (1 s without data, 2 s overall). The elapsed-time asserts are bounds
(the download did end), not speed claims.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import io
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from builder.core.errors import BuildError
from builder.host import sources
from builder.host.credentials import Target, netrc_credentials, redact
from builder.host.sources import SourceCache
from builder.model.recipe import Recipe
from builder.model.settings import FetchLimits

PAYLOAD = b"pretend this is linux-source.tar.xz\n"
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
SHA512 = hashlib.sha512(PAYLOAD).hexdigest()
LIMITS = FetchLimits(stall=1.0, total=2.0)
SLACK = 2.0  # how much later than its deadline a download may end on a busy machine
PASSWORD = "s3cret-Pa55"

Respond = Callable[[socket.socket, bytes, threading.Event], None]
MakeRecipe = Callable[[str], Recipe]


class Server:
    """An HTTP server on 127.0.0.1 that answers every request with ``respond(connection, request, stop)``."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.stop = threading.Event()
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.connections: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._serve, daemon=True)]
        self.threads[0].start()

    def url(self, path: str = "/pool/hello.tar", userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.listener.getsockname()[1]}{path}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(conn)
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        request = b""
        try:
            while b"\r\n\r\n" not in request and (data := conn.recv(4096)):
                request += data
            self.requests.append(request)
            self.respond(conn, request, self.stop)
        except OSError:
            pass  # the client went away: that is what most of these tests are about
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(timeout=2)
        assert not any(thread.is_alive() for thread in self.threads), "a test server did not stop"


def response(status: str, body: bytes = b"", *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def answer(data: bytes) -> Respond:
    def respond(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
        conn.sendall(data)
    return respond


def silent(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
    stop.wait()


def trickle_body(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
    while not stop.wait(0.3):
        conn.sendall(b"x")


def trickle_headers(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while not stop.wait(0.3):
        conn.sendall(b"x")


def headers_then_stall(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
    conn.sendall(response("200 OK", PAYLOAD)[:-len(PAYLOAD) + 5])  # headers and 5 bytes of the body
    stop.wait()


def slow_but_steady(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
    data = response("200 OK", PAYLOAD)
    for start in range(0, len(data), 40):
        conn.sendall(data[start:start + 40])
        stop.wait(0.2)


def closes_early(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
    conn.sendall(response("200 OK", PAYLOAD)[:-10])


def basic_auth(user: str, password: str) -> Respond:
    want = b"Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode())

    def respond(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
        if want in request:
            conn.sendall(response("200 OK", PAYLOAD))
        else:
            conn.sendall(response("401 Unauthorized", b"", 'WWW-Authenticate: Basic realm="pool"'))
    return respond


@pytest.fixture(autouse=True)
def no_proxy_no_netrc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


@pytest.fixture
def serve() -> Iterator[Callable[[Respond], Server]]:
    servers: list[Server] = []

    def start(respond: Respond) -> Server:
        servers.append(Server(respond))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def cache(tmp_path: Path) -> SourceCache:
    return SourceCache(tmp_path / "cache", limits=LIMITS)


@pytest.fixture
def recipe(load: Callable[..., Recipe]) -> MakeRecipe:
    def make(url: str) -> Recipe:
        return load(f"""\
            name: hello
            sources:
              - url: "{url}"
                destination: src/hello.tar
                sha256: {SHA256}
                sha512: {SHA512}
            """)
    return make


def downloads(cache: SourceCache) -> list[str]:
    folder = cache.root / "downloads"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def failure(cache: SourceCache, recipe: Recipe) -> tuple[str, float]:
    """The message of a fetch that must fail, and how long it took; nothing may be left in the cache."""
    start = time.monotonic()
    with pytest.raises(BuildError) as info:
        cache.fetch(recipe, 0)
    elapsed = time.monotonic() - start
    assert downloads(cache) == [], "a failed download left a file behind"
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{recipe.path}:3: ")
    return text, elapsed


def test_a_good_server_is_fetched_into_the_cache(cache: SourceCache, recipe: MakeRecipe,
                                                 serve: Callable[[Respond], Server]) -> None:
    server = serve(answer(response("200 OK", PAYLOAD)))
    assert cache.fetch(recipe(server.url()), 0).read_bytes() == PAYLOAD
    assert downloads(cache) == [SHA256]
    assert b"Authorization" not in server.requests[0]


def test_a_slow_but_steady_server_is_not_a_stall(cache: SourceCache, recipe: MakeRecipe,
                                                 serve: Callable[[Respond], Server]) -> None:
    server = serve(slow_but_steady)
    assert cache.fetch(recipe(server.url()), 0).read_bytes() == PAYLOAD


def test_a_server_that_accepts_and_never_answers_is_a_stall(cache: SourceCache, recipe: MakeRecipe,
                                                            serve: Callable[[Respond], Server]) -> None:
    server = serve(silent)
    text, elapsed = failure(cache, recipe(server.url()))
    assert f"timed out: no data from {server.url()} for 1 s" in text
    assert "FETCH_STALL_TIMEOUT" in text
    assert elapsed < LIMITS.stall + SLACK


def test_a_server_that_stalls_after_the_headers_is_a_stall(cache: SourceCache, recipe: MakeRecipe,
                                                           serve: Callable[[Respond], Server]) -> None:
    server = serve(headers_then_stall)
    text, elapsed = failure(cache, recipe(server.url()))
    assert f"timed out: no data from {server.url()} for 1 s" in text
    assert elapsed < LIMITS.stall + SLACK


def test_a_server_that_trickles_the_body_fails_at_the_overall_limit(cache: SourceCache, recipe: MakeRecipe,
                                                                    serve: Callable[[Respond], Server]) -> None:
    server = serve(trickle_body)
    text, elapsed = failure(cache, recipe(server.url()))
    assert f"timed out: fetching {server.url()} took longer than 2 s overall" in text
    assert "FETCH_TIMEOUT=SECONDS" in text
    assert elapsed < LIMITS.total + SLACK


def test_a_server_that_trickles_its_headers_fails_at_the_overall_limit_too(
        cache: SourceCache, recipe: MakeRecipe, serve: Callable[[Respond], Server]) -> None:
    server = serve(trickle_headers)
    text, elapsed = failure(cache, recipe(server.url()))
    assert f"timed out: fetching {server.url()} took longer than 2 s overall" in text
    assert elapsed < LIMITS.total + SLACK


def test_a_missing_file_is_not_found(cache: SourceCache, recipe: MakeRecipe,
                                     serve: Callable[[Respond], Server]) -> None:
    server = serve(answer(response("404 Not Found")))
    text, _ = failure(cache, recipe(server.url()))
    assert f"source not found: {server.url()}: HTTP 404 Not Found" in text
    assert "SOURCE_MIRROR" in text


def test_a_gone_file_is_not_found_either(cache: SourceCache, recipe: MakeRecipe,
                                         serve: Callable[[Respond], Server]) -> None:
    server = serve(answer(response("410 Gone")))
    assert f"source not found: {server.url()}: HTTP 410 Gone" in failure(cache, recipe(server.url()))[0]


def test_a_server_error_is_an_http_error_with_its_status(cache: SourceCache, recipe: MakeRecipe,
                                                         serve: Callable[[Respond], Server]) -> None:
    server = serve(answer(response("500 Internal Server Error")))
    text, _ = failure(cache, recipe(server.url()))
    assert f"HTTP error 500: cannot fetch {server.url()}: Internal Server Error" in text


def test_a_server_that_closes_early_is_said_so(cache: SourceCache, recipe: MakeRecipe,
                                               serve: Callable[[Respond], Server]) -> None:
    server = serve(closes_early)
    text, _ = failure(cache, recipe(server.url()))
    assert f"cannot fetch {server.url()}: the connection closed after {len(PAYLOAD) - 10} bytes, 10 short" in text


def test_a_closed_port_is_connection_refused(cache: SourceCache, recipe: MakeRecipe) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/pool/hello.tar"
    text, elapsed = failure(cache, recipe(url))
    assert f"connection refused: cannot fetch {url}" in text
    assert elapsed < LIMITS.stall + SLACK


def test_an_unknown_host_cannot_be_resolved(cache: SourceCache, recipe: MakeRecipe,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_host(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)  # no resolver is asked, however slow it is
    url = "http://no-such-host.invalid/pool/hello.tar"
    text, _ = failure(cache, recipe(url))
    assert f"cannot resolve host no-such-host.invalid: cannot fetch {url}" in text


def test_netrc_credentials_are_sent_as_basic_auth(cache: SourceCache, recipe: MakeRecipe, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  serve: Callable[[Respond], Server]) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine other.example login bob password nope\nmachine 127.0.0.1 login alice "
                     f"password {PASSWORD}\n")
    monkeypatch.setenv("NETRC", str(netrc))
    server = serve(basic_auth("alice", PASSWORD))
    assert cache.fetch(recipe(server.url()), 0).read_bytes() == PAYLOAD


def test_home_netrc_is_read_without_netrc_set(cache: SourceCache, recipe: MakeRecipe, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              serve: Callable[[Respond], Server]) -> None:
    (tmp_path / ".netrc").write_text(f"default login alice password {PASSWORD}\n")
    monkeypatch.delenv("NETRC")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert netrc_credentials("127.0.0.1") == ("alice", PASSWORD)
    server = serve(basic_auth("alice", PASSWORD))
    assert cache.fetch(recipe(server.url()), 0).read_bytes() == PAYLOAD


def test_without_credentials_a_401_says_where_to_put_them(cache: SourceCache, recipe: MakeRecipe,
                                                          serve: Callable[[Respond], Server]) -> None:
    server = serve(basic_auth("alice", PASSWORD))
    text, _ = failure(cache, recipe(server.url()))
    assert f"HTTP error 401: cannot fetch {server.url()}" in text
    assert "NETRC" in text


def test_a_malformed_netrc_is_one_line_naming_file_and_line_without_the_secret(
        cache: SourceCache, recipe: MakeRecipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        serve: Callable[[Respond], Server]) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine a.example login a password b\nmachine 127.0.0.1 login alice password {PASSWORD} "
                     f"half-of-it and-more\n")
    monkeypatch.setenv("NETRC", str(netrc))
    server = serve(basic_auth("alice", PASSWORD))
    with pytest.raises(BuildError) as info:
        cache.fetch(recipe(server.url()), 0)
    text = str(info.value)
    assert text.startswith(f"{netrc}:2: malformed netrc file: bad follower token")
    assert "half-of-it" not in text and PASSWORD not in text and "\n" not in text
    assert downloads(cache) == []


def test_credentials_in_the_url_are_sent_and_never_shown(cache: SourceCache, recipe: MakeRecipe,
                                                         capsys: pytest.CaptureFixture[str],
                                                         serve: Callable[[Respond], Server]) -> None:
    server = serve(basic_auth("alice", PASSWORD))
    assert cache.fetch(recipe(server.url(userinfo=f"alice:{PASSWORD}@")), 0).read_bytes() == PAYLOAD
    printed = capsys.readouterr()
    assert f"fetching {server.url(userinfo='alice:***@')}" in printed.err
    assert PASSWORD not in printed.out + printed.err


def test_credentials_go_to_their_own_host_only_not_where_it_redirects(
        cache: SourceCache, recipe: MakeRecipe, serve: Callable[[Respond], Server]) -> None:
    elsewhere = serve(answer(response("200 OK", PAYLOAD)))  # another port: another origin
    server = serve(answer(response("302 Found", b"", f"Location: {elsewhere.url()}")))
    assert cache.fetch(recipe(server.url(userinfo=f"alice:{PASSWORD}@")), 0).read_bytes() == PAYLOAD
    assert b"Authorization: Basic " in server.requests[0]
    assert b"Authorization" not in elsewhere.requests[0]


def test_a_malformed_url_is_one_line_too(cache: SourceCache, recipe: MakeRecipe) -> None:
    text, _ = failure(cache, recipe(f"http://alice:{PASSWORD}@[::1/pool/hello.tar"))
    assert "malformed URL 'http://alice:***@[::1/pool/hello.tar'" in text
    assert PASSWORD not in text


def test_a_failure_with_credentials_in_the_url_never_shows_the_password(
        cache: SourceCache, recipe: MakeRecipe, capsys: pytest.CaptureFixture[str],
        serve: Callable[[Respond], Server]) -> None:
    server = serve(answer(response("404 Not Found")))
    text, _ = failure(cache, recipe(server.url(userinfo=f"alice:{PASSWORD}@")))
    assert f"source not found: {server.url(userinfo='alice:***@')}: HTTP 404" in text
    printed = capsys.readouterr()
    assert PASSWORD not in text + printed.out + printed.err
    assert b"Authorization: Basic " in server.requests[0]


def test_a_full_disk_is_said_so_naming_the_cache_directory(cache: SourceCache, recipe: MakeRecipe,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           serve: Callable[[Respond], Server]) -> None:
    class FullDisk(io.BytesIO):
        def write(self, data: Any) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    opened: list[str] = []

    def full_disk(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        opened.append(str(path))
        return FullDisk()

    monkeypatch.setattr(sources, "open", full_disk, raising=False)  # the module's own open(), nothing else
    server = serve(answer(response("200 OK", PAYLOAD)))
    text, _ = failure(cache, recipe(server.url()))
    folder = cache.root / "downloads"
    assert f"no space left on device: cannot store {server.url()} in the download cache {folder}" in text
    assert Path(opened[0]).name.startswith(".partial-")


def test_a_full_disk_copying_a_local_file_is_said_so_too(cache: SourceCache, recipe: MakeRecipe, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    upstream = tmp_path / "hello.tar"
    upstream.write_bytes(PAYLOAD)

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sources.shutil, "copyfile", full)
    text, _ = failure(cache, recipe(upstream.as_uri()))
    assert f"no space left on device: cannot store {upstream} in the download cache" in text


def test_a_keyboard_interrupt_leaves_no_partial_file(cache: SourceCache, recipe: MakeRecipe,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     serve: Callable[[Respond], Server]) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sources, "_copy", interrupted)
    server = serve(answer(response("200 OK", PAYLOAD)))
    with pytest.raises(KeyboardInterrupt):
        cache.fetch(recipe(server.url()), 0)
    assert downloads(cache) == []


@pytest.mark.parametrize(("url", "shown"), [
    ("https://user:secret@host.example/path", "https://user:***@host.example/path"),
    ("https://user:@host.example:8443/p?q=1", "https://user:***@host.example:8443/p?q=1"),
    ("https://token@host.example/path", "https://***@host.example/path"),
    ("https://u:p%40ss@host.example/a@b", "https://u:***@host.example/a@b"),
    ("https://host.example/a@b", "https://host.example/a@b"),
    ("file:///srv/hello.tar", "file:///srv/hello.tar"),
    ("http://u:pw@[::1/broken", "http://u:***@[::1/broken"),
    ("not a url u:pw@host", "not a url u:pw@host"),
])
def test_redact_hides_the_password_and_keeps_the_rest(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_userinfo_is_taken_out_of_the_url_and_decoded() -> None:
    target = Target.of("https://u%3Ame:p%40ss@host.example:8443/a")
    assert target.url == "https://host.example:8443/a"
    assert target.host == "host.example"
    assert target.credentials == ("u:me", "p@ss")
    assert set(target.secrets) == {"p@ss", "p%40ss"}
