"""Nothing a user types can crash or hang a run: Ctrl-C and SIGTERM, a damaged .doit.db, an engine that never
answers. Real `python3 -m doit` and `python3 -m builder` processes on a scratch project, with a stand-in docker
client (a shell script, as in test_executor.py) that records its pid and builds forever."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.cli.commands import main
from builder.core import run
from builder.host import backend

ROOT = Path(__file__).resolve().parents[2]
EPOCH = "1735689600"

FAKE_DOCKER = """#!/bin/sh
# buildx is here, with the docker driver; a build prints a step, records its pid and never ends
case "$1 $2" in
  "buildx version") echo "github.com/docker/buildx v0.13.1" ;;
  "buildx inspect") echo "Driver: docker" ;;
  "buildx build") echo "#1 [a 1/1] RUN make" ; echo $$ > "$PIDFILE" ; exec sleep 300 ;;
  *) exit 1 ;;
esac
"""
RECIPES = {
    "recipes/vars.yaml": f"SOURCE_DATE_EPOCH: {EPOCH}\n",
    # from scratch: nothing to ask the engine before the build starts
    "recipes/a/pkg.yaml": "name: a\nvariant: scratch\nfinalize:\n  - from: /\noutputs:\n  - a-{{ ARCH }}\n",
    # on the toolchain: its identity is asked of the engine
    "recipes/t/pkg.yaml": "name: t\nsteps:\n  - build: make\nfinalize:\n  - from: /\noutputs:\n  - t-{{ ARCH }}\n",
}
SLOW_LOAD = """

_real_task_recipes = task_recipes


def task_recipes():  # noqa: F811 - loading tasks takes a while: the interrupt comes then
    import os, time
    open(os.environ["LOADING"], "w").write(str(os.getpid()))
    time.sleep(60)
    yield from _real_task_recipes()
"""


class Scratch:
    """A project with the shipped dodo.py, the recipes above and the stand-in docker client."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pidfile = root.parent / "docker.pid"
        docker = root.parent / "fake-docker"
        docker.write_text(FAKE_DOCKER)
        docker.chmod(0o755)
        root.mkdir()
        shutil.copy(ROOT / "dodo.py", root / "dodo.py")
        for rel, text in RECIPES.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        self.env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "DOCKER_HOST")}
        self.env.update(DOCKER_CLI=str(docker), PIDFILE=str(self.pidfile), BUILDER_CACHE=str(root.parent / "cache"),
                        PYTHONDONTWRITEBYTECODE="1")

    def start(self, *argv: str) -> subprocess.Popen[str]:
        """``python3 -m doit ...`` or ``python3 -m builder ...`` in the project, in a process group of its own
        (as a shell runs a command: a terminal's Ctrl-C goes to that whole group)."""
        return subprocess.Popen([sys.executable, "-m", *argv], cwd=self.root, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", *argv], cwd=self.root, env=self.env, text=True,
                              capture_output=True, timeout=timeout)

    def leftovers(self) -> list[str]:
        tmp = self.root / ".builder" / "tmp"
        return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


@pytest.fixture
def scratch(tmp_path: Path) -> Scratch:
    return Scratch(tmp_path / "project")


def wait_for(path: Path, proc: subprocess.Popen[str], seconds: float = 60) -> int:
    """The pid written to ``path`` once ``proc`` got that far."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        if proc.poll() is not None:
            raise AssertionError(f"ended early with {proc.returncode}: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{path} never written: {proc.communicate()}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def one_error_line(stderr: str, stdout: str = "") -> str:
    """The run's only `error:` line, which is its last; never a traceback."""
    assert "Traceback" not in stderr + stdout, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and stderr.splitlines()[-1] == errors[0], stderr
    return errors[0]


# --- Ctrl-C and SIGTERM ---

