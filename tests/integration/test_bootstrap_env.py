"""The bootstrap does not depend on the caller's environment: two real bootstraps, one from an environment
with PYTHONDONTWRITEBYTECODE=1, a German LANG, Tokyo's TZ and umask 077, one without them and umask 022, give
the same canonical rootfs.

A tiny image (minbase + python3-minimal, whose postinst byte-compiles /usr/share/python3/debpython: the
.pyc files that came out hash- or timestamp-based depending on PYTHONDONTWRITEBYTECODE) made by the project's
own `toolchain.rootfs`, in a subprocess per environment (the umask and the environment are the process's);
nothing is imported into the engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.build.toolchain import BOOTSTRAP_SECONDS
from builder.model.aptsources import AptSources
from builder.model.variables import DEFAULTS

from .conftest import ROOT

pytestmark = [pytest.mark.build]

SUITE = DEFAULTS["DEBIAN_SUITE"]
CALLER_VARIABLES = ("PYTHONDONTWRITEBYTECODE", "LANG", "LANGUAGE", "LC_ALL", "TZ")

# Runs in the subprocess: one bootstrap, then what the test compares, as one JSON line.
BOOTSTRAP = """
import json, sys, tarfile, time
from builder.build import toolchain

kind = toolchain.Kind("envtest", "ENVTEST", ("python3-minimal",))
start = time.monotonic()
with toolchain.rootfs(sys.argv[1], sys.argv[2], kind) as made:
    seconds = time.monotonic() - start
    with tarfile.open(made.tarball) as tar:
        # a .pyc's flags word (bytes 4-8): 0 timestamp-based, 1 or 3 hash-based
        pyc = {m.name: int.from_bytes(tar.extractfile(m).read(8)[4:8], "little") for m in tar
               if m.isreg() and m.name.startswith("./usr/share/python3/debpython/") and m.name.endswith(".pyc")}
print(json.dumps({"digest": made.digest, "seconds": round(seconds, 1), "pyc": pyc}))
"""


def bootstrap(cache: Path, mirror: str, umask: int, **variables: str) -> dict[str, object]:
    """One bootstrap from a caller with these ``variables`` (the others of CALLER_VARIABLES unset) and ``umask``."""
    env = {name: value for name, value in os.environ.items() if name not in CALLER_VARIABLES}
    env.update(variables, BUILDER_CACHE=str(cache))  # the bootstrap's log, per run
    proc = subprocess.run([sys.executable, "-c", BOOTSTRAP, SUITE, mirror], cwd=ROOT, env=env, umask=umask,
                          capture_output=True, text=True, timeout=BOOTSTRAP_SECONDS + 60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    print(f"{variables or 'plain'} umask {umask:03o}: {result}")
    return result


def test_two_bootstraps_from_different_caller_environments_give_the_same_rootfs(tmp_path: Path) -> None:
    mirror = AptSources.read().mirror(SUITE)
    assert mirror, f"no Debian mirror for {SUITE} in this machine's apt sources"
    odd = bootstrap(tmp_path / "odd", mirror, 0o077, PYTHONDONTWRITEBYTECODE="1", LANG="de_DE.UTF-8",
                    TZ="Asia/Tokyo")
    plain = bootstrap(tmp_path / "plain", mirror, 0o022)
    assert len(plain["pyc"]) == 5, plain  # type: ignore[arg-type]  # what the test is about was made
    assert (odd["digest"], odd["pyc"]) == (plain["digest"], plain["pyc"])
