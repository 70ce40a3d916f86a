"""Engine queries over its socket: answers, absence, and deadlines (a socket that accepts and never answers)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from builder import engine
from builder.errors import BuildError

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
    assert engine.image_labels("registry.example/tool:1") == {"a": "b"}
    assert seen[0].startswith(b"GET /images/registry.example/tool:1/json HTTP/1.1")


def test_an_absent_image_is_none(serve: Serve) -> None:
    serve(lambda request: http("404 Not Found", b'{"message": "No such image"}'))
    assert engine.inspect_image("nope:1") is None
    assert engine.image_id("nope:1") is None


def test_an_engine_that_accepts_and_never_answers_fails_within_the_deadline(
        serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "ANSWER_SECONDS", 1)
    serve(lambda request: None)
    with pytest.raises(BuildError, match=r"the Docker engine did not answer within 1s \(DOCKER_HOST is unix://"):
        engine.inspect_image("builder-toolchain:bookworm")


def test_no_engine_at_all_is_not_reachable_and_the_hint_honours_docker_host(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    with pytest.raises(BuildError) as info:
        engine.ping()
    assert str(info.value).startswith("the Docker engine is not reachable (No such file or directory) "
                                      f"(DOCKER_HOST is unix://{tmp_path}/none.sock:")


def test_a_garbled_answer_is_a_clear_error(serve: Serve) -> None:
    serve(lambda request: http("200 OK", b"<html>not json</html>"))
    with pytest.raises(BuildError, match="the engine's answer is not JSON"):
        engine.inspect_image("x:1")
