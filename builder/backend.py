"""The one place that talks to BuildKit: `docker buildx build` when the plugin exists, else
`DOCKER_BUILDKIT=1 docker build` on the engine's built-in BuildKit. Never the legacy builder.

The docker SDK cannot drive BuildKit builds (docker-py #2230), so builds are a subprocess.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from builder.errors import BuildError
from builder.log import say

ERROR_MARKER = "##builder-error## "
STEP_LINE = re.compile(r"^#\d+ \[(?P<stage>[\w.-]+) (?P<n>\d+)/(?P<of>\d+)\] (?P<what>.*)$")
SCRIPT = re.compile(r"/\.builder/step/\d+-(\w+)\.sh")
TAIL_LINES = 25
HEARTBEAT_SECONDS = 30


@dataclass(frozen=True)
class BuildKit:
    """How to reach BuildKit from this machine."""

    docker: str  # path of the docker client to use
    buildx: bool  # True: `docker buildx build`; False: built-in BuildKit via DOCKER_BUILDKIT=1

    @property
    def kind(self) -> str:
        return "buildx" if self.buildx else "built-in BuildKit (DOCKER_BUILDKIT=1 docker build)"

    def command(self, context_dir: Path, target: str, dest: Path, *, no_cache: bool = False) -> list[str]:
        """The exact build command: network off, plain progress, local export of ``target``."""
        argv = [self.docker, "buildx", "build"] if self.buildx else [self.docker, "build"]
        argv += [
            "--network=none",
            "--progress=plain",
            "--target", target,
            "--output", f"type=local,dest={dest}",
            "--file", str(context_dir / "Dockerfile"),
        ]
        if no_cache:
            argv.append("--no-cache")
        argv.append(str(context_dir))
        return argv

    def environment(self) -> dict[str, str]:
        return {} if self.buildx else {"DOCKER_BUILDKIT": "1"}

    def shell_command(self, context_dir: Path, target: str, dest: Path, *, no_cache: bool = False) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.environment().items())
        cmd = shlex.join(self.command(context_dir, target, dest, no_cache=no_cache))
        return f"{env} {cmd}".strip()


def _clients() -> list[str]:
    found = []
    for candidate in (os.environ.get("DOCKER_CLI"), shutil.which("docker"), "/usr/bin/docker"):
        if candidate and os.path.exists(candidate) and candidate not in found:
            found.append(candidate)
    return found


def _ok(argv: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc if proc.returncode == 0 else None


@cache
def detect() -> BuildKit:
    """buildx if any docker client has the plugin; else a client (< 23) that still drives the
    built-in BuildKit itself. Newer clients without buildx refuse BuildKit builds."""
    clients = _clients()
    for client in clients:
        if _ok([client, "buildx", "version"]):
            return BuildKit(client, buildx=True)
    for client in clients:
        proc = _ok([client, "version", "--format", "{{.Client.Version}}"])
        major = proc.stdout.strip().split(".", 1)[0] if proc else ""
        if not proc:  # the engine may be down; the client version is still printed
            raw = subprocess.run([client, "--version"], capture_output=True, text=True)
            match = re.search(r"version (\d+)\.", raw.stdout)
            major = match.group(1) if match else ""
        if major.isdigit() and int(major) < 23:
            return BuildKit(client, buildx=False)
    raise BuildError(
        "no way to run BuildKit: no docker client has the buildx plugin, and none is older than 23 "
        "(which could use the engine's built-in BuildKit)",
        hint="install docker.io (./setup.sh) or the buildx plugin",
    )


def build(kit: BuildKit, context_dir: Path, target: str, dest: Path, *, log_path: Path, label: str,
          no_cache: bool = False) -> None:
    """Run one build, its whole output into ``log_path``, progress on the terminal.

    On failure: the log's last lines, its path, and a one-line BuildError (the recipe's own
    ``builder_error`` message when it gave one).
    """
    argv = kit.command(context_dir, target, dest, no_cache=no_cache)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    marker: str | None = None
    start = time.monotonic()
    with open(log_path, "w") as log:
        log.write(f"$ {kit.shell_command(context_dir, target, dest, no_cache=no_cache)}\n")
        log.flush()
        proc = subprocess.Popen(argv, env={**os.environ, **kit.environment()}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
        assert proc.stdout is not None
        shown: set[str] = set()
        current, last_said = "", start
        for line in proc.stdout:
            log.write(line)
            line = line.rstrip("\n")
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
    if code != 0:
        for line in tail:
            say(f"    | {line}")
        say(f"    full log: {log_path}")
        if marker:
            raise BuildError(f"{label}: {marker}")
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
