"""SIGKILL at random instants, many rounds: a user's `kill -9` (or the OOM killer) can land anywhere in a
build - while doit loads, while the build client runs, while out/ is published. After each kill out/ verifies
with `sha256sum -c SHA256SUMS`, and the next run converges the first time: exit 0, this round's artifact in
out/, nothing left beside it.

The cause of the one rerun that failed after a kill (exit 1, fine the time after): the build client the
killed run had started went on building, orphaned, and the rerun's build shared BuildKit's work with it until
it ended. A started program now dies with its parent (builder/core/run.py); test_interrupts.py holds that rule on
its own, this file holds what a user sees.

Rounds: BUILDER_KILL_ROUNDS (initramfs, default 20: about 5 s each) and BUILDER_KILL_IMAGE_ROUNDS
(`doit images`, default 2: about 40 s each); the instants come from BUILDER_KILL_SEED (default: a new one each
run, printed with any failure). On demand:
BUILDER_KILL_ROUNDS=50 .venv/bin/python -m pytest tests/integration/test_kill_rounds.py.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import MEDIA_WORDS, Built, Result, doit

pytestmark = [pytest.mark.build]

ROUNDS = int(os.environ.get("BUILDER_KILL_ROUNDS", "20"))
IMAGE_ROUNDS = int(os.environ.get("BUILDER_KILL_IMAGE_ROUNDS", "2"))
SEED = int(os.environ.get("BUILDER_KILL_SEED", str(time.time_ns() % 1_000_000)))
AMD64 = "PLATFORM=linux/amd64"


@pytest.fixture(scope="module")
def project(shipped: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shipped project with its out/ and doit database: its kernels are up to date there."""
    root = tmp_path_factory.mktemp("kills") / "project"
    shutil.copytree(shipped.root, root, symlinks=True, ignore=shutil.ignore_patterns(".builder"))
    return root


def killed(root: Path, args: tuple[str, ...], after: float) -> str:
    """Start doit, SIGKILL it (the process alone, as `kill -9 PID` does) ``after`` seconds in; its output."""
    proc = subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        proc.wait(timeout=after)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
    output, _ = proc.communicate(timeout=60)
    return output


def verifies(out: Path) -> None:
    check = subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def leftovers(root: Path) -> list[str]:
    found = [p.name for p in root.iterdir() if p.name.startswith(".out.")]
    tmp = root / ".builder" / "tmp"
    return found + ([f".builder/tmp/{p.name}" for p in tmp.iterdir()] if tmp.is_dir() else [])


def timed(root: Path, *args: str) -> tuple[Result, float]:
    started = time.monotonic()
    result = doit(root, *args, timeout=1800)
    return result, time.monotonic() - started


def mark_init(root: Path, marker: str) -> None:
    """Make this round's initramfs another one: a comment line in its /init."""
    init = root / "recipes" / "initramfs" / "init"
    lines = [line for line in init.read_text().splitlines(keepends=True) if not line.startswith("# kill round")]
    init.write_text("".join(lines) + f"# kill round {marker}\n")


def holds(path: Path, marker: str) -> bool:
    unpacked = subprocess.run(["xz", "-dc", str(path)], capture_output=True, check=True).stdout
    return f"# kill round {marker}\n".encode() in unpacked


def test_an_initramfs_build_killed_at_random_instants_converges_the_first_time(project: Path) -> None:
    rng = random.Random(SEED)
    mark_init(project, "measure")
    first, seconds = timed(project, "initramfs", AMD64)
    assert first.code == 0, first.text[-3000:]
    for round_ in range(ROUNDS):
        marker = f"{SEED}-{round_}"
        mark_init(project, marker)
        after = rng.uniform(0.0, seconds * 1.1)  # from doit's start to just past a whole build's length
        output = killed(project, ("initramfs", AMD64), after)
        where = f"round {round_} of {ROUNDS}, seed {SEED}, killed {after:.1f}s in"
        verifies(project / "out")
        again = doit(project, "initramfs", AMD64, timeout=1800)
        assert again.code == 0, f"{where}: the run after the kill failed\n{output[-1500:]}\n---\n{again.text[-3000:]}"
        assert again.skipped("kernel:amd64"), f"{where}\n{again.stdout}"
        verifies(project / "out")
        assert holds(project / "out" / "initramfs-amd64.xz", marker), f"{where}: out/ holds another round's initramfs"
        assert leftovers(project) == [], where


def test_doit_images_killed_at_random_instants_converges_the_first_time(project: Path) -> None:
    rng = random.Random(SEED + 1)
    words = tuple(w for w in MEDIA_WORDS if not w.startswith("EXTRA_KERNEL_ARGS="))
    first, seconds = timed(project, "images", AMD64, "EXTRA_KERNEL_ARGS=builder.kill=measure", *words)
    assert first.code == 0, first.text[-3000:]
    for round_ in range(IMAGE_ROUNDS):
        extra = f"EXTRA_KERNEL_ARGS=builder.kill={SEED}-{round_}"  # every medium is another one this round
        after = rng.uniform(0.0, seconds * 1.1)
        output = killed(project, ("images", AMD64, extra, *words), after)
        where = f"images round {round_} of {IMAGE_ROUNDS}, seed {SEED}, killed {after:.1f}s in"
        verifies(project / "out")
        again = doit(project, "images", AMD64, extra, *words, timeout=1800)
        assert again.code == 0, f"{where}: the run after the kill failed\n{output[-1500:]}\n---\n{again.text[-3000:]}"
        verifies(project / "out")
        cmdline = (project / "out" / "cmdline-metal-amd64").read_text()
        assert f"builder.kill={SEED}-{round_}" in cmdline, f"{where}: {cmdline}"
        assert leftovers(project) == [], where
