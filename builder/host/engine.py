"""The Docker engine: reachability and image queries over its socket (stdlib, with deadlines), and the
docker SDK for the rest (import, containers, push).

Every question to the engine has a deadline: ``answer_seconds()``, 30 s unless the environment variable
BUILDER_ENGINE_TIMEOUT gives another number of seconds (the tests use 1-2 s). It also bounds the docker
client probes of backend.py (`docker buildx inspect` asks the engine). An engine that did not answer in time
is not asked again by the same Engine (one per invocation, builder.host.services): every later question
fails at once with the same error, so a stuck engine costs one deadline, not one per image or task. Failures
say which of three things happened: nothing listens (not running, refused), it listens and does not answer
(timed out), or the socket is not ours to use (permission denied).
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import ParseResult, quote, urlparse

from builder.core.errors import BuildError

ENGINE_HINT = "start it with ./setup.sh, or: dockerd --bridge=none --iptables=false --ip-forward=false &"
DEFAULT_SOCKET = "/var/run/docker.sock"
ANSWER_SECONDS = 30  # an engine that accepts a connection and never answers fails after this
TIMEOUT_VARIABLE = "BUILDER_ENGINE_TIMEOUT"

Trouble = Literal["down", "timeout", "permission"]


class EngineError(BuildError):
    """The engine cannot be asked at all (as opposed to an answer about one image): nothing about a task
    can be said until it is fixed."""


def answer_seconds() -> float:
    """How long to wait for the engine: BUILDER_ENGINE_TIMEOUT seconds when set, else ANSWER_SECONDS."""
    value = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not value:
        return ANSWER_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0
    if not 0 < seconds < 86400:
        raise BuildError(f"{value!r} is not a number of seconds", where=TIMEOUT_VARIABLE)
    return seconds


def host() -> str:
    """Where the engine is: DOCKER_HOST, else the default socket."""
    return os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"


def engine_hint(trouble: Trouble = "down") -> str:
    """What to do about ``trouble`` with the engine, honouring DOCKER_HOST."""
    named = os.environ.get("DOCKER_HOST")
    if trouble == "permission":
        return "run as root, or add your user to the docker group and log in again"
    if trouble == "timeout":
        return "it is stuck: restart it (systemctl restart docker)" + (
            f", or unset DOCKER_HOST to use {DEFAULT_SOCKET}" if named else "")
    if named:
        return f"DOCKER_HOST is {named}: start an engine there, or unset DOCKER_HOST to use {DEFAULT_SOCKET}"
    return ENGINE_HINT


STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})[ \r]")


def _unix_get(path: str, target: str, seconds: float) -> tuple[int, bytes]:
    """GET ``target`` over the engine's Unix socket ``path`` within ``seconds``: (status, body).

    Written here rather than with http.client, which imports ssl and email: 8 ms, a twentieth of a no-op
    run, which asks the engine one question. The request is HTTP/1.0, so the engine answers with a plain
    body (no chunks: RFC 9112 forbids them to a 1.0 client) and closes the connection; the answer is the
    status line, headers, and the body up to Content-Length or the close."""
    deadline = time.monotonic() + seconds
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(seconds)
        sock.connect(path)
        sock.sendall(f"GET {target} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
        chunks = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    head, blank, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = STATUS_LINE.match(head + b"\r")
    if not blank or status is None:
        raise EngineError(f"the Docker engine at unix://{path} gave no valid HTTP answer", hint=engine_hint())
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"identity").lower() != b"identity":
        raise EngineError(f"the Docker engine at unix://{path} answered HTTP/1.0 with a "
                          f"{headers[b'transfer-encoding'].decode(errors='replace')} body", hint=engine_hint())
    if headers.get(b"content-length", b"").isdigit():
        length = int(headers[b"content-length"])
        if len(body) < length:
            raise EngineError(f"the Docker engine at unix://{path} closed the connection after {len(body)} of "
                              f"{length} bytes", hint=engine_hint())
        body = body[:length]
    return int(status.group(1)), body


def _tcp_get(url: ParseResult, target: str, seconds: float) -> tuple[int, bytes]:
    """GET ``target`` from a plain tcp:// engine (rare: no TLS), with http.client."""
    import http.client

    conn = http.client.HTTPConnection(url.hostname or "localhost", url.port or 2375, timeout=seconds)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def timed_out(seconds: float, where: str | None = None) -> EngineError:
    """The error for an engine that accepted the connection and did not answer within ``seconds``."""
    return EngineError(f"the Docker engine is not reachable (timed out after {seconds:.0f}s: {where or host()} "
                       "accepted the connection and did not answer)", hint=engine_hint("timeout"))


