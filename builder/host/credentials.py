"""Every credential the project sends, where it is read from, and how it is kept out of what is shown.

Sources (builder/host/sources.py): a URL's ``user:password@`` (sent to that scheme, host and port only), else the
``machine HOST`` (or ``default``) entry of the netrc file, $NETRC or ~/.netrc.

Registries (builder/host/registry.py): the Docker client's own file, ``$DOCKER_CONFIG/config.json`` when
DOCKER_CONFIG is set, else ``~/.docker/config.json``, read as the docker CLI reads it:

- ``credHelpers``: registry host -> NAME, and ``credsStore``: NAME for every other registry. A registry
  with a helper gets what ``docker-credential-NAME get`` prints for its server URL (on stdin); the
  ``auths`` entry is then not used, as with docker.
- ``auths``: registry key -> ``{"auth": base64("USER:PASSWORD")}`` or ``{"username": …, "password": …}``.
  A key may be ``host:port``, ``https://host:port`` or ``https://host/v1/`` (what older docker logins
  wrote); docker.io is also ``https://index.docker.io/v1/``.

Written here rather than taken from the docker SDK's ``docker.auth``: that module reads a malformed file as
an empty one without a word, ignores ``username``/``password`` entries, and runs a helper with no timeout.

Nothing here prints a secret: messages name the file, the key and the helper, never a value, and ``redact``
/ ``scrub`` make URLs and foreign text safe to show.
"""

from __future__ import annotations

import base64
import binascii
import json
import netrc
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from builder.core.errors import BuildError

AUTHORITY = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)")
HELPER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
HUB_NAMES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
HUB_SERVER = "https://index.docker.io/v1/"  # docker login's name for docker.io, in config.json and for helpers
NOT_FOUND = "credentials not found"  # what docker-credential-* helpers print for a server they do not know


# --- what may be shown -----------------------------------------------------------------------------------

def redact(url: str) -> str:
    """The URL as it may be shown: a password (or a user name alone, often a token) becomes ***.

    A pattern, not urlsplit: this must work on any text, a malformed URL included."""
    found = AUTHORITY.match(url)
    if not found or "@" not in found[2]:
        return url
    userinfo, _, hostport = found[2].rpartition("@")
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:***@{hostport}" if colon else f"***@{hostport}"
    return found[1] + shown + url[found.end():]


