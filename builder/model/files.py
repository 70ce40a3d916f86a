"""Project files a recipe gives its build: how a ``files:`` pattern matches, the same for the renderer and
for the plan memo's cheap re-check; and the host-side checks a ``files:`` entry may ask for (``check:``),
so a malformed file is named with its line before any build, not minutes into one."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from builder.core.errors import RecipeError

GLOB_CHARACTERS = "*?["
MAX_FILE_BYTES = 1 << 30  # a files: entry (a config, a patch, a firmware blob): more is some other file


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


# --- reading a project file: the one way, for every kind (recipes, vars.yaml, profiles, overlays and their
# assets, files: entries - configs, fragments, flavors, module lists, certificates, patches) --------------


def link_out(project_root: Path, path: Path) -> Path | None:
    """Where ``path`` really is, when that is outside ``project_root`` (a link, or a linked directory on
    the way, leading out); None when it stays inside (or does not exist)."""
    real = Path(os.path.realpath(path))
    return None if real.is_relative_to(Path(os.path.realpath(project_root))) else real


def read_project_file(project_root: Path | None, path: Path, display: str, *, limit: int,
                      what: str = "a file of this kind") -> bytes:
    """The bytes of the project file ``path`` (``display``: its name in errors). It must stay inside the
    project - a link out of it is refused before a byte is read, so no error can ever quote a host file -
    be a regular file (a fifo would block the read) and hold at most ``limit`` bytes. Without
    ``project_root``, a file the command line names (META=FILE): anywhere, the same other checks."""
    outside = link_out(project_root, path) if project_root is not None else None
    if outside is not None:
        raise RecipeError(f"a link out of the project (to {outside}); builder reads project files only",
                          where=display, hint="copy the file into the project")
    try:
        # O_NONBLOCK: opening a fifo must not wait for a writer (it is refused just below)
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY), "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise RecipeError("not a regular file", where=display)
            if info.st_size > limit:
                raise RecipeError(f"{info.st_size} bytes; {what} is at most {limit} bytes", where=display)
            data = f.read(limit + 1)
    except FileNotFoundError:
        why = why_not_a_file(path)
        raise RecipeError(why.removeprefix("is ") if why else "no such file", where=display) from None
    except OSError as exc:
        raise RecipeError(f"cannot read: {exc.strerror}", where=display) from None
    if len(data) > limit:  # it grew while being read
        raise RecipeError(f"more than {limit} bytes; {what} is at most {limit} bytes", where=display)
    return data


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
        base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise CheckError("not a PEM certificate: the block is not base64", text[:text.index(begin)].count("\n") + 2) \
            from None
    from builder.model import keys  # cryptography reads the certificate itself

    try:
        keys.load_certificate(data)
    except keys.KeyProblem:
        raise CheckError("not a PEM certificate: the block is not an X.509 certificate that can be read",
                         text[:text.index(begin)].count("\n") + 1) from None


MODULE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_MODULE_NAME = 55  # the kernel's MODULE_NAME_LEN (64 - sizeof(unsigned long)) without its NUL
MAX_LIST_LINE = 256  # a name, blanks and a comment; more is some other file


def check_module_list(data: bytes) -> None:
    """A module list (kernel-configs/modules-ARCH.txt), line by line: one module name per line ('#' starts a
    comment, blanks around it are fine), letters, digits, '_' and '-', at most MAX_MODULE_NAME characters,
    no name twice ('-' and '_' are the same to modprobe). The build reads it with a shell loop: a NUL, a
    second word or a huge line would be mangled there, not refused, so they are refused here."""
    seen: dict[str, int] = {}
    for number, raw in enumerate(data.split(b"\n"), 1):
        if b"\0" in raw:
            column = raw.index(b"\0") + 1
            raise CheckError(f"a NUL byte at column {column} (a module list is text)", number)
        if len(raw) > MAX_LIST_LINE:
            raise CheckError(f"a line of {len(raw)} bytes; a module name is at most {MAX_MODULE_NAME} characters "
                             f"and a line at most {MAX_LIST_LINE} bytes", number)
        if raw.endswith(b"\r"):
            raise CheckError("a carriage return at the end of the line (DOS line endings); lines end with \\n "
                             "only", number)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CheckError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})", number) \
                from None
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 1:
            raise CheckError(f"{len(words)} words ({words[0]!r}, {words[1]!r}, ...); one module name per line",
                             number)
        name = words[0]
        if not MODULE_NAME.match(name):
            bad = next(c for c in name if not re.match(r"[A-Za-z0-9_-]", c))
            raise CheckError(f"{name!r} is not a module name ({bad!r}); expected letters, digits, '_' and '-'",
                             number)
        if len(name) > MAX_MODULE_NAME:
            raise CheckError(f"a module name of {len(name)} characters; the kernel's are at most "
                             f"{MAX_MODULE_NAME}", number)
        key = name.replace("-", "_")
        if key in seen:
            raise CheckError(f"{name} is listed again (first on line {seen[key]})", number)
        seen[key] = number


CHECKS: dict[str, Callable[[bytes], None]] = {"kconfig": check_kconfig, "x509": check_x509_pem,
                                              "modules": check_module_list}
