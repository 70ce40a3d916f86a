"""The Docker engine, through the docker SDK: reachability, images, import, tags, push."""

from __future__ import annotations

from functools import cache
from typing import IO, Any

from builder.errors import BuildError

ENGINE_HINT = "start it with ./setup.sh, or: dockerd --bridge=none --iptables=false --ip-forward=false &"


@cache
def client() -> Any:
    """A connected docker SDK client; a stopped engine is a BuildError."""
    import docker  # imported on first use: it is the slowest import of a no-op run
    import docker.errors

    try:
        api = docker.from_env(timeout=600)
        api.ping()
    except docker.errors.DockerException as exc:
        raise BuildError(f"the Docker engine is not reachable ({_short(exc)})", hint=ENGINE_HINT) from None
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
    import docker.errors

    try:
        return str(client().images.get(ref).id)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        raise BuildError(f"cannot inspect image {ref}: {_short(exc)}") from None


def require_image(ref: str, variable: str = "TOOLCHAIN") -> str:
    """The image ID of ``ref``; a clear error when it is absent."""
    found = image_id(ref)
    if found is None:
        raise BuildError(f"image {ref} ({variable}) is not in the Docker engine",
                         hint="run ./setup.sh or 'builder toolchain ensure'")
    return found


def image_labels(ref: str) -> dict[str, str]:
    return dict(client().images.get(ref).labels or {})


def import_rootfs(stream: IO[bytes], ref: str, *, changes: list[str]) -> str:
    """``docker import`` a root filesystem tar read from ``stream`` as ``ref``; its image ID."""
    import docker.errors
    from docker.utils import parse_repository_tag

    repository, tag = parse_repository_tag(ref)
    try:
        client().api.import_image_from_stream(stream, repository=repository, tag=tag, changes=changes)
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