def scrub(text: str, secrets: list[str], limit: int = 200) -> str:
    """Server- or program-made text made safe for one line: no secrets, no control characters, not too long."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[:limit] + "..."


# --- sources: the URL's userinfo, else netrc -------------------------------------------------------------

def netrc_path() -> Path:
    """The netrc file: $NETRC when set, else ~/.netrc."""
    return Path(os.environ.get("NETRC") or Path.home() / ".netrc")


def netrc_credentials(host: str, path: Path | None = None) -> tuple[str, str] | None:
    """(login, password) of the netrc entry for ``host`` (or its ``default`` entry); None without one or a file.

    The file is named explicitly: Python 3.11's netrc reads ~/.netrc alone, whatever $NETRC says.
    """
    path = path or netrc_path()
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except FileNotFoundError:
        return None
    except netrc.NetrcParseError as exc:
        # "bad follower token 'WORD'": WORD may be half of a password with a space in it; never show it
        reason = re.sub(r"^(bad \w+ token) .*", r"\1 (not shown: it may be a secret)", exc.msg)
        raise BuildError(f"malformed netrc file: {reason}", where=f"{exc.filename or path}:{exc.lineno}",
                         hint="each entry is: machine HOST login USER password PASSWORD") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else "not UTF-8 text"
        raise BuildError(f"cannot read the netrc file: {reason}", where=str(path)) from None
    if entry is None:
        return None
    login, _, password = entry
    return (login, password or "") if login or password else None


@dataclass(frozen=True)
class Target:
    """A URL split into what urllib is given (no userinfo: urllib would take it for the port) and credentials."""

    url: str
    host: str
    credentials: tuple[str, str] | None

    @classmethod
    def of(cls, url: str) -> Target:
        parts = urlsplit(url)
        userinfo, at, hostport = parts.netloc.rpartition("@")
        host = parts.hostname or ""
        if not at:
            return cls(url, host, netrc_credentials(host) if host else None)
        user, _, password = userinfo.partition(":")
        return cls(url.replace(parts.netloc, hostport, 1), host, (unquote(user), unquote(password)))

    @property
    def secrets(self) -> list[str]:
        """What must never be shown: the password (or a lone user name, often a token), raw and decoded."""
        if self.credentials is None:
            return []
        user, password = self.credentials
        secret = password or user
        return [s for s in {secret, quote(secret, safe="")} if s]


# --- registries: the docker client's config.json ---------------------------------------------------------

def docker_config_path() -> Path:
    """$DOCKER_CONFIG/config.json when DOCKER_CONFIG is set, else ~/.docker/config.json (as the docker CLI)."""
    directory = os.environ.get("DOCKER_CONFIG")
    return Path(directory) / "config.json" if directory else Path.home() / ".docker" / "config.json"


@dataclass(frozen=True)
class Login:
    """A user name and password (or token) for one registry, and where they were read from (for messages)."""

    username: str
    password: str = field(repr=False)
    origin: str

    @property
    def basic(self) -> str:
        """The value of an ``Authorization`` header that sends these as HTTP basic credentials."""
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    @property
    def secrets(self) -> list[str]:
        return [s for s in (self.password, self.basic.removeprefix("Basic ")) if s]


def _hostname(key: str) -> str:
    """A config.json key as the registry host it names: no scheme, no path; docker.io for Docker Hub's names."""
    host = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", key).split("/", 1)[0]
    return "docker.io" if host in HUB_NAMES else host


