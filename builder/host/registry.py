"""Speak to an OCI registry (distribution API v2): what an image reference is now (the digest of its image
for one platform: a prebuilt package, PKG_NAME=ref, is known by that digest, so a new push to the same tag
is a new input), and pushes of blobs and manifests. Every request goes through builder.host.http within
REGISTRY_TIMEOUT (connecting, each read and write, and the request as a whole, plus a second per MiB an
upload sends); a registry that does not answer is one line, never a hang.

Loopback registries (127.0.0.0/8, localhost, ::1) are spoken to over plain HTTP, as the Docker engine does;
every other one over HTTPS. No proxy is used, as before: a registry is reached directly.

Authentication is the distribution spec's. A request goes out anonymous (or with what this process already
holds for that registry); on ``401`` the ``WWW-Authenticate`` challenge says how:

- ``Basic realm=…``: the registry's credentials are sent as HTTP basic auth, and from then on with every
  request to it;
- ``Bearer realm=…,service=…,scope=…``: a token is asked of the realm (GET with ``service`` and ``scope``,
  with the basic credentials when there are some, anonymous otherwise: real registries give anonymous
  pulls a token too), read from ``token`` or ``access_token``, and sent as ``Authorization: Bearer``.
  Tokens are kept per (registry, scope) by the ``Session`` for the life of the process, behind a lock
  (builds may run in parallel); one that has expired draws a 401 and is fetched again once.

Credentials are read by builder.host.credentials from the docker client's config.json (``auths``,
``credHelpers``, ``credsStore``), only when a registry asks for them. A 401 with none is one line naming
the registry and where they were looked for. No credential or token is ever shown or logged.
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from builder.core.errors import BuildError
from builder.host import http
from builder.host.credentials import DockerConfig, Login, redact, scrub
from builder.model.reference import Reference

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[:2]
IMAGE_TYPES = MANIFEST_TYPES[2:]
MAX_ANSWER = 4 * 1024 * 1024  # a manifest, config or token; never a layer
UPLOAD_RATE = 1 << 20  # bytes per second an upload may be as slow as: its body adds size / rate to the deadline

__all__ = ["Reference", "Session", "check_push_target", "push_blob", "push_manifest", "descriptor",
           "platform_digest"]


# --- challenges, scopes and the session ------------------------------------------------------------------

@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: its scheme (lowercase) and parameters."""

    scheme: str
    params: dict[str, str]

    @classmethod
    def parse(cls, header: str) -> Challenge | None:
        """The first Basic or Bearer challenge in ``header`` (RFC 7235's auth-param grammar), or None."""
        scheme, _, rest = header.strip().partition(" ")
        if scheme.lower() not in ("basic", "bearer"):
            return None
        params: dict[str, str] = {}
        at = 0
        while at < len(rest):
            while at < len(rest) and rest[at] in " ,":
                at += 1
            key_end = rest.find("=", at)
            if key_end < 0:
                break
            key, at = rest[at:key_end].strip().lower(), key_end + 1
            if at < len(rest) and rest[at] == '"':
                value, at = "", at + 1
                while at < len(rest) and rest[at] != '"':
                    if rest[at] == "\\" and at + 1 < len(rest):
                        at += 1
                    value += rest[at]
                    at += 1
                at += 1
            else:
                end = rest.find(",", at)
                end = len(rest) if end < 0 else end
                value, at = rest[at:end].strip(), end
            params[key] = value
        return cls(scheme.lower(), params)


def _covers(held: str, wanted: str) -> bool:
    """A token for scope ``held`` serves a request needing ``wanted`` (same resource, a superset of actions)."""
    if held == wanted:
        return True
    held_kind, _, held_actions = held.rpartition(":")
    wanted_kind, _, wanted_actions = wanted.rpartition(":")
    return bool(held_kind) and held_kind == wanted_kind and \
        set(wanted_actions.split(",")) <= set(held_actions.split(","))