def _unreachable(exc: OSError, where: str) -> EngineError:
    """Nothing listens (not running, refused), or the socket is not ours to use (permission denied)."""
    if isinstance(exc, PermissionError):
        return EngineError(f"the Docker engine is not reachable (permission denied on {where})",
                           hint=engine_hint("permission"))
    if isinstance(exc, FileNotFoundError):
        why = f"not running: {where} does not exist"
    elif isinstance(exc, ConnectionRefusedError):
        why = f"not running: {where} refused the connection"
    else:
        why = f"{exc.strerror or type(exc).__name__} at {where}"
    return EngineError(f"the Docker engine is not reachable ({why})", hint=engine_hint())


class Engine:
    """One Docker engine (DOCKER_HOST, else the default socket), asked with a deadline: made once per
    invocation and passed down (builder.host.services), never a module global.

    Safe to share between threads: the SDK client is made once under a lock, and an engine that timed out
    is remembered under it, so every later question from any thread fails at once with the same error."""

    def __init__(self, where: str | None = None) -> None:
        self.host = where or host()
        self._lock = threading.Lock()
        self._stuck: EngineError | None = None
        self._client: Any = None

    @property
    def seconds(self) -> float:
        """The deadline of every question: answer_seconds(), read when first asked (a bad value is one line
        then, where it matters, not when nothing needs the engine)."""
        return answer_seconds()

    def _get(self, path: str) -> tuple[int, bytes] | None:
        """GET ``path`` from the engine API (status, body); None when only the SDK can reach it."""
        with self._lock:
            if self._stuck is not None:
                raise self._stuck
        seconds = self.seconds
        url = urlparse(self.host)
        try:
            if url.scheme == "unix":
                return _unix_get(url.path, path, seconds)
            if url.scheme in ("tcp", "http") and not os.environ.get("DOCKER_TLS_VERIFY") and url.hostname:
                return _tcp_get(url, path, seconds)
            return None  # ssh, TLS: only the SDK can reach it
        except TimeoutError:
            with self._lock:
                self._stuck = self._stuck or timed_out(seconds, self.host)
                raise self._stuck from None
        except OSError as exc:
            raise _unreachable(exc, self.host) from None

    def ping(self) -> None:
        """An EngineError unless the engine answers /_ping within the deadline (skipped for ssh/TLS hosts)."""
        answer = self._get("/_ping")
        if answer is not None and answer[0] != 200:
            raise EngineError(f"the Docker engine answered /_ping with {answer[0]}", hint=engine_hint())

    def inspect_image(self, ref: str) -> dict[str, Any] | None:
        """The engine's inspection of image ``ref`` (None when absent).

        Straight over the engine socket with the standard library: a no-op build asks this once per
        toolchain, and importing the docker SDK would cost more than the whole check.
        """
        answer = self._get(f"/images/{quote(ref, safe='/:@')}/json")
        if answer is None:
            import docker.errors

            try:
                return dict(self.client().api.inspect_image(ref))
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

    def client(self) -> Any:
        """A connected docker SDK client, made once; a stopped engine is a BuildError."""
        with self._lock:
            if self._client is not None:
                return self._client
        import docker  # imported on first use: it is the slowest import of a no-op run
        import docker.errors

        try:
            self.ping()  # within the deadline, before the SDK's long per-call timeout (imports take minutes)
            api = docker.DockerClient(base_url=self.host, timeout=600) if self.host != host() else \
                docker.from_env(timeout=600)
            api.ping()
        except docker.errors.DockerException as exc:
            raise EngineError(f"the Docker engine is not reachable ({_short(exc)})", hint=engine_hint()) from None
        with self._lock:
            self._client = self._client or api
            return self._client

    def server_version(self) -> str:
        """The engine's version, for doctor: asked through the SDK, after a ping within the deadline."""
        import docker.errors

        try:
            return str(self.client().version().get("Version", "?"))
        except docker.errors.DockerException as exc:
            raise EngineError(f"the Docker engine did not say its version ({_short(exc)})",
                              hint=engine_hint()) from None

    def image_id(self, ref: str) -> str | None:
        """The local image ID of ``ref`` (sha256:...), or None when the engine does not have it."""
        info = self.inspect_image(ref)
        return str(info["Id"]) if info else None

    def require_image(self, ref: str, variable: str = "TOOLCHAIN") -> str:
        """The image ID of ``ref``; a clear error when it is absent."""
        found = self.image_id(ref)
        if found is None:
            raise BuildError(f"image {ref} ({variable}) is not in the Docker engine",
                             hint=absent_image_hint(ref, toolchain=variable in ("TOOLCHAIN", "IMAGER")))
        return found

    def image_labels(self, ref: str) -> dict[str, str]:
        """The labels of image ``ref`` ({} when it has none or is absent)."""
        info = self.inspect_image(ref) or {}
        return dict((info.get("Config") or {}).get("Labels") or {})

    def import_rootfs(self, tarball: Path, ref: str, *, changes: list[str]) -> str:
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
            self.client().api.import_image_from_stream(chunks(), repository=repository, tag=tag, changes=changes)
        except docker.errors.APIError as exc:
            raise BuildError(f"cannot import {ref}: {_short(exc)}") from None
        return self.require_image(ref)

    def save_layer(self, ref: str, diff_id: str, dest: Path) -> None:
        """The layer of image ``ref`` whose uncompressed digest is ``diff_id``, exactly (docker save gives a
        layer's original bytes back), into the file ``dest``; BuildError when the image has no such layer."""
        import hashlib
        import tarfile

        import docker.errors

        class Stream:  # the engine's chunks as a file tarfile reads in stream mode
            def __init__(self, chunks: Iterator[bytes]) -> None:
                self.chunks, self.buffer = chunks, b""

            def read(self, size: int = -1) -> bytes:
                while size < 0 or len(self.buffer) < size:
                    chunk = next(self.chunks, b"")
                    if not chunk:
                        break
                    self.buffer += chunk
                data, self.buffer = (self.buffer, b"") if size < 0 else (self.buffer[:size], self.buffer[size:])
                return data

        try:
            chunks = iter(self.client().api.get_image(ref, chunk_size=1 << 20))
            with tarfile.open(fileobj=Stream(chunks), mode="r|") as saved:  # type: ignore[call-overload]
                for member in saved:
                    if not (member.isfile() and member.name.endswith("layer.tar")):
                        continue
                    digest = hashlib.sha256()
                    source = saved.extractfile(member)
                    with open(dest, "wb") as out:
                        while block := source.read(1 << 20):
                            digest.update(block)
                            out.write(block)
                    if f"sha256:{digest.hexdigest()}" == diff_id:
                        return
        except docker.errors.DockerException as exc:
            raise BuildError(f"cannot export image {ref} from the Docker engine: {_short(exc)}") from None
        except (tarfile.TarError, OSError) as exc:
            raise BuildError(f"cannot read image {ref} as the Docker engine exported it: {exc}") from None
        dest.unlink(missing_ok=True)
        raise BuildError(f"image {ref} has no layer {diff_id} (its rootfs label names one it does not hold)",
                         hint="make it again: builder toolchain ensure --force")

    def run_once(self, ref: str, argv: list[str]) -> bytes:
        """Run ``argv`` in a throw-away container of ``ref`` without network; its stdout."""
        import docker.errors

        try:
            return bytes(self.client().containers.run(ref, argv, network_mode="none", remove=True))
        except docker.errors.DockerException as exc:
            raise BuildError(f"running {' '.join(argv)} in {ref} failed: {_short(exc)}") from None


def absent_image_hint(ref: str, *, toolchain: bool) -> str:
    """How to get an absent image: only the toolchain is made by `builder toolchain ensure`; any other
    image (a recipe's ``image:`` dependency) is built, pulled or loaded by whoever provides it."""
    if not toolchain:
        return f"build or pull that image first: docker pull {ref}, or docker load -i FILE"
    from builder.model.variables import DEFAULTS  # only on this error path: a no-op run never imports it

    if ref == DEFAULTS["TOOLCHAIN"]:
        return "run ./setup.sh or 'builder toolchain ensure'"
    if ref == DEFAULTS["IMAGER"]:
        return "run ./setup.sh or 'builder toolchain ensure --imager'"
    return f"docker pull {ref}, or make it here: builder toolchain ensure --ref {ref}"


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]