@dataclass(frozen=True)
class DockerConfig:
    """The credential part of one config.json, checked as a whole when read."""

    path: Path
    auths: dict[str, dict[str, object]]
    helpers: dict[str, str]  # credHelpers: registry host (as written) -> helper NAME
    store: str | None  # credsStore

    @classmethod
    def read(cls, path: Path | None = None) -> DockerConfig:
        """The file at ``path`` (docker_config_path()); an absent file is an empty config. Anything malformed
        is one BuildError naming the file (and line, or key) and what is wrong, never a value."""
        path = path or docker_config_path()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path, {}, {}, None)
        except (OSError, UnicodeDecodeError) as exc:
            reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else "not UTF-8 text"
            raise BuildError(f"cannot read the docker config: {reason}", where=str(path)) from None
        try:
            document = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise BuildError(f"malformed JSON: {exc.msg} (column {exc.colno})", where=f"{path}:{exc.lineno}",
                             hint="docker login rewrites this file; or fix it by hand") from None
        if not isinstance(document, dict):
            raise BuildError("expected a JSON object (with auths, credHelpers, credsStore)", where=str(path))
        auths, helpers, store = document.get("auths", {}), document.get("credHelpers", {}), document.get("credsStore")
        if not isinstance(auths, dict) or not all(isinstance(v, dict) for v in auths.values()):
            raise BuildError("auths: expected an object of registry -> {\"auth\": …}", where=str(path))
        if not isinstance(helpers, dict) or not all(isinstance(v, str) for v in helpers.values()):
            raise BuildError("credHelpers: expected an object of registry -> helper name", where=str(path))
        if store is not None and not isinstance(store, str):
            raise BuildError("credsStore: expected a helper name", where=str(path))
        for key, name in [*((f"credHelpers.{k}", v) for k, v in helpers.items()), ("credsStore", store or "")]:
            if name and not HELPER_NAME.match(name):
                raise BuildError(f"{key}: {name!r} is not a helper name (docker-credential-NAME)", where=str(path))
        return cls(path, auths, helpers, store or None)

    def helper(self, registry: str) -> tuple[str, str] | None:
        """(NAME, the key that chose it) of the credential helper for ``registry``, or None."""
        host = _hostname(registry)
        for key, name in self.helpers.items():
            if name and _hostname(key) == host:
                return name, f"credHelpers.{key}"
        return (self.store, "credsStore") if self.store else None

    def origin(self, registry: str) -> str:
        """Where credentials for ``registry`` are read from, for a message."""
        chosen = self.helper(registry)
        if chosen:
            return f"docker-credential-{chosen[0]} ({chosen[1]} in {self.path})"
        return str(self.path) + ("" if self.path.exists() else " (no such file)")

    def login(self, registry: str, *, seconds: float) -> Login | None:
        """The credentials for ``registry`` (host[:port]): its helper's, else its ``auths`` entry's; None
        when there are none. A helper runs within ``seconds``; one that is missing or fails is a BuildError."""
        chosen = self.helper(registry)
        if chosen:
            return self._from_helper(registry, *chosen, seconds=seconds)
        host = _hostname(registry)
        entries = [(key, entry) for key, entry in self.auths.items() if key == registry]
        entries += [(key, entry) for key, entry in self.auths.items() if key != registry and _hostname(key) == host]
        for key, entry in entries:
            found = self._from_entry(key, entry)
            if found:
                return found
        return None

    def _from_entry(self, key: str, entry: dict[str, object]) -> Login | None:
        origin = f"{self.path} (auths.{key})"
        if "auth" in entry:
            encoded = entry["auth"]
            try:
                decoded = base64.b64decode(str(encoded), validate=True).decode("utf-8") if encoded else ""
            except (binascii.Error, UnicodeDecodeError, ValueError):
                decoded = None
            if decoded is None or (decoded and ":" not in decoded):
                raise BuildError(f"auths.{key}.auth: expected base64 of USER:PASSWORD (the value is not shown)",
                                 where=str(self.path))
            user, _, password = decoded.partition(":")
            if user or password:
                return Login(user, password, origin)
        name, secret = entry.get("username"), entry.get("password")
        if name is not None or secret is not None:
            if not isinstance(name, str) or not isinstance(secret, str):
                raise BuildError(f"auths.{key}: username and password must both be strings", where=str(self.path))
            return Login(name, secret, origin)
        return None

    def _from_helper(self, registry: str, name: str, key: str, *, seconds: float) -> Login | None:
        from builder.core import run

        program = f"docker-credential-{name}"
        origin = f"{program} ({key} in {self.path})"
        server = HUB_SERVER if _hostname(registry) == "docker.io" else registry
        if shutil.which(program) is None:
            raise BuildError(f"the credential helper {origin} is not installed: no {program} on PATH",
                             hint=f"install it, or remove {key} from {self.path}")
        try:
            done = run.run([program, "get"], input=server.encode(), capture=True, check=False, timeout=seconds)
        except run.TimedOut:
            raise BuildError(f"the credential helper {origin} did not answer within {seconds:g} s",
                             hint="REGISTRY_TIMEOUT=SECONDS waits longer") from None
        said = (done.stdout or b"").decode(errors="replace").strip()
        if done.returncode != 0:
            if NOT_FOUND in said.lower() or NOT_FOUND in (done.stderr or b"").decode(errors="replace").lower():
                return None
            detail = (said or (done.stderr or b"").decode(errors="replace").strip()).splitlines()
            shown = scrub(detail[0], []) if detail else "no output"
            raise BuildError(f"the credential helper {origin} failed for {server} with exit status "
                             f"{done.returncode}: {shown}")
        try:
            answer = json.loads(said)
            user, secret = answer["Username"], answer["Secret"]
            if not isinstance(user, str) or not isinstance(secret, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise BuildError(f"the credential helper {origin} printed no credentials for {server} (expected JSON "
                             "with Username and Secret)") from None
        if user == "<token>":
            raise BuildError(f"the credential helper {origin} gives an identity token for {server}; builder "
                             "needs a user name and password (or a registry token as the password)")
        return Login(user, secret, origin) if user or secret else None