class Session:
    """What one invocation holds for registries: their credentials (read once per registry) and the tokens
    they gave, per (registry, scope), kept as long as the invocation runs, as the distribution spec intends.
    Made once and passed down (builder.host.services); safe to use from several threads."""

    def __init__(self, config: DockerConfig | None = None) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str], str] = {}
        self._basic: dict[str, Login] = {}  # registries that asked for basic credentials
        self._logins: dict[str, Login | None] = {}
        self._fetching: dict[tuple[str, str], threading.Lock] = {}

    def config(self) -> DockerConfig:
        with self._lock:
            if self._config is None:
                self._config = DockerConfig.read()
            return self._config

    def login(self, registry: str, *, seconds: float) -> Login | None:
        with self._lock:
            if registry in self._logins:
                return self._logins[registry]
        found = self.config().login(registry, seconds=seconds)
        with self._lock:
            return self._logins.setdefault(registry, found)

    def authorization(self, registry: str, scope: str) -> str | None:
        """The Authorization header this session would send to ``registry`` for ``scope`` now, if any."""
        with self._lock:
            for (host, held), token in self._tokens.items():
                if host == registry and _covers(held, scope):
                    return f"Bearer {token}"
            login = self._basic.get(registry)
            return login.basic if login else None

    def forget(self, registry: str, authorization: str) -> None:
        """Drop what drew a 401 (an expired token, changed credentials)."""
        with self._lock:
            for key, token in list(self._tokens.items()):
                if key[0] == registry and authorization == f"Bearer {token}":
                    del self._tokens[key]
            if registry in self._basic and self._basic[registry].basic == authorization:
                del self._basic[registry]

    def use_basic(self, registry: str, login: Login) -> None:
        with self._lock:
            self._basic[registry] = login

    def token(self, key: tuple[str, str]) -> str | None:
        with self._lock:
            return self._tokens.get(key)

    def keep_token(self, key: tuple[str, str], token: str) -> None:
        with self._lock:
            self._tokens[key] = token

    @contextmanager
    def fetching(self, key: tuple[str, str]) -> Iterator[None]:
        """One token fetch per key at a time: a second thread waits for the first one's token."""
        with self._lock:
            lock = self._fetching.setdefault(key, threading.Lock())
        with lock:
            yield


# --- one request -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lowercase names
    body: bytes

    @property
    def kind(self) -> str:
        return self.headers.get("content-type", "")


def _base(ref: Reference) -> str:
    return f"{'http' if ref.loopback else 'https'}://{ref.api_host}"


def _exchange(url: str, limits: http.Limits, who: str, what: str, where: str, *, method: str = "GET",
              body: bytes | None = None, headers: dict[str, str] | None = None, authorization: str | None = None,
              secrets: list[str] | None = None) -> Answer:
    """One HTTP exchange; no answer is one line saying ``who`` did not answer and why."""
    try:
        with http.request(url, limits, method=method, body=body, headers=headers, authorization=authorization,
                          proxies=False) as response:
            return Answer(response.status, response.headers, response.read(MAX_ANSWER))
    except http.Failure as failure:
        reason = failure.reason
        if failure.kind in ("deadline", "stall"):
            seconds = limits.total if failure.kind == "deadline" else limits.stall
            raise BuildError(f"{who} did not answer within {seconds:g} s ({what})", where=where,
                             hint="is it running? REGISTRY_TIMEOUT=SECONDS waits longer") from None
        if failure.kind == "refused":
            raise BuildError(f"{who} refused the connection ({what})", where=where,
                             hint="is it running, and on that port?") from None
        if failure.kind == "protocol" and not isinstance(reason, OSError):
            raise BuildError(f"{who.removeprefix('the registry ')} gave no valid HTTP answer "
                             f"({type(reason).__name__}; {what}): is it a registry?", where=where) from None
        text = scrub(getattr(reason, "strerror", None) or failure.text, secrets or [])
        raise BuildError(f"cannot reach {who}: {text} ({what})", where=where,
                         hint="check the host name and the network") from None


