"""The Docker engine: reachability and image queries over its socket (stdlib, with deadlines), and the
docker SDK for the rest (import, containers, push)."""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from builder.errors import BuildError

ENGINE_HINT = "start it with ./setup.sh, or: dockerd --bridge=none --iptables=false --ip-forward=false &"
DEFAULT_SOCKET = "/var/run/docker.sock"
ANSWER_SECONDS = 30  # an engine that accepts a connection and never answers fails after this


def engine_hint() -> str:
    """How to reach the engine, honouring DOCKER_HOST."""
    host = os.environ.get("DOCKER_HOST")
    if host:
        return f"DOCKER_HOST is {host}: start an engine there, or unset DOCKER_HOST to use {DEFAULT_SOCKET}"
    return ENGINE_HINT


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def _connection() -> http.client.HTTPConnection | None:
    """A plain HTTP connection to the engine API, or None when DOCKER_HOST needs the SDK (ssh, TLS)."""
    host = os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    url = urlparse(host)
    if url.scheme == "unix":
        return _UnixConnection(url.path, ANSWER_SECONDS)
    if url.scheme in ("tcp", "http") and not os.environ.get("DOCKER_TLS_VERIFY") and url.hostname:
        return http.client.HTTPConnection(url.hostname, url.port or 2375, timeout=ANSWER_SECONDS)
    return None


def _get(path: str) -> tuple[int, bytes] | None:
    """GET ``path`` from the engine API (status, body); None when only the SDK can reach it."""
    conn = _connection()
    if conn is None:
        return None
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    except TimeoutError:
        raise BuildError(f"the Docker engine did not answer within {ANSWER_SECONDS}s", hint=engine_hint()) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise BuildError(f"the Docker engine is not reachable ({reason})", hint=engine_hint()) from None
    finally:
        conn.close()


def ping() -> None:
    """A BuildError unless the engine answers /_ping within ANSWER_SECONDS (skipped for ssh/TLS hosts)."""
    answer = _get("/_ping")
    if answer is not None and answer[0] != 200:
        raise BuildError(f"the Docker engine answered /_ping with {answer[0]}", hint=engine_hint())


def inspect_image(ref: str) -> dict[str, Any] | None:
    """The engine's inspection of image ``ref`` (None when absent).

    Straight over the engine socket with the standard library: a no-op build asks this once per
    toolchain, and importing the docker SDK would cost more than the whole check.
    """
    answer = _get(f"/images/{quote(ref, safe='/:@')}/json")
    if answer is None:
        import docker.errors

        try:
            return dict(client().api.inspect_image(ref))
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            raise BuildError(f"cannot inspect image {ref}: {_short(exc)}") from None
    status, body = answer
    if status == 404:
        return None
    if status != 200:
        raise BuildError(f"cannot inspect image {ref}: engine answered {status} {body[:200]!r}")
    try:
        return dict(json.loads(body))
    except ValueError:
        raise BuildError(f"cannot inspect image {ref}: the engine's answer is not JSON") from None


@cache
def client() -> Any:
    """A connected docker SDK client; a stopped engine is a BuildError."""
    import docker  # imported on first use: it is the slowest import of a no-op run
    import docker.errors

    try:
        ping()  # within ANSWER_SECONDS, before the SDK's long per-call timeout (imports take minutes)
        api = docker.from_env(timeout=600)
        api.ping()
    except docker.errors.DockerException as exc:
        raise BuildError(f"the Docker engine is not reachable ({_short(exc)})", hint=engine_hint()) from None
    return api


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def reachable() -> tuple[bool, str]:
    """(True, server version) or (False, why) - for doctor."""
    try:
        return True, client().version().get("Version", "?")
    except BuildError as exc:
        return False, exc.message


def image_id(ref: str) -> str | None:
    """The local image ID of ``ref`` (sha256:...), or None when the engine does not have it."""
    info = inspect_image(ref)
    return str(info["Id"]) if info else None


def require_image(ref: str, variable: str = "TOOLCHAIN") -> str:
    """The image ID of ``ref``; a clear error when it is absent."""
    found = image_id(ref)
    if found is None:
        raise BuildError(f"image {ref} ({variable}) is not in the Docker engine",
                         hint="run ./setup.sh or 'builder toolchain ensure'")
    return found


def image_labels(ref: str) -> dict[str, str]:
    """The labels of image ``ref`` ({} when it has none or is absent)."""
    info = inspect_image(ref) or {}
    return dict((info.get("Config") or {}).get("Labels") or {})


def import_rootfs(tarball: Path, ref: str, *, changes: list[str]) -> str:
    """``docker import`` the root filesystem tar ``tarball`` as ``ref``; its image ID."""
    import docker.errors
    from docker.utils import parse_repository_tag

    def chunks() -> Iterator[bytes]:
        # A generator, not the file: given a file, the SDK sends it whole yet announces a chunked body,
        # and the engine answers "invalid byte in chunk length".
        with open(tarball, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk

    repository, tag = parse_repository_tag(ref)
    try:
        client().api.import_image_from_stream(chunks(), repository=repository, tag=tag, changes=changes)
    except docker.errors.APIError as exc:
        raise BuildError(f"cannot import {ref}: {_short(exc)}") from None
    return require_image(ref)


def run_once(ref: str, argv: list[str]) -> bytes:
    """Run ``argv`` in a throw-away container of ``ref`` without network; its stdout."""
    import docker.errors

    try:
        return bytes(client().containers.run(ref, argv, network_mode="none", remove=True))
    except docker.errors.DockerException as exc:
        raise BuildError(f"running {' '.join(argv)} in {ref} failed: {_short(exc)}") from None
