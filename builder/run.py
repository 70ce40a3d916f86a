"""One way to run a program: argument lists, never shell strings; failures become BuildError."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

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
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv``. With ``log``, stdout+stderr go to that file (appended).

    ``env`` entries are added to the current environment. On a non-zero exit with ``check``,
    raises BuildError naming the command and its status.
    """
    args = [os.fspath(a) for a in argv]
    full_env = {**os.environ, **env} if env else None
    try:
        if log is not None:
            with open(log, "ab") as sink:
                proc = subprocess.run(
                    args, env=full_env, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT, input=input,
                    stdin=stdin,
                )
        else:
            proc = subprocess.run(
                args,
                env=full_env,
                cwd=cwd,
                capture_output=capture,
                input=input,
                stdin=stdin,
            )
    except FileNotFoundError as exc:
        raise BuildError(f"program not found: {args[0]}", hint="run ./setup.sh or 'builder doctor'") from exc
    if check and proc.returncode != 0:
        detail = ""
        if capture and proc.stderr:
            detail = ": " + proc.stderr.decode(errors="replace").strip().splitlines()[-1]
        raise BuildError(f"command failed with exit status {proc.returncode}: {shlex.join(args)}{detail}")
    return proc
