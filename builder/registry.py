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
import urllib.parse
from dataclasses import dataclass

from builder.errors import BuildError

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[:2]
IMAGE_TYPES = MANIFEST_TYPES[2:]
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


def _connection(ref: Reference, seconds: float, host: str | None = None) -> http.client.HTTPConnection:
    if ref.loopback:
        return http.client.HTTPConnection(host or ref.host, timeout=seconds)
    return http.client.HTTPSConnection(host or ref.host, timeout=seconds)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lowercase names
    body: bytes

    @property
    def kind(self) -> str:
        return self.headers.get("content-type", "")


def _request(ref: Reference, method: str, target: str, seconds: float, where: str, what: str,
             body: bytes | None = None, headers: dict[str, str] | None = None) -> Answer:
    """One request, within ``seconds`` for connecting and for each read and write. ``target`` is a path, or an
    absolute URL a registry gave (an upload location). ``what`` says what was asked, for the message."""
    split = urllib.parse.urlsplit(target)
    path = urllib.parse.urlunsplit(("", "", split.path, split.query, "")) if split.netloc else target
    connection = _connection(ref, seconds, split.netloc or None)
    try:
        connection.request(method, path, body=body, headers={"Accept": ", ".join(MANIFEST_TYPES), **(headers or {})})
        response = connection.getresponse()
        answer = response.read(4 * 1024 * 1024)
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, answer)
    except TimeoutError:
        raise BuildError(f"the registry {ref.host} did not answer within {seconds:g} s ({what})",
                         where=where, hint="is it running? REGISTRY_TIMEOUT=SECONDS waits longer") from None
    except ConnectionRefusedError:
        raise BuildError(f"the registry {ref.host} refused the connection ({what})", where=where,
                         hint="is it running, and on that port?") from None
    except OSError as exc:
        raise BuildError(f"cannot reach the registry {ref.host}: {exc.strerror or exc} ({what})",
                         where=where, hint="check the host name and the network") from None
    except http.client.HTTPException as exc:
        raise BuildError(f"{ref.host} gave no valid HTTP answer ({type(exc).__name__}; {what}): is it a registry?",
                         where=where) from None
    finally:
        connection.close()


def _get(ref: Reference, path: str, seconds: float, where: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of one GET for ``ref``."""
    answer = _request(ref, "GET", path, seconds, where, f"asking for {ref}")
    return answer.status, answer.kind, answer.body


def _refused(ref: Reference, answer: Answer, what: str, where: str) -> BuildError:
    """A registry's answer that is not the one asked for, as one line with what to do."""
    if answer.status == 401:
        return BuildError(f"the registry {ref.host} wants credentials ({what}); builder speaks to registries "
                          "anonymously so far", where=where, hint="use a registry that takes anonymous pushes")
    if answer.status == 403:
        return BuildError(f"the registry {ref.host} forbids {what} (HTTP 403)", where=where,
                          hint=f"may {ref.repository} be written there?")
    return BuildError(f"the registry {ref.host} answered HTTP {answer.status} ({what})", where=where,
                      hint="its own log says why")


def check_push_target(registry: str, *, seconds: float, where: str = "REGISTRY") -> None:
    """Before any build: ``registry`` (HOST[:PORT]) speaks the distribution API (GET /v2/) and takes
    anonymous pushes, within ``seconds``."""
    ref = Reference(registry, "builder", "latest")
    answer = _request(ref, "GET", "/v2/", seconds, where, "checking it before the push")
    if answer.status == 200:
        if "docker-distribution-api-version" not in answer.headers and answer.body.strip() not in (b"{}", b""):
            raise BuildError(f"{registry} answered /v2/ with something that is not a registry's answer "
                             f"({answer.kind or 'no content type'})", where=where,
                             hint="REGISTRY=HOST:PORT of an OCI registry")
        return
    raise _refused(ref, answer, "checking it before the push", where)


def push_blob(ref: Reference, blob_digest: str, data: bytes, *, seconds: float, where: str) -> None:
    """The blob ``data`` in ``ref``'s repository, unless it is there already (monolithic upload)."""
    base = f"/v2/{ref.repository}/blobs"
    what = f"uploading {blob_digest[:19]}… to {ref.host}/{ref.repository}"
    if _request(ref, "HEAD", f"{base}/{blob_digest}", seconds, where, what).status == 200:
        return
    started = _request(ref, "POST", f"{base}/uploads/", seconds, where, what, body=b"")
    location = started.headers.get("location")
    if started.status != 202 or not location:
        raise _refused(ref, started, what, where)
    joined = "&" if "?" in location else "?"
    done = _request(ref, "PUT", f"{location}{joined}digest={urllib.parse.quote(blob_digest)}", seconds, where, what,
                    body=data, headers={"Content-Type": "application/octet-stream"})
    if done.status not in (201, 204):
        raise _refused(ref, done, what, where)


def push_manifest(ref: Reference, media_type: str, data: bytes, *, seconds: float, where: str) -> str:
    """PUT ``data`` as ``ref``'s manifest (or index); its digest."""
    what = f"pushing the manifest of {ref}"
    done = _request(ref, "PUT", f"/v2/{ref.repository}/manifests/{ref.tag}", seconds, where, what, body=data,
                    headers={"Content-Type": media_type})
    if done.status not in (201, 204):
        raise _refused(ref, done, what, where)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(ref: Reference, *, seconds: float, where: str) -> dict[str, object] | None:
    """``ref``'s manifest as a descriptor (mediaType, digest, size), or None when the registry has no such tag."""
    answer = _request(ref, "GET", f"/v2/{ref.repository}/manifests/{ref.tag}", seconds, where, f"asking for {ref}")
    if answer.status == 404:
        return None
    if answer.status != 200:
        raise _refused(ref, answer, f"asking for {ref}", where)
    try:
        media = json.loads(answer.body).get("mediaType") or answer.kind.split(";")[0]
    except (ValueError, AttributeError):
        raise BuildError(f"the registry {ref.host} sent a manifest that is not JSON for {ref}", where=where) from None
    return {"mediaType": media, "digest": "sha256:" + hashlib.sha256(answer.body).hexdigest(),
            "size": len(answer.body)}


def platform_digest(ref_text: str, platform: str, *, seconds: float, where: str) -> str:
    """The digest of ``ref_text``'s image for ``platform`` (linux/amd64): the manifest itself for a
    single-platform image (its config must say that platform), the matching entry of an index."""
    ref = Reference.parse(ref_text, where)
    status, kind, body = _get(ref, f"/v2/{ref.repository}/manifests/{ref.tag}", seconds, where)
    if status == 404:
        raise BuildError(f"{ref} is not in the registry (no such name or tag)", where=where,
                         hint="push it first: doit NAME PUSH=1 REGISTRY=… USERNAME=… TAG=…")
    if status != 200:
        raise _refused(ref, Answer(status, {}, b""), f"asking for {ref}", where)
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