@pytest.mark.parametrize("command", [("doit", "a"), ("builder", "build", "a")], ids=["doit", "builder-build"])
@pytest.mark.parametrize(("signum", "message"), [(signal.SIGINT, "error: interrupted"),
                                                 (signal.SIGTERM, "error: terminated (SIGTERM)")],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_a_build_stops_the_build_client_and_ends_in_one_line(
        scratch: Scratch, command: tuple[str, ...], signum: int, message: str) -> None:
    proc = scratch.start(*command)
    client = wait_for(scratch.pidfile, proc)
    assert scratch.leftovers(), "the build's temporary directory exists while it runs"
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)  # a terminal's Ctrl-C: the whole foreground group (the client has its own)
    else:
        os.kill(proc.pid, signum)  # kill PID
    try:
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if alive(client):
            os.kill(client, signal.SIGKILL)
            pytest.fail(f"the build client {client} outlived {command[0]}")
    assert proc.returncode == 128 + signum, stderr
    assert one_error_line(stderr, stdout) == message
    assert scratch.leftovers() == []


@pytest.mark.parametrize("command", [("doit", "a"), ("builder", "build", "a")], ids=["doit", "builder-build"])
def test_a_sigkill_during_a_build_takes_the_build_client_with_it(scratch: Scratch, command: tuple[str, ...]) -> None:
    """No finally runs on SIGKILL (kill -9, the OOM killer): the client must still not build on, orphaned,
    sharing BuildKit's work with the next run's build and failing it when it ends."""
    proc = scratch.start(*command)
    client = wait_for(scratch.pidfile, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while alive(client) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(client):
        os.kill(client, signal.SIGKILL)
        pytest.fail(f"the build client {client} outlived {command[0]} killed by SIGKILL")


def test_ctrl_c_while_doit_loads_its_tasks_is_one_line_and_130(scratch: Scratch) -> None:
    (scratch.root / "dodo.py").write_text((ROOT / "dodo.py").read_text() + SLOW_LOAD)
    loading = scratch.root.parent / "loading"
    scratch.env["LOADING"] = str(loading)
    proc = scratch.start("doit", "a")
    wait_for(loading, proc)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert one_error_line(stderr, stdout) == "error: interrupted"


def test_a_program_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    proc = run.start(["sh", "-c", "trap '' TERM; echo ready; exec sleep 30"])
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    started = time.monotonic()
    run.stop(proc, grace=0.5)
    assert proc.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 5


# --- a damaged .doit.db ---

def real_database(path: Path) -> None:
    """A doit database as doit writes it, a few pages long."""
    from doit.dependency import Dependency, SqliteDB

    db = Dependency(SqliteDB, str(path))
    for n in range(40):
        db.backend.set(f"task{n}:amd64", "_values_:", {"digest": "0" * 64, "inputs": {f"file{i}": "1" * 64
                                                                                       for i in range(10)}})
    db.close()


def damage(path: Path, how: str) -> None:
    if how == "garbage":
        path.write_bytes(bytes(range(256)) * 12)
    elif how == "truncated":
        real_database(path)
        data = path.read_bytes()
        assert len(data) > 3 * 4096
        path.write_bytes(data[: len(data) // 2])
    else:  # a readable database whose values are not doit's JSON
        import sqlite3

        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE doit (task_id TEXT NOT NULL PRIMARY KEY, task_data JSON)")
            db.execute("INSERT INTO doit VALUES ('a:amd64', '{\"digest\": ')")


@pytest.mark.parametrize(("how", "command"), [
    ("garbage", ("doit", "a")), ("truncated", ("doit", "a")), ("not-json", ("doit", "a")),
    ("garbage", ("doit", "list")),
    ("garbage", ("builder", "build", "a")), ("truncated", ("builder", "build", "a")),
    ("garbage", ("builder", "why")), ("truncated", ("builder", "why")),
], ids=lambda value: value if isinstance(value, str) else "-".join(value))
def test_a_damaged_doit_database_is_one_line_naming_it_and_how_to_reset_it(
        scratch: Scratch, how: str, command: tuple[str, ...]) -> None:
    db = scratch.root / ".doit.db"
    damage(db, how)
    result = scratch.run(*command)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr, result.stdout)
    assert line.startswith(f"error: doit's database {db} is damaged (")
    assert line.endswith(f"(delete it to forget what was built; out/ is kept and the next run rebuilds: rm {db})")
    assert not scratch.pidfile.exists()  # nothing was built


def test_a_sound_doit_database_passes_the_check(tmp_path: Path) -> None:
    from builder.cli.doitglue import check_dep_file

    real_database(tmp_path / ".doit.db")
    check_dep_file(tmp_path / ".doit.db")
    (tmp_path / "empty.db").write_bytes(b"")  # what sqlite3 makes first: doit creates its table
    check_dep_file(tmp_path / "empty.db")
    check_dep_file(tmp_path / "absent.db")


# --- an engine that accepts and never answers ---

@pytest.fixture
def stuck_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A unix socket that accepts connections and never answers; DOCKER_HOST points at it, 1 s deadline."""
    path = tmp_path / "stuck.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    monkeypatch.setenv("BUILDER_ENGINE_TIMEOUT", "1")
    yield path
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    listener.close()


def stored(scratch: Scratch, task: str) -> None:
    """doit's record of an earlier build of ``task``: `builder why` has inputs to compare."""
    from doit.dependency import Dependency, SqliteDB

    db = Dependency(SqliteDB, str(scratch.root / ".doit.db"))
    db.backend.set(task, "_values_:", {"digest": "0" * 64, "inputs": {"Dockerfile": "1" * 64}, "outputs": {}})
    db.close()


@pytest.mark.parametrize("command", [("doit", "t"), ("builder", "build", "t"), ("builder", "why", "t")],
                         ids=["doit", "builder-build", "builder-why"])
def test_a_stuck_engine_fails_a_run_within_its_deadline_in_one_line(
        scratch: Scratch, stuck_engine: Path, command: tuple[str, ...]) -> None:
    stored(scratch, "t:amd64")
    scratch.env.update(DOCKER_HOST=f"unix://{stuck_engine}", BUILDER_ENGINE_TIMEOUT="1")
    started = time.monotonic()
    result = scratch.run(*command)
    assert result.returncode == 1, result.stderr
    line = one_error_line(result.stderr, result.stdout)
    assert line.startswith(f"error: the Docker engine is not reachable (timed out after 1s: unix://{stuck_engine} "
                           "accepted the connection and did not answer) (it is stuck: restart it")
    assert time.monotonic() - started < 15  # one deadline, however many images and tasks ask


STUCK_DOCKER = """#!/bin/sh
# a docker client whose engine never answers: what needs the engine hangs
case "$1 $2" in
  "buildx version") echo "github.com/docker/buildx v0.13.1" ;;
  "--version ") echo "Docker version 26.1.5+dfsg1, build a72d7cd" ;;
  *) exec sleep 60 ;;
esac
"""


def test_doctor_reports_each_check_timed_out_within_its_own_deadline(
        stuck_engine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docker = tmp_path / "docker"
    docker.write_text(STUCK_DOCKER)
    docker.chmod(0o755)
    monkeypatch.setattr(backend, "_clients", lambda: [str(docker)])
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["doctor"])
    assert time.monotonic() - started < 8  # engine 1 s + buildx inspect 1 s, not minutes
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (f"[FAIL] Docker engine: the Docker engine is not reachable (timed out after 1s: "
                        f"unix://{stuck_engine} accepted the connection and did not answer)")
    assert lines[1].startswith("       fix: it is stuck: restart it (systemctl restart docker), or unset DOCKER_HOST")
    assert lines[2] == f"[FAIL] BuildKit: timed out after 1s: {docker} buildx inspect"
    assert lines[3].startswith("       fix: it is stuck: restart it")
    toolchain = next(line for line in lines if line.startswith("[FAIL] toolchain image "))
    assert "timed out after 1s" in toolchain
    assert "Traceback" not in result.output

