"""One way to run a program: argument lists, never shell strings; failures become BuildError.

Signals too: `handle_signals()` turns SIGINT and SIGTERM into an ``Interrupted`` exception raised where the
program is, so every ``finally`` runs on the way out - a started build client is stopped (`stop`), temporary
directories are removed - and the process ends with one line and status 128+signal (130, 143), never a
traceback and never an orphaned `docker buildx build` that keeps building.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

from builder.core.errors import BuildError

STOP_SECONDS = 10.0  # a program asked to stop (SIGTERM) gets this long before it is killed
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TimedOut(BuildError):
    """A program that did not finish within its deadline (killed): a hung engine, not a missing feature."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM, raised where the program was.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` (doit's action runner, ours)
    turns it into a task failure; unlike KeyboardInterrupt, click and doit do not catch it either."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return "interrupted" if self.signum == signal.SIGINT else f"terminated ({signal.Signals(self.signum).name})"

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


_received: list[int] = []
_next_hook = [sys.excepthook]  # what _excepthook hands everything else to


def _raise(signum: int, frame: FrameType | None) -> None:
    """The handler: the first signal raises; later ones wait for the cleanup it started (which is bounded:
    STOP_SECONDS per program), so a second Ctrl-C cannot cut a ``finally`` short."""
    _received.append(signum)
    if len(_received) == 1:
        raise Interrupted(signum)


def _excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """The last resort, for programs whose top level is not ours (doit): one line and 128+signal."""
    if isinstance(value, Interrupted | KeyboardInterrupt):
        status = value.exit_status if isinstance(value, Interrupted) else 128 + signal.SIGINT
        message = value.message if isinstance(value, Interrupted) else "interrupted"
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os.write(2, f"error: {message}\n".encode())
        os._exit(status)  # sys.exit is not possible from here; everything worth running has run
    _next_hook[-1](kind, value, tb)


def handle_signals() -> dict[signal.Signals | str, Any]:
    """From now on, SIGINT and SIGTERM raise Interrupted (see the module docstring); returns what it replaced
    (the handlers, and sys.excepthook under "excepthook"), for restore_signals.

    Only the main thread can set handlers: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    _received.clear()
    previous: dict[signal.Signals | str, Any] = {signum: signal.signal(signum, _raise) for signum in SIGNALS}
    previous["excepthook"], sys.excepthook = sys.excepthook, _excepthook
    if previous["excepthook"] is not _excepthook:
        _next_hook[-1] = previous["excepthook"]
    return previous


def restore_signals(previous: Mapping[signal.Signals | str, Any]) -> None:
    """Put back what handle_signals() replaced (a command run inside another program, e.g. a test)."""
    for key, handler in previous.items():
        if isinstance(key, signal.Signals):
            signal.signal(key, handler)
        else:
            sys.excepthook = handler


def stop(proc: subprocess.Popen[Any], grace: float = STOP_SECONDS) -> None:
    """End ``proc`` if it still runs: SIGTERM (a build client then cancels its build), then SIGKILL after
    ``grace`` seconds; always waited for, so nothing is left behind."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    capture: bool = False,
    log: Path | None = None,
    input: bytes | None = None,
    stdin: IO[bytes] | None = None,
    timeout: float | None = None,
    inherit_env: bool = True,
    umask: int | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv``. With ``log``, stdout+stderr go to that file (appended).

    ``env`` entries are added to the current environment; without ``inherit_env`` they are the whole
    environment (nothing of the caller's). ``umask`` sets the program's umask instead of the caller's. On a
    non-zero exit with ``check``, raises BuildError naming the command and its status; past ``timeout``
    seconds the program is killed and that is a TimedOut error.
    """
    args = [os.fspath(a) for a in argv]
    full_env = ({**os.environ, **env} if env else None) if inherit_env else dict(env or {})
    popen: dict[str, Any] = {"env": full_env, "cwd": cwd, "stdin": stdin,
                             "umask": -1 if umask is None else umask}  # -1: subprocess leaves it alone
    try:
        if log is not None:
            with open(log, "ab") as sink:
                proc = _complete(args, input, timeout, stdout=sink, stderr=subprocess.STDOUT, **popen)
        else:
            pipe = subprocess.PIPE if capture else None
            proc = _complete(args, input, timeout, stdout=pipe, stderr=pipe, **popen)
    except subprocess.TimeoutExpired:
        raise TimedOut(f"timed out after {timeout:.0f}s: {shlex.join(args)}") from None
    except FileNotFoundError as exc:
        raise BuildError(f"program not found: {args[0]}", hint="run ./setup.sh or 'builder doctor'") from exc
    if check and proc.returncode != 0:
        detail = ""
        if capture and proc.stderr:
            detail = ": " + proc.stderr.decode(errors="replace").strip().splitlines()[-1]
        raise BuildError(f"command failed with exit status {proc.returncode}: {shlex.join(args)}{detail}")
    return proc


def _complete(args: list[str], input: bytes | None, timeout: float | None,
              **popen: Any) -> subprocess.CompletedProcess[bytes]:
    """subprocess.run, but an interrupt stops the program in order (`stop`: SIGTERM, then SIGKILL), so it can
    clean up after itself (mmdebstrap unmounts what it mounted) instead of being killed at once."""
    if input is not None:
        popen["stdin"] = subprocess.PIPE
    with subprocess.Popen(args, **popen) as proc:
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        except BaseException:
            stop(proc)
            raise
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


_PR_SET_PDEATHSIG = 1


def _dies_with(parent: int) -> Callable[[], None]:
    """What a started program runs before its own code: it is killed when ``parent`` dies.

    A SIGKILL (the OOM killer, ``kill -9``) runs no ``finally``; without this the build client it started
    would keep building, orphaned, and the next run's build of the same steps would share BuildKit's work
    with it - and fail when the orphan ends (measured: a rerun after a kill failing once with exit 1). The
    docker CLI ends its buildx plugin when it dies, so the whole client goes."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arrange() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return arrange


def start(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    text: bool = False,
    own_session: bool = False,
) -> subprocess.Popen[Any]:
    """Start ``argv`` for streaming: stdin closed, stdout and stderr merged into one pipe.

    The caller reads ``proc.stdout`` as it comes (build progress, a serial console) and must wait (or
    `stop` it). With ``own_session`` the program is out of the terminal's process group: a Ctrl-C reaches
    only this process, which then stops the program itself - in order, after deciding what to keep.
    """
    args = [os.fspath(a) for a in argv]
    full_env = {**os.environ, **env} if env else None
    try:
        return subprocess.Popen(args, env=full_env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=text, errors="replace" if text else None,
                                start_new_session=own_session, preexec_fn=_dies_with(os.getpid()))
    except FileNotFoundError as exc:
        raise BuildError(f"program not found: {args[0]}", hint="run ./setup.sh or 'builder doctor'") from exc
