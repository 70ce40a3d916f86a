"""The one place that talks to BuildKit: `docker buildx build` when the plugin exists (or BACKEND=buildx),
else `DOCKER_BUILDKIT=1 docker build` on the engine's built-in BuildKit (BACKEND=engine). Never the
legacy builder. The docker SDK cannot drive BuildKit builds (docker-py #2230), so builds are a subprocess.

A build is described by a BuildRequest (what to build, for which platform, exported how); a BuildKit
path turns it into the exact command, or refuses clearly when that path cannot do what was asked.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from builder.core import run
from builder.core.errors import BuildError
from builder.core.log import say
from builder.host import engine

ERROR_MARKER = "##builder-error## "
REPORT_LINE = re.compile(r"##builder-report:([A-Za-z0-9][A-Za-z0-9._-]*)## ?(.*)$")
STEP_LINE = re.compile(r"^#\d+ \[(?P<stage>[\w.-]+) (?P<n>\d+)/(?P<of>\d+)\] (?P<what>.*)$")
SCRIPT = re.compile(r"/\.builder/step/\d+-(\w+)\.sh")
TAIL_LINES = 25
HEARTBEAT_SECONDS = 30

OutputKind = Literal["local", "tar", "oci", "image", "push"]


def csv_option(**fields: object) -> str:
    """A docker option value of ``key=value`` fields (``--output``, ``--secret``, ``--mount``): docker and
    buildx read it as one CSV record, so a field holding a comma, a quote or a newline is quoted, and any
    host path works (a project under ``/home/a,b``)."""
    cells = []
    for key, value in fields.items():
        cell = f"{key}={value}"
        if any(c in cell for c in ',"\r\n') or cell != cell.strip():
            cell = '"' + cell.replace('"', '""') + '"'
        cells.append(cell)
    return ",".join(cells)


@dataclass(frozen=True)
class BuildOutput:
    """Where a build's result goes.

    local: the files of the target stage into directory ``dest``; tar: the same as one tar file ``dest``;
    oci: an OCI image layout tarball ``dest``; image: an image named ``ref`` in the Docker engine;
    push: an image named ``ref`` pushed to its registry.
    """

    kind: OutputKind
    dest: Path | None = None
    ref: str | None = None

    def __post_init__(self) -> None:
        needs_dest = self.kind in ("local", "tar", "oci")
        if needs_dest and self.dest is None:
            raise ValueError(f"output {self.kind} needs dest")
        if not needs_dest and not self.ref:
            raise ValueError(f"output {self.kind} needs ref")


@dataclass(frozen=True)
class BuildRequest:
    """One BuildKit build: the ``target`` stage of ``context``/Dockerfile for ``platform``."""

    context: Path
    target: str
    platform: str
    output: BuildOutput
    no_cache: bool = False
    secrets: tuple[tuple[str, Path], ...] = ()  # (id, host file): RUN --mount=type=secret,id=...
    cache_from: str | None = None
    cache_to: str | None = None


@dataclass(frozen=True)
class BuildKit:
    """A way to reach BuildKit from this machine.

    ``buildx``: `docker buildx build`, with ``driver`` (docker, docker-container, remote, ...) of the
    ``builder`` it uses; otherwise the engine's built-in BuildKit through a docker client older than 23.
    """

    docker: str
    buildx: bool
    driver: str = "docker"
    builder: str | None = None

    @property
    def kind(self) -> str:
        if self.buildx:
            return f"buildx ({self.builder or 'default'} builder, {self.driver} driver)"
        return "engine (built-in BuildKit: DOCKER_BUILDKIT=1 docker build)"

    @property
    def name(self) -> str:
        """buildx or engine: the BACKEND value that selects this path."""
        return "buildx" if self.buildx else "engine"

    def _refuse(self, what: str, instead: str) -> BuildError:
        return BuildError(f"the {self.name} backend ({self.kind}) cannot {what}", hint=instead)

    def commands(self, request: BuildRequest) -> list[list[str]]:
        """The exact commands for ``request``, in order (a push on the engine path is build, then push)."""
        out = request.output
        full_builder = self.buildx and self.driver != "docker"
        if out.kind == "oci" and not full_builder:
            raise self._refuse("export an OCI image layout (its BuildKit has no OCI exporter)",
                               "use a docker-container buildx builder: BUILDER=name (docker buildx create "
                               "--driver docker-container --name name)")
        if request.cache_to and not full_builder and not request.cache_to.startswith("type=inline"):
            raise self._refuse(f"export a build cache ({request.cache_to})",
                               "use type=inline, or a docker-container buildx builder (BUILDER=name)")
        if not self.buildx and request.cache_from and not request.cache_from.startswith("type=registry"):
            raise self._refuse(f"import a build cache ({request.cache_from})", "use buildx (BACKEND=buildx)")
        if self.builder and not self.buildx:
            raise self._refuse(f"use the builder {self.builder!r}", "builders are buildx's: BACKEND=buildx")

        argv = [self.docker, "buildx", "build"] if self.buildx else [self.docker, "build"]
        if self.buildx and self.builder:
            argv += ["--builder", self.builder]
        argv += ["--network=none", "--progress=plain", "--platform", request.platform, "--target", request.target]
        if request.no_cache:
            argv.append("--no-cache")
        for secret_id, path in request.secrets:
            argv += ["--secret", csv_option(id=secret_id, src=path)]
        if request.cache_from:
            ref = request.cache_from.removeprefix("type=registry,ref=") if not self.buildx else request.cache_from
            argv += ["--cache-from", ref]
        if request.cache_to:
            argv += ["--cache-to", request.cache_to]
        if not self.buildx and request.cache_to:  # the engine path's only cache export: inline
            argv += ["--build-arg", "BUILDKIT_INLINE_CACHE=1"]
        followups: list[list[str]] = []
        if out.kind in ("local", "tar", "oci"):
            argv += ["--output", csv_option(type=out.kind, dest=out.dest)]
        elif out.kind == "image":
            argv += ["--tag", str(out.ref)]
            if self.buildx:
                argv.append("--load")
        elif out.kind == "push":
            argv += ["--tag", str(out.ref)]
            if self.buildx:
                argv.append("--push")
            else:
                followups.append([self.docker, "push", str(out.ref)])
        argv += ["--file", str(request.context / "Dockerfile"), str(request.context)]
        return [argv, *followups]

    def environment(self) -> dict[str, str]:
        return {} if self.buildx else {"DOCKER_BUILDKIT": "1"}

    def shell_command(self, request: BuildRequest) -> str:
        """The commands as one line a user can paste."""
        env = " ".join(f"{k}={v}" for k, v in self.environment().items())
        return " && ".join(f"{env} {shlex.join(_short(argv))}".strip() for argv in self.commands(request))


def _short(argv: list[str]) -> list[str]:
    """``argv`` with the program by name when that is what the PATH finds: no host paths in logs."""
    name = os.path.basename(argv[0])
    return [name, *argv[1:]] if shutil.which(name) == argv[0] else argv


def _clients() -> list[str]:
    found = []
    for candidate in (os.environ.get("DOCKER_CLI"), shutil.which("docker"), "/usr/bin/docker"):
        if candidate and os.path.exists(candidate) and candidate not in found:
            found.append(candidate)
    return found


class BuildKits:
    """How this invocation reaches BuildKit: the docker client probes, asked once each, and the path chosen
    for each BACKEND/BUILDER pair. Made once per invocation and passed down (builder.host.services); safe
    to share between threads (one lock over both tables: a probe is asked once even when two threads want
    it at the same time)."""

    def __init__(self, engine: engine.Engine) -> None:
        self.engine = engine
        self._lock = threading.RLock()
        self._probes: dict[tuple[str, ...], str | None | BuildError] = {}
        self._chosen: dict[tuple[str, str | None], BuildKit] = {}

    def _output(self, argv: list[str]) -> str | None:
        """stdout of a quick probe, or None when it fails; asked once.

        A probe that does not finish within the engine's deadline (`docker buildx inspect` asks the engine)
        is an error, not an absent feature: the engine is stuck, and every path through it would be too."""
        key = tuple(argv)
        with self._lock:
            if key not in self._probes:
                try:
                    proc = run.run(argv, capture=True, check=False, timeout=self.engine.seconds)
                    self._probes[key] = proc.stdout.decode(errors="replace") if proc.returncode == 0 else None
                except run.TimedOut as exc:
                    self._probes[key] = engine.EngineError(exc.message, hint=engine.engine_hint("timeout"))
                except BuildError:
                    self._probes[key] = None
            answer = self._probes[key]
        if isinstance(answer, BuildError):
            raise answer
        return answer

    def _client_major(self, client: str) -> int | None:
        text = self._output([client, "--version"]) or ""
        match = re.search(r"version (\d+)\.", text)
        return int(match.group(1)) if match else None

    def _buildx_driver(self, client: str, builder: str | None) -> str | None:
        """The driver of ``builder`` (default: the current one), or None when buildx is absent."""
        if self._output([client, "buildx", "version"]) is None:
            return None
        text = self._output([client, "buildx", "inspect", *([builder] if builder else [])])
        if text is None:
            if builder:
                raise BuildError(f"buildx has no builder named {builder!r}", where="BUILDER",
                                 hint="docker buildx ls lists them")
            return "docker"
        match = re.search(r"^Driver:\s*(\S+)", text, re.M)
        return match.group(1) if match else "docker"

    def select(self, backend: str = "auto", builder: str | None = None) -> BuildKit:
        """The BuildKit path for ``backend`` (auto: buildx when any docker client has the plugin, else the
        engine's built-in BuildKit through a client older than 23 - newer clients refuse it without buildx)."""
        key = (backend, builder)
        with self._lock:
            if key not in self._chosen:
                self._chosen[key] = self._choose(backend, builder)
            return self._chosen[key]

    def _choose(self, backend: str, builder: str | None) -> BuildKit:
        clients = _clients()
        kit: BuildKit | None = None
        if backend in ("auto", "buildx"):
            for client in clients:
                driver = self._buildx_driver(client, builder)
                if driver is not None:
                    kit = BuildKit(client, buildx=True, driver=driver, builder=builder)
                    break
            if kit is None and backend == "buildx":
                raise BuildError("BACKEND=buildx, but no docker client here has the buildx plugin",
                                 hint="install docker-buildx (./setup.sh does)")
        if kit is None:
            for client in clients:
                major = self._client_major(client)
                if major is not None and major < 23:
                    kit = BuildKit(client, buildx=False)
                    break
            if kit is None:
                why = ("BACKEND=engine needs a docker client older than 23 (newer ones refuse BuildKit builds "
                       "without buildx); none is installed" if backend == "engine" else
                       "no way to run BuildKit: no docker client has the buildx plugin, and none is older than "
                       "23 (which could use the engine's built-in BuildKit)")
                raise BuildError(why, hint="install docker-buildx or docker.io (./setup.sh)")
        if builder and not kit.buildx:
            raise BuildError(f"BUILDER={builder} needs buildx, and this machine builds with {kit.kind}",
                             where="BUILDER")
        return kit


def build(kit: BuildKit, request: BuildRequest, *, log_path: Path, label: str,
          report_dir: Path | None = None) -> None:
    """Run one build, its whole output into ``log_path``, progress on the terminal.

    On failure: the log's last lines, its path, and a one-line BuildError (the recipe's own
    ``builder_error`` message when it gave one). Reports a failing step handed over (``builder_report``)
    are written into ``report_dir`` and named in the error.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if report_dir is not None and report_dir.is_dir():
        shutil.rmtree(report_dir)  # a report belongs to the build that made it
    try:
        with open(log_path, "w") as log:
            log.write(f"$ {kit.shell_command(request)}\n")
            log.flush()
            for argv in kit.commands(request):
                _stream(argv, kit.environment(), log, log_path, label, report_dir)
    except OSError as exc:
        if exc.filename is None:  # a write into the log (a full disk): the log is the path to name
            exc.filename = str(log_path)
        raise


def _write_reports(reports: dict[str, list[str]], report_dir: Path | None) -> str:
    """The reports as files; what the error line says about them ("" when there are none)."""
    if not reports or report_dir is None:
        return ""
    report_dir.mkdir(parents=True, exist_ok=True)
    for name, lines in reports.items():
        (report_dir / name).write_text("".join(f"{line}\n" for line in lines))
    shown = [_shown_path(report_dir / name) for name in reports]
    return f" (report: {', '.join(shown)})"


def _shown_path(path: Path) -> str:
    """A path relative to the working directory when it is beneath it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _stream(argv: list[str], env: dict[str, str], log: object, log_path: Path, label: str,
            report_dir: Path | None = None) -> None:
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    reports: dict[str, list[str]] = {}
    marker: str | None = None
    start = time.monotonic()
    shown: set[str] = set()
    current, last_said = "", start
    # its own session: a Ctrl-C in the terminal reaches this process only, which stops the client (below)
    proc = run.start(argv, env=env, text=True, own_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)  # type: ignore[attr-defined]
            line = line.rstrip("\n")
            report = REPORT_LINE.search(line)
            if report:  # kept for the report file, not shown: it can be long
                if marker is None:  # after the error, buildx's summary repeats the step's last lines
                    reports.setdefault(report[1], []).append(report[2])
                continue
            tail.append(line)
            if ERROR_MARKER in line and marker is None:
                marker = line.split(ERROR_MARKER, 1)[1].strip()
            progress = _progress(line)
            now = time.monotonic()
            if progress and progress not in shown:
                shown.add(progress)
                current, last_said = progress, now
                say(f"    {label}: {progress}  [{now - start:.0f}s]")
            elif current and now - last_said >= HEARTBEAT_SECONDS:  # a long step: show it is alive
                last_said = now
                latest = re.sub(r"^#\d+ [\d.]+ ", "", line)[:70]
                say(f"    {label}: {current} ... {latest}  [{now - start:.0f}s]")
        code = proc.wait()
    finally:
        run.stop(proc)  # interrupted (Ctrl-C, SIGTERM): the client must not keep building on its own
    if code != 0:
        for line in tail:
            say(f"    | {line}")
        say(f"    full log: {log_path}")
        written = _write_reports(reports, report_dir)
        if marker:
            raise BuildError(f"{label}: {marker}{written}")
        raise BuildError(f"{label}: build failed (exit {code}); last lines above, full log in {log_path}")


def _progress(line: str) -> str | None:
    match = STEP_LINE.match(line)
    if not match:
        return None
    what = match["what"]
    script = SCRIPT.search(what)
    if script:
        what = script.group(1)
    elif len(what) > 60:
        what = what[:57] + "..."
    stage = match["stage"].removeprefix("r-")
    return f"[{stage} {match['n']}/{match['of']}] {what}"
