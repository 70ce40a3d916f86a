"""Benchmark: what a no-op build costs next to a bare doit, measured side by side in one run.

    .venv/bin/python bench/noop.py [--runs N] [--forced]

Run it on a checkout whose outputs are built (`doit kernel initramfs PLATFORM=linux/amd64,linux/arm64`).
It measures, interleaved round by round so that a busy moment hits every case alike:
  1. python startup alone                                   (the floor)
  2. bare doit: a one-task dodo.py whose task is up to date (the yardstick)
  3. no-op `doit kernel initramfs PLATFORM=linux/amd64,linux/arm64`
  4. the same with the plan memo removed first              (parse + render + hash: what the memo saves)
  5. `builder why` for both platforms                       (the full check, explained)
  6. with --forced: the same tasks forced through BuildKit on a warm cache (`doit -a`: what the check saves)
and prints median seconds and the ratio to (2). The goal: (3) costs at most 2x (2).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOTH = "PLATFORM=linux/amd64,linux/arm64"
ONE_TASK = '''\
def task_hello():
    return {"actions": ["true"], "file_dep": ["dodo.py"], "targets": [], "verbosity": 0}
'''


MEMO = ROOT / ".builder" / "plan-memo.json"


def seconds(argv: list[str], cwd: Path, *, forget_memo: bool = False) -> float:
    if forget_memo:
        MEMO.unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{proc.stdout}{proc.stderr}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--forced", action="store_true", help="also time a forced rebuild on a warm cache")
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-bare-doit-") as bare:
        (Path(bare) / "dodo.py").write_text(ONE_TASK)
        cases = {
            "python -c pass": ([py, "-c", "pass"], Path(bare)),
            "bare doit (one up-to-date task)": ([py, "-m", "doit"], Path(bare)),
            "no-op doit kernel initramfs, both arches": ([py, "-m", "doit", "kernel", "initramfs", BOTH], ROOT),
            "the same without the plan memo": ([py, "-m", "doit", "kernel", "initramfs", BOTH], ROOT),
            "builder why, both arches": ([py, "-m", "builder", "why", "--platform", BOTH.split("=")[1]], ROOT),
        }
        for argv, cwd in cases.values():  # warm the page cache and doit's database once
            seconds(argv, cwd)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, (argv, cwd) in cases.items():
                times[name].append(seconds(argv, cwd, forget_memo="without the plan memo" in name))
    results = {name: statistics.median(values) for name, values in times.items()}
    if args.forced:
        results["forced rebuild, warm BuildKit cache"] = seconds(
            [py, "-m", "doit", "-a", "kernel", "initramfs", BOTH], ROOT)
    base = results["bare doit (one up-to-date task)"]
    print(f"{'case':44} {'median s':>9} {'x bare doit':>12}")
    for name, value in results.items():
        print(f"{name:44} {value:9.3f} {value / base:12.2f}")
    ratio = results["no-op doit kernel initramfs, both arches"] / base
    print(f"\nno-op / bare doit = {ratio:.2f} (goal: at most 2.00) -> {'ok' if ratio <= 2 else 'OVER'}")


if __name__ == "__main__":
    main()