def _request(ref: Reference, method: str, target: str, seconds: float, where: str, what: str,
             body: bytes | None = None, headers: dict[str, str] | None = None, *, scope: str = "",
             session: Session) -> Answer:
    """One request, authenticated as the registry asks, within ``seconds`` (see the module's docstring).
    ``target`` is a path, or an absolute URL the registry gave (an upload location); ``scope`` the token
    scope it needs (``repository:NAME:pull``); ``what`` says what was asked, for a message."""
    url = urllib.parse.urljoin(_base(ref) + "/", target)
    limits = http.Limits(stall=seconds, total=seconds + len(body or b"") / UPLOAD_RATE)
    sent = {"Accept": ", ".join(MANIFEST_TYPES), **(headers or {})}
    who = f"the registry {ref.registry}"
    held = session.authorization(ref.registry, scope)
    answer = _exchange(url, limits, who, what, where, method=method, body=body, headers=sent, authorization=held)
    if answer.status != 401:
        return answer
    if held:
        session.forget(ref.registry, held)
    challenge = Challenge.parse(answer.headers.get("www-authenticate", ""))
    if challenge is None:
        return answer  # a 401 that says no way in: the caller names it
    login = session.login(ref.registry, seconds=seconds)
    if challenge.scheme == "basic":
        if login is None:
            raise _no_credentials(ref, what, where, session)
        authorization = login.basic
    else:
        authorization = "Bearer " + _token(ref, challenge, scope, login, seconds, what, where, session)
    answer = _exchange(url, limits, who, what, where, method=method, body=body, headers=sent,
                       authorization=authorization, secrets=login.secrets if login else None)
    if answer.status == 401:
        if login is None:
            raise _no_credentials(ref, what, where, session)
        raise BuildError(f"the registry {ref.registry} refused the credentials from {login.origin} ({what})",
                         where=where, hint=f"docker login {ref.registry} stores new ones")
    if challenge.scheme == "basic" and login is not None:
        session.use_basic(ref.registry, login)
    return answer


def _token(ref: Reference, challenge: Challenge, scope: str, login: Login | None, seconds: float, what: str,
           where: str, session: Session) -> str:
    """A bearer token for ``scope`` (and the challenge's own) from the challenge's realm, kept in the session."""
    realm = challenge.params.get("realm", "")
    asked = challenge.params.get("scope", "")
    scopes = [scope] if scope else []
    for extra in asked.split():
        if not any(_covers(have, extra) for have in scopes):
            scopes.append(extra)
    key = (ref.registry, scope or asked)
    split = urllib.parse.urlsplit(realm)
    shown = redact(realm)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise BuildError(f"the registry {ref.registry} names no token endpoint it can be asked ({what}): realm "
                         f"{scrub(shown, [])!r} in its WWW-Authenticate", where=where)
    loopback = split.hostname in ("localhost", "::1") or split.hostname.startswith("127.")
    if login is not None and split.scheme == "http" and not loopback:
        raise BuildError(f"the registry {ref.registry} names a token endpoint over plain HTTP ({shown}); "
                         f"credentials are sent there over HTTPS only ({what})", where=where)
    with session.fetching(key):
        kept = session.token(key)
        if kept:
            return kept
        query = urllib.parse.urlencode([("service", challenge.params.get("service", ""))]
                                       + [("scope", s) for s in scopes])
        url = realm + ("&" if split.query else "?") + query
        who = f"the token endpoint {shown} of the registry {ref.registry}"
        answer = _exchange(url, http.Limits(stall=seconds, total=seconds), who, what, where,
                           headers={"Accept": "application/json"},
                           authorization=login.basic if login else None, secrets=login.secrets if login else None)
        if answer.status in (401, 403):
            if login is None:
                raise _no_credentials(ref, what, where, session)
            raise BuildError(f"{who} refused the credentials from {login.origin} ({what})", where=where,
                             hint=f"docker login {ref.registry} stores new ones")
        if answer.status != 200:
            raise BuildError(f"{who} answered HTTP {answer.status} ({what})", where=where,
                             hint="its own log says why")
        try:
            document = json.loads(answer.body)
        except ValueError:
            kind = answer.kind.split(";")[0] or "no content type"
            raise BuildError(f"{who} answered with something that is not a token: not JSON ({kind}; {what})",
                             where=where) from None
        token = (document.get("token") or document.get("access_token")) if isinstance(document, dict) else None
        if not isinstance(token, str) or not token:
            raise BuildError(f"{who} answered with something that is not a token: JSON without 'token' or "
                             f"'access_token' ({what})", where=where)
        session.keep_token(key, token)
        return token


