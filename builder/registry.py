"""Ask an OCI registry (distribution API v2) what an image reference is now: the digest of the image for one
platform. A prebuilt package (PKG_NAME=ref) is known by that digest, so a new push to the same tag is a new
input. Every request has a deadline; a registry that does not answer is one line, never a hang.

Loopback registries (127.0.0.0/8, localhost, ::1) are spoken to over plain HTTP, as the Docker engine does;
every other one over HTTPS. Anonymous access only: a registry that asks for credentials is named as such.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
from dataclasses import dataclass

from builder.errors import BuildError

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[:2]
REFERENCE = re.compile(r"^(?P<host>[^/]+)/(?P<repo>[a-z0-9][a-z0-9._/-]*?)(?::(?P<tag>[\w][\w.-]{0,127}))?"
                       r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")


@dataclass(frozen=True)
class Reference:
    host: str
    repository: str
    tag: str

    @classmethod
    def parse(cls, ref: str, where: str) -> Reference:
        match = REFERENCE.match(ref)
        if not match or ("." not in match["host"] and ":" not in match["host"] and match["host"] != "localhost"):
            raise BuildError(f"{ref!r} is not a registry image reference; expected HOST[:PORT]/NAME:TAG",
                             where=where)
        return cls(match["host"], match["repo"], match["digest"] or match["tag"] or "latest")

    @property
    def loopback(self) -> bool:
        name = self.host.rsplit(":", 1)[0] if not self.host.startswith("[") else self.host[1:].split("]")[0]
        return name == "localhost" or name.startswith("127.") or name == "::1"

    def __str__(self) -> str:
        sep = "@" if self.tag.startswith("sha256:") else ":"
        return f"{self.host}/{self.repository}{sep}{self.tag}"


def _connection(ref: Reference, seconds: float) -> http.client.HTTPConnection:
    if ref.loopback:
        return http.client.HTTPConnection(ref.host, timeout=seconds)
    return http.client.HTTPSConnection(ref.host, timeout=seconds)


def _get(ref: Reference, path: str, seconds: float, where: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of one GET, within ``seconds`` for connecting and each read."""
    connection = _connection(ref, seconds)
    try:
        connection.request("GET", path, headers={"Accept": ", ".join(MANIFEST_TYPES)})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read(4 * 1024 * 1024)
    except TimeoutError:
        raise BuildError(f"the registry {ref.host} did not answer within {seconds:g} s (asking for {ref})",
                         where=where, hint="is it running? REGISTRY_TIMEOUT=SECONDS waits longer") from None
    except ConnectionRefusedError:
        raise BuildError(f"the registry {ref.host} refused the connection (asking for {ref})", where=where,
                         hint="is it running, and on that port?") from None
    except OSError as exc:
        raise BuildError(f"cannot reach the registry {ref.host}: {exc.strerror or exc} (asking for {ref})",
                         where=where) from None
    except http.client.HTTPException as exc:
        raise BuildError(f"the registry {ref.host} gave no valid HTTP answer ({type(exc).__name__}) for {ref}",
                         where=where) from None
    finally:
        connection.close()


def platform_digest(ref_text: str, platform: str, *, seconds: float, where: str) -> str:
    """The digest of ``ref_text``'s image for ``platform`` (linux/amd64): the manifest itself for a
    single-platform image (its config must say that platform), the matching entry of an index."""
    ref = Reference.parse(ref_text, where)
    status, kind, body = _get(ref, f"/v2/{ref.repository}/manifests/{ref.tag}", seconds, where)
    if status == 404:
        raise BuildError(f"{ref} is not in the registry (no such name or tag)", where=where,
                         hint="push it first: doit NAME PUSH=1 REGISTRY=… USERNAME=… TAG=…")
    if status == 401:
        raise BuildError(f"the registry {ref.host} wants credentials for {ref}; only anonymous pulls are "
                         "supported", where=where)
    if status != 200:
        raise BuildError(f"the registry {ref.host} answered HTTP {status} for {ref}", where=where)
    try:
        manifest = json.loads(body)
    except ValueError:
        raise BuildError(f"the registry {ref.host} sent a manifest that is not JSON for {ref}", where=where) from None
    if not isinstance(manifest, dict):
        raise BuildError(f"the registry {ref.host} sent a manifest that is not a JSON object for {ref}", where=where)
    media = str(manifest.get("mediaType") or kind.split(";")[0])
    if media in INDEX_TYPES:
        os_name, wanted = platform.split("/", 1)
        for entry in manifest.get("manifests") or []:
            entry_platform = entry.get("platform") or {}
            if entry_platform.get("os") == os_name and entry_platform.get("architecture") == wanted:
                return str(entry["digest"])
        have = sorted(f"{(e.get('platform') or {}).get('os')}/{(e.get('platform') or {}).get('architecture')}"
                      for e in manifest.get("manifests") or [])
        raise BuildError(f"{ref} has no image for {platform} (it has {', '.join(have) or 'none'})", where=where)
    config = (manifest.get("config") or {}).get("digest")
    if not config:
        raise BuildError(f"{ref} is not an image manifest ({media or 'no media type'})", where=where)
    status, _, blob = _get(ref, f"/v2/{ref.repository}/blobs/{config}", seconds, where)
    try:
        arch = json.loads(blob).get("architecture") if status == 200 else None
    except (ValueError, AttributeError):
        arch = None
    if arch and arch != platform.split("/", 1)[1]:
        raise BuildError(f"{ref} is a {arch} image, not {platform}", where=where)
    return "sha256:" + hashlib.sha256(body).hexdigest()  # a manifest's digest is that of its bytes
