"""The project's bad-input catalogue (bad_inputs.yaml), run case by case.

Each case is a change to a scratch copy of the project, a command (doit or builder), and what must come of
it: the exit status, one `error:` line matching a pattern (naming the file and line where there is one), no
traceback, out/ byte for byte as it was, and no temporary file left behind anywhere in the project or the
download cache. Every case must fail before any build starts: a Docker engine stand-in answers the image
queries (so the executor goes as far as a real one would let it) and refuses every build, and HTTP(S)
goes to a closed port, so a case that slips through fails its pattern; it never builds or downloads.

A case's keys:
  name, category, why      a unique slug, one of CATEGORIES, and what the case protects (one sentence)
  change                   edits to the copy, in order (OPERATIONS; paths relative to the project root)
  before                   optional commands that must succeed before the change (e.g. `doit list`: a memo)
  run                      the command: `doit ...`, `builder ...` or `./setup.sh ...` (shell words; setup.sh
                           runs as root in a mount namespace whose /usr/local/bin is an empty tmpfs, so
                           that a case which got past its check cannot relink the machine's doit and builder)
  cwd                      optional working directory (default: the project root)
  env                      optional environment additions
  exit                     the expected exit status (2: doit refused to load its tasks; 1: a task or
                           a builder command failed)
  message                  a regex the last `error:` line must match (re.search)
  never                    optional: strings that must appear nowhere in the output (a secret's bytes)
  unchanged                optional: files (besides out/) that must be byte for byte as before the run
  xfail                    optional: why this fails today and what must change (strict: an XPASS fails)

In every string, @PROJECT@ is the copy's root and @TMP@ a scratch directory beside it; in `run`, @BYTE:ff@ is
that byte, not UTF-8, as a command line can carry it. @HANG@ is the address of a server that accepts and never
answers, @HTTP500@ / @HTTP401@ / @NOTREGISTRY@ of ones that answer every request with that (HTTP 500, a bearer
challenge, a web page that is no registry). @HTTP401@'s token endpoint wants credentials (it answers 401
too); @BASIC401@ asks for basic credentials and takes none; @BEARERHANG@'s token endpoint is @HANG@, and
@BEARERHTML@'s is @NOTREGISTRY@ (a web page, not a token).

Operations that mount (mount_full, mount_readonly) need root; the mounts are undone after the case.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import socketserver
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder.model.variables import DEFAULTS
from builder.resolve.identity import ROOTFS_LABEL

from ..gpt import make_disk
from .conftest import Result, copy_project

TABLE = Path(__file__).resolve().parent / "bad_inputs.yaml"
CATEGORIES = ("yaml", "template", "variables", "graph", "sources", "files", "kconfig", "platforms", "cli", "state",
              "flavors", "registry", "signing", "profiles", "overlays", "meta", "keys", "module-lists",
              "push", "setup", "images")
CASE_KEYS = {"name", "category", "why", "change", "before", "run", "cwd", "env", "exit", "message", "never",
             "unchanged", "xfail"}
REQUIRED = {"name", "category", "why", "run", "exit", "message"}
OPERATIONS = {  # operation -> its keys besides the path (optional ones after '?')
    "write": {"text", "?times"},
    "write_bytes": {"hex"},
    "append": {"text", "?times"},
    "replace": {"old", "new", "?count"},
    "symlink": {"to"},
    "remove": set(),
    "mkdir": set(),
    "mkfifo": set(),
    "copy": {"from"},
    "chmod": {"mode"},
    "gpt_disk": {"?size_mib"},  # a raw GPT image with EFI and META partitions (tests/gpt.py)
    "truncate": {"size"},
    "flip_byte": {"offset"},
    "mount_full": {"?size"},  # a tmpfs of ``size`` bytes (default 64 KiB) at PATH, filled to the last byte
    "mount_readonly": set(),  # PATH (a file or directory) bind-mounted onto itself, read-only
}
TIMEOUT = 60
# Names a run may add to the project: build state and doit's database. Anything else new is a leftover.
STATE_FILES = {".doit.db", ".builder", ".builder/plan-memo.json", ".builder/hashes.json", ".builder/run.lock",
               ".builder/out.lock", ".builder/tmp"}
# a failed build's log and reports are what the user reads; a dry run's scratch database, and the database
# of an OUT_DIR other than out/, are doit's (locations.Locations)
STATE_DIRS = (".builder/logs", ".builder/reports", ".builder/dry-run", ".builder/outs")
TEMPORARY = re.compile(r"(^|/)(\.partial|.*\.tmp$|.*\.partial$|"
                       r"\.(SHA256SUMS|manifest\.json|plan-memo\.json|hashes\.json)\.)")
KNOWN_IMAGES = {DEFAULTS["TOOLCHAIN"], DEFAULTS["IMAGER"]}

# A small, consistent out/ from an "earlier build": artifacts, SHA256SUMS and manifest.json agreeing.
ARTIFACTS = {f"{name}-{arch}{ext}": f"{name} {arch} from an earlier build\n".encode()
             for arch in ("amd64", "arm64")
             for name, ext in (("vmlinuz", ""), ("config", ""), ("modules", ".tar"), ("initramfs", ".xz"))}


def load_table() -> list[dict[str, Any]]:
    cases = yaml.safe_load(TABLE.read_text(encoding="utf-8"))
    assert isinstance(cases, list), f"{TABLE}: expected a list of cases"
    return cases


def params() -> list[Any]:
    result = []
    for case in load_table():
        marks = [pytest.mark.xfail(reason=case["xfail"], strict=True)] if case.get("xfail") else []
        result.append(pytest.param(case, id=case.get("name", "?"), marks=marks))
    return result


# --- the engine stand-in ---------------------------------------------------------------------------------


class _EngineHandler(BaseHTTPRequestHandler):
    """Answers /_ping and image inspections (the toolchain has a rootfs label); refuses everything else,
    so no build, pull or container ever runs."""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        match = re.fullmatch(r"(?:/v[\d.]+)?/images/(.+)/json", path)
        if path.endswith("/_ping"):
            self._answer(200, b"OK", "text/plain")
        elif match and match.group(1) in KNOWN_IMAGES:
            self._answer(200, json.dumps({"Id": "sha256:" + "f" * 64, "RepoDigests": [],
                                          "Config": {"Labels": {ROOTFS_LABEL: "0" * 64}}}).encode())
        elif match:
            self._answer(404, b'{"message": "No such image"}')
        else:
            self._answer(500, b'{"message": "the test engine builds nothing"}')

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client (buildx) hanging up mid-request is not the test's concern

    def get_request(self) -> tuple[Any, Any]:
        request, _ = super().get_request()
        return request, ("engine-client", 0)  # http.server wants a (host, port) client address


@pytest.fixture(scope="session")
def engine() -> Iterator[str]:
    """DOCKER_HOST of the stand-in (a short path: a unix socket's is limited to 108 bytes)."""
    directory = tempfile.mkdtemp(prefix="bad-inputs-engine-")
    server = _UnixServer(f"{directory}/docker.sock", _EngineHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"unix://{directory}/docker.sock"
    server.shutdown()
    server.server_close()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def engine_and_toolchain() -> None:
    """Overrides conftest's: the catalogue needs neither a real engine nor the toolchain image."""


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project copied once; each case copies this copy."""
    return copy_project(tmp_path_factory.mktemp("bad-inputs") / "project")


# --- applying a case -------------------------------------------------------------------------------------


def _expand(value: Any, places: dict[str, str]) -> Any:
    if isinstance(value, str):
        for token, path in places.items():
            value = value.replace(token, path)
        return value
    if isinstance(value, list):
        return [_expand(v, places) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, places) for k, v in value.items()}
    return value


def apply(operation: dict[str, Any], root: Path, mounts: list[Path]) -> None:
    kind = next(k for k in operation if k in OPERATIONS)
    path = root / operation[kind]  # an absolute path (@TMP@/...) stays itself
    if kind in ("write", "append"):
        path.parent.mkdir(parents=True, exist_ok=True)
        text = operation["text"] * operation.get("times", 1)
        with open(path, "w" if kind == "write" else "a", encoding="utf-8") as f:
            f.write(text)
    elif kind == "write_bytes":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes.fromhex(operation["hex"]))
    elif kind == "replace":
        text = path.read_text(encoding="utf-8")
        count = operation.get("count", 1)
        assert text.count(operation["old"]) >= count, f"{operation['old']!r} is not in {path} (the case rotted)"
        path.write_text(text.replace(operation["old"], operation["new"], count), encoding="utf-8")
    elif kind == "symlink":
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        path.symlink_to(operation["to"])
    elif kind == "remove":
        assert path.exists() or path.is_symlink(), f"{path} does not exist (the case rotted)"
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    elif kind == "mkdir":
        path.mkdir(parents=True, exist_ok=True)
    elif kind == "mkfifo":
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        os.mkfifo(path)
    elif kind == "chmod":
        path.chmod(int(str(operation["mode"]), 8))
    elif kind == "copy":
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(__file__).resolve().parent / operation["from"], path)
    elif kind == "gpt_disk":
        path.parent.mkdir(parents=True, exist_ok=True)
        make_disk(path, int(operation.get("size_mib", 8)))
    elif kind == "truncate":
        os.truncate(path, int(operation["size"]))
    elif kind == "flip_byte":
        with open(path, "r+b") as f:
            f.seek(int(operation["offset"]))
            byte = f.read(1)
            f.seek(int(operation["offset"]))
            f.write(bytes([byte[0] ^ 0xFF]))
    elif kind in ("mount_full", "mount_readonly"):
        if os.geteuid() != 0:
            pytest.skip("mounting needs root")
        if kind == "mount_full":
            path.mkdir(parents=True, exist_ok=True)
            _mount(["-t", "tmpfs", "-o", f"size={int(operation.get('size', 65536))}", "tmpfs", str(path)])
            mounts.append(path)
            with contextlib.suppress(OSError), open(path / ".filler", "wb", buffering=0) as f:
                while True:
                    f.write(b"\0" * 4096)
        else:
            _mount(["--bind", str(path), str(path)])
            mounts.append(path)
            _mount(["-o", "remount,ro,bind", str(path)])


def _mount(argv: list[str]) -> None:
    done = subprocess.run(["mount", *argv], capture_output=True, text=True)
    assert done.returncode == 0, f"mount {' '.join(argv)}: {done.stderr}"


def unmount(mounts: list[Path]) -> None:
    for path in reversed(mounts):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def populate_out(out: Path) -> None:
    out.mkdir()
    for name, data in ARTIFACTS.items():
        (out / name).write_bytes(data)
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(ARTIFACTS.items())}
    (out / "SHA256SUMS").write_text("".join(f"{sha}  {name}\n" for name, sha in digests.items()))
    manifest = {"artifacts": {name: {"sha256": sha} for name, sha in digests.items()}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (out / ".inputs").mkdir()
    (out / ".inputs" / "kernel-amd64.json").write_text(
        json.dumps({"task": "kernel:amd64", "digest": "0" * 64, "inputs": {"Dockerfile": "1" * 64}}) + "\n")


def tree_state(directory: Path) -> dict[str, str]:
    """Every entry under ``directory`` (itself included): its kind and, for a file, a link or anything
    else, its sha256, target or mode - byte-identical means equal."""
    def one(path: Path) -> str:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            return f"link {os.readlink(path)}"
        if stat.S_ISREG(info.st_mode):
            return f"file {oct(info.st_mode)} {hashlib.sha256(path.read_bytes()).hexdigest()}"
        if stat.S_ISDIR(info.st_mode):
            return f"dir {oct(info.st_mode)}"
        return f"other {oct(info.st_mode)}"

    if not directory.exists() and not directory.is_symlink():
        return {}
    state = {".": one(directory)}
    if directory.is_dir() and not directory.is_symlink():
        for path in sorted(directory.rglob("*")):
            state[path.relative_to(directory).as_posix()] = one(path)
    return state


def listing(root: Path) -> set[str]:
    """Every path under ``root`` (not following links), relative."""
    found = set()
    for directory, dirs, names in os.walk(root):
        for name in dirs + names:
            found.add((Path(directory) / name).relative_to(root).as_posix())
    return found


PROGRAMS = ("doit", "builder", "./setup.sh")
# setup.sh's words after "$@"; /usr/local/bin private to this process and its children
SETUP_GUARD = 'mount -t tmpfs bad-inputs /usr/local/bin && exec bash ./setup.sh "$@"'


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> Result:
    if argv[0] == "./setup.sh":
        if os.geteuid() != 0:
            pytest.skip("setup.sh's cases need root (a mount namespace)")
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", SETUP_GUARD, "setup.sh", *argv[1:]]
    else:
        program = {"doit": "doit", "builder": "builder"}[argv[0]]
        command = [sys.executable, "-m", program, *argv[1:]]
    try:
        proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{shlex.join(argv)} did not end within {TIMEOUT}s (hangs on this input)\n{exc.output!r}")
    return Result(proc.returncode, proc.stdout, proc.stderr)


class _Answer(BaseHTTPRequestHandler):
    """A registry stand-in that answers every request the same way (``status``, ``headers``, ``body``)."""

    status, answer_headers, body = 500, {}, b"{}"  # (self.headers is the request's)

    def do_GET(self) -> None:
        self.send_response(self.status)
        for name, value in {"Content-Length": str(len(self.body)), **self.answer_headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(self.body)

    do_HEAD = do_POST = do_PUT = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _answering(status: int, headers: dict[str, str], body: bytes) -> type[_Answer]:
    return type("Answer", (_Answer,), {"status": status, "answer_headers": headers, "body": body})


@pytest.fixture(scope="session")
def servers() -> Iterator[dict[str, str]]:
    """@HANG@, @HTTP500@, @HTTP401@, @NOTREGISTRY@ and the others: host:port of each stand-in, on 127.0.0.1."""
    import socket

    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(64)  # accepts (the kernel completes the handshake) and never answers
    started = []
    places = {"@HANG@": f"127.0.0.1:{hanging.getsockname()[1]}"}
    def challenge(scheme: str, realm: str = "") -> type[_Answer]:
        header = f'Bearer realm="http://{realm}/token",service="x"' if scheme == "bearer" else 'Basic realm="x"'
        return _answering(401, {"WWW-Authenticate": header, "Docker-Distribution-Api-Version": "registry/2.0"},
                          b"{}")

    kinds = {  # in order: a registry's token endpoint is started before it
        "@HTTP500@": lambda: _answering(500, {}, b"internal error"),
        "@TOKEN401@": lambda: _answering(401, {"Content-Type": "application/json"}, b'{"details": "who are you?"}'),
        "@HTTP401@": lambda: challenge("bearer", places["@TOKEN401@"]),
        "@BASIC401@": lambda: challenge("basic"),
        "@NOTREGISTRY@": lambda: _answering(200, {"Content-Type": "text/html"}, b"<html>a web page</html>"),
        "@BEARERHANG@": lambda: challenge("bearer", places["@HANG@"]),
        "@BEARERHTML@": lambda: challenge("bearer", places["@NOTREGISTRY@"]),
    }
    for token, handler in kinds.items():
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler())
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        places[token] = f"127.0.0.1:{server.server_address[1]}"
    yield places
    for server in started:
        server.shutdown()
        server.server_close()
    hanging.close()


def _words(command: str, places: dict[str, str]) -> list[str]:
    """The command's words, with @BYTE:xx@ as that byte (Python hands it over as a lone surrogate)."""
    return [re.sub(r"@BYTE:([0-9a-f]{2})@", lambda m: os.fsdecode(bytes.fromhex(m.group(1))), word)
            for word in shlex.split(_expand(command, places))]


@pytest.mark.parametrize("case", params())
def test_bad_input(case: dict[str, Any], template: Path, engine: str, servers: dict[str, str],
                   tmp_path: Path) -> None:
    root = tmp_path / "project"
    scratch = tmp_path / "tmp"
    cache = tmp_path / "cache"
    shutil.copytree(template, root, symlinks=True)
    scratch.mkdir()
    populate_out(root / "out")
    places = {"@PROJECT@": str(root), "@TMP@": str(scratch), **servers}
    mounts: list[Path] = []
    try:
        _check_case(case, root, cache, places, engine, mounts)
    finally:
        unmount(mounts)


def _check_case(case: dict[str, Any], root: Path, cache: Path, places: dict[str, str], engine: str,
                mounts: list[Path]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "DOCKER_CONTEXT", "no_proxy",
                                                             "NO_PROXY", "DOCKER_TLS_VERIFY")}
    env.update({"DOCKER_HOST": engine, "BUILDER_CACHE": str(cache), "http_proxy": "http://127.0.0.1:9",
                "https_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
                "HTTPS_PROXY": "http://127.0.0.1:9", "PYTHONDONTWRITEBYTECODE": "1"})
    env.update(_expand(case.get("env") or {}, places))
    for command in case.get("before") or []:
        done = run(_words(command, places), root, env)
        assert done.code == 0, f"before: {command}\n{done.text[-3000:]}"
    for operation in case.get("change") or []:
        apply(_expand(operation, places), root, mounts)

    out_before = tree_state(root / "out")
    files_before = listing(root)
    kept = {name: (root / _expand(name, places)).read_bytes() for name in case.get("unchanged") or []}
    result = run(_words(case["run"], places), root / _expand(case.get("cwd", "."), places), env)

    shown = f"{case['run']}\n{result.text[-4000:]}"
    assert "Traceback" not in result.text, shown
    line = result.last_line()
    assert line.startswith("error:"), shown
    assert re.search(_expand(case["message"], places), line), f"{line}\n  does not match: {case['message']}"
    assert result.code == case["exit"], shown
    for secret in case.get("never") or []:
        assert secret not in result.text, f"{secret!r} appears in the output:\n{shown}"
    for name, data in kept.items():
        assert (root / _expand(name, places)).read_bytes() == data, f"{name} changed"
    assert tree_state(root / "out") == out_before, "out/ changed"
    new = sorted(p for p in listing(root) - files_before
                 if p not in STATE_FILES and not p.startswith(("out/", *STATE_DIRS)))
    assert not new, f"left behind in the project: {new}"
    temporary = sorted(p for p in listing(root) if TEMPORARY.search(p))
    assert not temporary, f"temporary files left behind: {temporary}"
    cached = sorted(p for p in listing(cache) if (cache / p).is_file()) if cache.exists() else []
    assert not cached, f"the download cache kept: {cached}"


# --- the table itself -----------------------------------------------------------------------------------


def test_the_catalogue_is_well_formed() -> None:
    """At least 100 cases, names unique, every category covered, every case complete, every pattern valid."""
    cases = load_table()
    assert len(cases) >= 100, len(cases)
    names = [str(case.get("name")) for case in cases]
    assert len(set(names)) == len(names), sorted(n for n in names if names.count(n) > 1)
    for case in cases:
        name = case.get("name")
        assert isinstance(name, str) and re.fullmatch(r"[a-z0-9][a-z0-9-]*", name), name
        assert not set(case) - CASE_KEYS, f"{name}: unknown keys {set(case) - CASE_KEYS}"
        assert set(case) >= REQUIRED, f"{name}: missing {REQUIRED - set(case)}"
        assert case["category"] in CATEGORIES, f"{name}: category {case['category']!r}"
        assert isinstance(case["exit"], int) and case["exit"] != 0, name
        assert shlex.split(case["run"])[0] in PROGRAMS, name
        re.compile(case["message"])
        for operation in case.get("change") or []:
            kinds = [k for k in operation if k in OPERATIONS]
            assert len(kinds) == 1, f"{name}: {operation}"
            allowed = {k.lstrip("?") for k in OPERATIONS[kinds[0]]} | {kinds[0]}
            required = {k for k in OPERATIONS[kinds[0]] if not k.startswith("?")} | {kinds[0]}
            assert required <= set(operation) <= allowed, f"{name}: {operation}"
    covered = {case["category"] for case in cases}
    assert covered == set(CATEGORIES), set(CATEGORIES) - covered