def _no_credentials(ref: Reference, what: str, where: str, session: Session) -> BuildError:
    origin = session.config().origin(ref.registry)
    return BuildError(f"the registry {ref.registry} wants credentials ({what}) and there are none for it in "
                      f"{origin}", where=where,
                      hint=f"docker login {ref.registry} stores them there; DOCKER_CONFIG=DIR reads DIR/config.json")


def _refused(ref: Reference, answer: Answer, what: str, where: str) -> BuildError:
    """A registry's answer that is not the one asked for, as one line with what to do."""
    if answer.status == 401:
        return BuildError(f"the registry {ref.registry} wants credentials ({what}) and says no way to give them "
                          "(no WWW-Authenticate challenge)", where=where, hint="its own log says why")
    if answer.status == 403:
        return BuildError(f"the registry {ref.registry} forbids {what} (HTTP 403)", where=where,
                          hint=f"may {ref.repository} be written there?")
    return BuildError(f"the registry {ref.registry} answered HTTP {answer.status} ({what})", where=where,
                      hint="its own log says why")


def _scope(ref: Reference, actions: str) -> str:
    return f"repository:{ref.repository}:{actions}"


# --- what the project asks -------------------------------------------------------------------------------

def check_push_target(registry: str, *, seconds: float, where: str = "REGISTRY",
                      session: Session) -> None:
    """Before any build: ``registry`` (HOST[:PORT]) speaks the distribution API (GET /v2/), within
    ``seconds``, and lets this process in (anonymously, or with the credentials it asks for)."""
    ref = Reference.parse(f"{registry}/builder", where)
    answer = _request(ref, "GET", "/v2/", seconds, where, "checking it before the push", session=session)
    if answer.status == 200:
        if "docker-distribution-api-version" not in answer.headers and answer.body.strip() not in (b"{}", b""):
            raise BuildError(f"{registry} answered /v2/ with something that is not a registry's answer "
                             f"({answer.kind or 'no content type'})", where=where,
                             hint="REGISTRY=HOST:PORT of an OCI registry")
        return
    raise _refused(ref, answer, "checking it before the push", where)


def push_blob(ref: Reference, blob_digest: str, data: bytes, *, seconds: float, where: str,
              session: Session) -> None:
    """The blob ``data`` in ``ref``'s repository, unless it is there already (monolithic upload)."""
    base = f"/v2/{ref.repository}/blobs"
    what = f"uploading {blob_digest[:19]}… to {ref.registry}/{ref.repository}"
    scope = _scope(ref, "pull,push")
    if _request(ref, "HEAD", f"{base}/{blob_digest}", seconds, where, what, scope=scope,
                session=session).status == 200:
        return
    started = _request(ref, "POST", f"{base}/uploads/", seconds, where, what, body=b"", scope=scope, session=session)
    location = started.headers.get("location")
    if started.status != 202 or not location:
        raise _refused(ref, started, what, where)
    joined = "&" if "?" in location else "?"
    done = _request(ref, "PUT", f"{location}{joined}digest={urllib.parse.quote(blob_digest)}", seconds, where, what,
                    body=data, headers={"Content-Type": "application/octet-stream"}, scope=scope, session=session)
    if done.status not in (201, 204):
        raise _refused(ref, done, what, where)


