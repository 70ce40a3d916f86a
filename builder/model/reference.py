"""Image references, parsed once by the distribution rules: ``[HOST[:PORT]/]PATH[:TAG][@DIGEST]``.

The grammar is docker-image-py's port of distribution/reference (the Go package the engine, BuildKit and
the registry use): the first component is a registry host when it contains ``.`` or ``:`` or is
``localhost``; path components are lowercase ``[a-z0-9]`` runs joined by ``.``, ``_``, ``__`` or dashes; a
tag is at most 128 of ``[A-Za-z0-9_.-]``; a digest is ``algorithm:hex`` of the algorithm's length. Defaults
are docker's: no host is ``docker.io`` (whose API is served at ``registry-1.docker.io``), a one-component
name there is ``library/NAME``, and no tag and no digest is ``latest``.

This is the project's only parser of image references: template variables (TOOLCHAIN, a recipe's
``image:``), PKG_NAME / PKGS_PREFIX / REGISTRY and what the registry client asks for all come through it.
"""

from __future__ import annotations

from dataclasses import dataclass

from builder.core.errors import BuildError

DEFAULT_REGISTRY = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"  # where docker.io's distribution API answers
DOCKER_HUB_CREDENTIALS = "https://index.docker.io/v1/"  # docker login's key for docker.io in config.json
MAX_LENGTH = 255
REGISTRY_FORMS = "expected HOST[:PORT]/NAME:TAG"


@dataclass(frozen=True)
class Reference:
    """A parsed image reference: ``registry`` (host[:port], defaults applied), ``repository`` (the path in
    that registry), ``tag`` (``latest`` when neither a tag nor a digest was given) and ``digest``."""

    registry: str
    repository: str
    tag: str | None = "latest"
    digest: str | None = None
    explicit_registry: bool = True  # the text named its registry (no docker.io default)

    @classmethod
    def of(cls, text: str) -> Reference:
        """``text`` parsed with docker's defaults; a ValueError saying what is wrong otherwise."""
        from docker_image import digest as digests  # a no-op run parses no reference: imported when needed
        from docker_image import reference as grammar

        if len(text) > MAX_LENGTH:
            raise ValueError(f"longer than {MAX_LENGTH} characters")
        if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):  # the grammar's $ takes a final newline
            raise ValueError("it holds a space or a control character")
        try:
            parsed = grammar.Reference.parse_normalized_named(text)
        except (grammar.InvalidReference, digests.InvalidDigest, ValueError) as exc:
            raise ValueError(str(exc) or type(exc).__name__) from None
        registry, repository = parsed.split_hostname()
        first = text.split("/", 1)[0]
        explicit = "/" in text and ("." in first or ":" in first or first == "localhost")
        tag, digest = parsed["tag"], parsed["digest"]
        return cls(registry, repository, tag if tag or digest else "latest", digest, explicit)

    @classmethod
    def parse(cls, text: str, where: str) -> Reference:
        """A reference that names its registry (PKG_NAME, PKGS_PREFIX, REGISTRY): a BuildError otherwise."""
        try:
            ref = cls.of(text)
        except ValueError:
            ref = None
        if ref is None or not ref.explicit_registry:
            raise BuildError(f"{text!r} is not a registry image reference; {REGISTRY_FORMS}", where=where)
        return ref

    @property
    def name(self) -> str:
        """What the distribution API calls this image in a path: a digest when there is one, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def api_host(self) -> str:
        """Where the registry's distribution API answers (docker.io's is another host)."""
        return DOCKER_HUB_API if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def loopback(self) -> bool:
        """127.0.0.0/8, localhost or ::1: spoken to over plain HTTP, as the Docker engine does."""
        host = self.registry
        name = host[1:].split("]")[0] if host.startswith("[") else host.rsplit(":", 1)[0]
        return name == "localhost" or name.startswith("127.") or name == "::1"

    def with_name(self, tag: str) -> Reference:
        """The same repository under another tag (or ``sha256:…`` digest)."""
        if tag.startswith("sha256:"):
            return Reference(self.registry, self.repository, None, tag, self.explicit_registry)
        return Reference(self.registry, self.repository, tag, None, self.explicit_registry)

    def __str__(self) -> str:
        return (f"{self.registry}/{self.repository}" + (f":{self.tag}" if self.tag else "")
                + (f"@{self.digest}" if self.digest else ""))
