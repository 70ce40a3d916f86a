"""Every credential the project sends, where it is read from, and how it is kept out of what is shown.

Sources (builder/sources.py): a URL's ``user:password@`` (sent to that scheme, host and port only), else the
``machine HOST`` (or ``default``) entry of the netrc file, $NETRC or ~/.netrc.

Nothing here prints a secret: messages name the file and line, never a value, and ``redact`` / ``scrub``
make URLs and foreign text safe to show.
"""

from __future__ import annotations

import netrc
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from builder.errors import BuildError

AUTHORITY = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)")


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