def push_manifest(ref: Reference, media_type: str, data: bytes, *, seconds: float, where: str,
                  session: Session) -> str:
    """PUT ``data`` as ``ref``'s manifest (or index); its digest."""
    what = f"pushing the manifest of {ref}"
    done = _request(ref, "PUT", f"/v2/{ref.repository}/manifests/{ref.name}", seconds, where, what, body=data,
                    headers={"Content-Type": media_type}, scope=_scope(ref, "pull,push"), session=session)
    if done.status not in (201, 204):
        raise _refused(ref, done, what, where)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(ref: Reference, *, seconds: float, where: str,
               session: Session) -> dict[str, object] | None:
    """``ref``'s manifest as a descriptor (mediaType, digest, size), or None when the registry has no such tag."""
    found = manifest(ref, seconds=seconds, where=where, session=session)
    if found is None:
        return None
    media, body = found
    return {"mediaType": media, "digest": "sha256:" + hashlib.sha256(body).hexdigest(), "size": len(body)}


def platform_digest(ref_text: str, platform: str, *, seconds: float, where: str,
                    session: Session) -> str:
    """The digest of ``ref_text``'s image for ``platform`` (linux/amd64): the manifest itself for a
    single-platform image (its config must say that platform), the matching entry of an index."""
    ref = Reference.parse(ref_text, where)
    what, scope = f"asking for {ref}", _scope(ref, "pull")
    answer = _request(ref, "GET", f"/v2/{ref.repository}/manifests/{ref.name}", seconds, where, what, scope=scope,
                      session=session)
    if answer.status == 404:
        raise BuildError(f"{ref} is not in the registry (no such name or tag)", where=where,
                         hint="push it first: doit NAME PUSH=1 REGISTRY=… USERNAME=… TAG=…")
    if answer.status != 200:
        raise _refused(ref, Answer(answer.status, {}, b""), what, where)
    try:
        manifest = json.loads(answer.body)
    except ValueError:
        raise BuildError(f"the registry {ref.registry} sent a manifest that is not JSON for {ref}",
                         where=where) from None
    if not isinstance(manifest, dict):
        raise BuildError(f"the registry {ref.registry} sent a manifest that is not a JSON object for {ref}",
                         where=where)
    media = str(manifest.get("mediaType") or answer.kind.split(";")[0])
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
    blob = _request(ref, "GET", f"/v2/{ref.repository}/blobs/{config}", seconds, where, what, scope=scope,
                    session=session)
    try:
        arch = json.loads(blob.body).get("architecture") if blob.status == 200 else None
    except (ValueError, AttributeError):
        arch = None
    if arch and arch != platform.split("/", 1)[1]:
        raise BuildError(f"{ref} is a {arch} image, not {platform}", where=where)
    return "sha256:" + hashlib.sha256(answer.body).hexdigest()  # a manifest's digest is that of its bytes


def manifest(ref: Reference, *, seconds: float, where: str, session: Session) -> tuple[str, bytes] | None:
    """``ref``'s manifest (or index): its media type and its bytes exactly, or None when there is none."""
    answer = _request(ref, "GET", f"/v2/{ref.repository}/manifests/{ref.name}", seconds, where, f"asking for {ref}",
                      scope=_scope(ref, "pull"), session=session)
    if answer.status == 404:
        return None
    if answer.status != 200:
        raise _refused(ref, answer, f"asking for {ref}", where)
    try:
        media = json.loads(answer.body).get("mediaType") or answer.kind.split(";")[0]
    except (ValueError, AttributeError):
        raise BuildError(f"the registry {ref.registry} sent a manifest that is not JSON for {ref}",
                         where=where) from None
    return str(media), answer.body


def blob(ref: Reference, blob_digest: str, *, seconds: float, where: str, session: Session) -> bytes:
    """A small blob of ``ref``'s repository (a signature payload, a config), checked against its digest."""
    what = f"fetching {blob_digest[:19]}… from {ref.registry}/{ref.repository}"
    answer = _request(ref, "GET", f"/v2/{ref.repository}/blobs/{blob_digest}", seconds, where, what,
                      scope=_scope(ref, "pull"), session=session)
    if answer.status != 200:
        raise _refused(ref, answer, what, where)
    if "sha256:" + hashlib.sha256(answer.body).hexdigest() != blob_digest:
        raise BuildError(f"the registry {ref.registry} sent other bytes than {blob_digest} ({what})", where=where)
    return answer.body
