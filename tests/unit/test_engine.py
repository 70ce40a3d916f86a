"""Engine queries over its socket: answers, absence, and deadlines (a socket that accepts and never answers)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from builder.core.errors import BuildError
from builder.host import engine

Serve = Callable[[Callable[[bytes], bytes | None]], Path]


@pytest.fixture
def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    """serve(answer): a one-thread HTTP server on a unix socket, DOCKER_HOST pointing at it. ``answer``
    gets the request and returns the raw response, or None to keep the connection open and say nothing."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(answer: Callable[[bytes], bytes | None]) -> Path:
        path = tmp_path / "engine.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(4)
        listener.settimeout(0.2)

        def loop() -> None:
            held = []
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                request = conn.recv(65536)
                response = answer(request)
                if response is None:
                    held.append(conn)  # accepted, never answered
                    continue
                conn.sendall(response)
                conn.close()
            for conn in held:
                conn.close()
            listener.close()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        threads.append(thread)
        monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
        return path

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=5)


def http(status: str, body: bytes) -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body


def test_an_image_is_inspected_over_the_socket(serve: Serve) -> None:
    seen: list[bytes] = []

    def answer(request: bytes) -> bytes:
        seen.append(request)
        return http("200 OK", json.dumps({"Id": "sha256:abc", "Config": {"Labels": {"a": "b"}}}).encode())

    serve(answer)
    assert engine.Engine().image_labels("registry.example/tool:1") == {"a": "b"}
    assert seen[0].startswith(b"GET /images/registry.example/tool:1/json HTTP/1.0")


def test_an_absent_image_is_none(serve: Serve) -> None:
    serve(lambda request: http("404 Not Found", b'{"message": "No such image"}'))
    assert engine.Engine().inspect_image("nope:1") is None
    assert engine.Engine().image_id("nope:1") is None


def test_an_engine_that_accepts_and_never_answers_fails_within_the_deadline(
        serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILDER_ENGINE_TIMEOUT", "1")
    path = serve(lambda request: None)
    started = time.monotonic()
    asked = engine.Engine()
    with pytest.raises(engine.EngineError) as info:
        asked.inspect_image("builder-toolchain:bookworm")
    assert str(info.value) == (f"the Docker engine is not reachable (timed out after 1s: unix://{path} accepted the "
                               "connection and did not answer) (it is stuck: restart it (systemctl restart docker), "
                               "or unset DOCKER_HOST to use /var/run/docker.sock)")
    with pytest.raises(engine.EngineError, match="timed out after 1s"):  # not asked again: no second wait
        asked.inspect_image("other:1")
    assert time.monotonic() - started < 1.9


def test_threads_sharing_a_stuck_engine_wait_one_deadline_each_at_most_and_a_new_invocation_asks_again(
        serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILDER_ENGINE_TIMEOUT", "1")
    serve(lambda request: None)
    shared = engine.Engine()
    failures: list[str] = []

    def ask(ref: str) -> None:
        try:
            shared.inspect_image(ref)
        except engine.EngineError as exc:
            failures.append(exc.message)

    started = time.monotonic()
    threads = [threading.Thread(target=ask, args=(f"image-{n}:1",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(failures) == 4 and all("timed out after 1s" in f for f in failures)
    assert time.monotonic() - started < 1.9  # in parallel, and nobody waits a second deadline
    started = time.monotonic()
    with pytest.raises(engine.EngineError, match="timed out after 1s"):
        engine.Engine().inspect_image("image-0:1")  # another invocation's engine: asked, and waited for, afresh
    assert time.monotonic() - started >= 0.9


def test_the_deadline_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUILDER_ENGINE_TIMEOUT", raising=False)
    assert engine.answer_seconds() == 30
    monkeypatch.setenv("BUILDER_ENGINE_TIMEOUT", "2.5")
    assert engine.answer_seconds() == 2.5
    monkeypatch.setenv("BUILDER_ENGINE_TIMEOUT", "soon")
    with pytest.raises(BuildError, match=r"^BUILDER_ENGINE_TIMEOUT: 'soon' is not a number of seconds$"):
        engine.answer_seconds()


def test_no_engine_at_all_is_not_running_and_the_hint_honours_docker_host(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    with pytest.raises(BuildError) as info:
        engine.Engine().ping()
    sock = f"unix://{tmp_path}/none.sock"
    assert str(info.value) == (f"the Docker engine is not reachable (not running: {sock} does not exist) "
                               f"(DOCKER_HOST is {sock}: start an engine there, or unset DOCKER_HOST to use "
                               "/var/run/docker.sock)")


def test_a_socket_nobody_listens_on_refuses_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # bound, never listening: what a dead engine leaves behind
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    try:
        with pytest.raises(engine.EngineError) as info:
            engine.Engine().ping()
    finally:
        stale.close()
    assert info.value.message == (f"the Docker engine is not reachable (not running: unix://{path} refused the "
                                  "connection)")


def test_a_socket_that_is_not_ours_is_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/engine.sock")

    def refuse(path: str, target: str, seconds: float) -> tuple[int, bytes]:
        raise PermissionError(13, "Permission denied")  # what connect() raises on a socket of another user's

    monkeypatch.setattr(engine, "_unix_get", refuse)
    with pytest.raises(engine.EngineError) as info:
        engine.Engine().ping()
    assert str(info.value) == (f"the Docker engine is not reachable (permission denied on unix://{tmp_path}/"
                               "engine.sock) (run as root, or add your user to the docker group and log in again)")


def test_a_garbled_answer_is_a_clear_error(serve: Serve) -> None:
    serve(lambda request: http("200 OK", b"<html>not json</html>"))
    with pytest.raises(BuildError, match="the engine's answer is not JSON"):
        engine.Engine().inspect_image("x:1")


def test_an_answer_cut_short_is_a_clear_error(serve: Serve) -> None:
    serve(lambda request: b"HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\n{\"Id\"")
    with pytest.raises(engine.EngineError, match=r"closed the connection after 5 of 100 bytes"):
        engine.Engine().inspect_image("x:1")


def test_an_answer_that_is_not_http_is_a_clear_error(serve: Serve) -> None:
    serve(lambda request: b"SSH-2.0-OpenSSH_9.2\r\n")
    with pytest.raises(engine.EngineError, match=r"gave no valid HTTP answer"):
        engine.Engine().inspect_image("x:1")


def test_the_question_is_http_1_0_and_the_answer_is_read_to_the_close(serve: Serve) -> None:
    seen: list[bytes] = []

    def answer(request: bytes) -> bytes:
        seen.append(request)
        return b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + json.dumps({"Id": "sha256:1"}).encode()

    serve(answer)
    assert engine.Engine().image_id("a/b:1") == "sha256:1"
    assert seen[0].startswith(b"GET /images/a/b:1/json HTTP/1.0\r\n")
