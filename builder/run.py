"""One way to run a program: argument lists, never shell strings; failures become BuildError."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from builder.errors import BuildError


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
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv``. With ``log``, stdout+stderr go to that file (appended).

    ``env`` entries are added to the current environment. On a non-zero exit with ``check``,
    raises BuildError naming the command and its status; past ``timeout`` seconds the program
    is killed and that is a BuildError too.
    """
    args = [os.fspath(a) for a in argv]
    full_env = {**os.environ, **env} if env else None
    try:
        if log is not None:
            with open(log, "ab") as sink:
                proc = subprocess.run(
                    args, env=full_env, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT, input=input,
                    stdin=stdin, timeout=timeout,
                )
        else:
            proc = subprocess.run(
                args,
                env=full_env,
                cwd=cwd,
                capture_output=capture,
                input=input,
                stdin=stdin,
                timeout=timeout,
            )
    except subprocess.TimeoutExpired:
        raise BuildError(f"timed out after {timeout:.0f}s: {shlex.join(args)}") from None
    except FileNotFoundError as exc:
        raise BuildError(f"program not found: {args[0]}", hint="run ./setup.sh or 'builder doctor'") from exc
    if check and proc.returncode != 0:
        detail = ""
        if capture and proc.stderr:
            detail = ": " + proc.stderr.decode(errors="replace").strip().splitlines()[-1]
        raise BuildError(f"command failed with exit status {proc.returncode}: {shlex.join(args)}{detail}")
    return proc


def start(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    text: bool = False,
) -> subprocess.Popen[Any]:
    """Start ``argv`` for streaming: stdin closed, stdout and stderr merged into one pipe.

    The caller reads ``proc.stdout`` as it comes (build progress, a serial console) and must wait.
    """
    args = [os.fspath(a) for a in argv]
    full_env = {**os.environ, **env} if env else None
    try:
        return subprocess.Popen(args, env=full_env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=text, errors="replace" if text else None)
    except FileNotFoundError as exc:
        raise BuildError(f"program not found: {args[0]}", hint="run ./setup.sh or 'builder doctor'") from exc
