"""Project files a recipe gives its build: how a ``files:`` pattern matches, the same for the renderer and
for the plan memo's cheap re-check; and the host-side checks a ``files:`` entry may ask for (``check:``),
so a malformed file is named with its line before any build, not minutes into one."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

GLOB_CHARACTERS = "*?["


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in GLOB_CHARACTERS)


def match(project_root: Path, pattern: str) -> list[str]:
    """The project-relative paths of the regular files ``pattern`` matches, sorted."""
    return sorted(p.relative_to(project_root).as_posix() for p in project_root.glob(pattern) if p.is_file())


def why_not_a_file(path: Path) -> str | None:
    """What ``path`` is, when it is not a regular file a build can take (None: nothing is there)."""
    if path.is_symlink() and not path.exists():
        return "is a link that leads nowhere (dangling, or a loop)"
    if not path.exists():
        return None
    if path.is_dir():
        return "is a directory (to take the files in it, use a glob such as DIR/* and a dest ending in '/')"
    return "is not a regular file (a fifo, socket or device)"


# --- checks a files: entry may ask for: name -> function(bytes) raising CheckError --------------------


class CheckError(ValueError):
    """A file that fails its check; ``line`` is 1-based (0: the file as a whole)."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


KCONFIG_NAME = r"CONFIG_[A-Za-z0-9_]+"
_KCONFIG_VALUE = r'(?:[ymn]|"(?:[^"\\]|\\.)*"|-?[0-9]+|0[xX][0-9a-fA-F]+)'
_KCONFIG_SET = re.compile(rf"^({KCONFIG_NAME})={_KCONFIG_VALUE}$")
_KCONFIG_UNSET = re.compile(rf"^# ({KCONFIG_NAME}) is not set$")
KCONFIG_FORMS = ('CONFIG_NAME=y|m|n, CONFIG_NAME="string" (\\" and \\\\ escaped), CONFIG_NAME=123 or =0x1f, '
                 "'# CONFIG_NAME is not set', another '#' comment, or a blank line")


def check_kconfig(data: bytes) -> None:
    """A Kconfig .config or fragment, line by line: what `make olddefconfig` reads without a warning.
    A symbol given twice is refused too (Kconfig silently keeps the last one)."""
    seen: dict[str, int] = {}
    for number, raw in enumerate(data.split(b"\n"), 1):
        line = raw.decode("utf-8", errors="surrogateescape")
        if line.endswith("\r"):
            raise CheckError("a carriage return at the end of the line (DOS line endings); Kconfig lines end "
                             "with \\n only", number)
        name = None
        if (found := _KCONFIG_SET.match(line) or _KCONFIG_UNSET.match(line)) is not None:
            name = found.group(1)
        elif line.startswith("#") or not line:
            continue
        else:
            shown = line if len(line) <= 80 else line[:77] + "..."
            raise CheckError(f"not a Kconfig line: {shown!r}; expected {KCONFIG_FORMS}", number)
        if name in seen:
            raise CheckError(f"{name} is set again (first on line {seen[name]}); Kconfig would silently keep "
                             "the last one", number)
        seen[name] = number


def check_x509_pem(data: bytes) -> None:
    """A PEM file with one X.509 certificate and nothing secret: BEGIN/END CERTIFICATE around base64 of a
    DER SEQUENCE. A private key in it is refused: the file is a build input (it may be committed)."""
    import base64
    import binascii

    text = data.decode("ascii", errors="replace")
    if "PRIVATE KEY-----" in text:
        line = text[:text.index("PRIVATE KEY-----")].count("\n") + 1
        raise CheckError("a private key in a certificate file: only the public certificate is a build input "
                         "(give the key as MODULE_SIGNING_KEY=, a BuildKit secret)", line)
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    if begin not in text or end not in text.split(begin, 1)[1]:
        raise CheckError(f"not a PEM certificate: no {begin} ... {end} block", 1)
    body = text.split(begin, 1)[1].split(end, 1)[0]
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise CheckError("not a PEM certificate: the block is not base64", text[:text.index(begin)].count("\n") + 2) \
            from None
    if not der.startswith(b"\x30"):
        raise CheckError("not a PEM certificate: the block is not DER (an ASN.1 SEQUENCE)", 1)


CHECKS: dict[str, Callable[[bytes], None]] = {"kconfig": check_kconfig, "x509": check_x509_pem}
