"""Benchmark: what a no-op `doit kernel initramfs` costs, side by side in one run.

    python3 bench/noop.py [--runs N]

Measures, on the current checkout (build it first):
  1. python startup alone                      (the floor)
  2. `doit kernel initramfs` with nothing changed (content check: render + hash + engine query)
  3. `builder why`                              (the same check, explained)
  4. the same tasks forced through BuildKit with a warm cache (`doit -a`: what the check saves)
and prints the median seconds and the ratios to (2).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def median_seconds(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed:\n{proc.stdout}{proc.stderr}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    py = sys.executable
    cases = {
        "python -c pass": [py, "-c", "pass"],
        "no-op doit kernel initramfs": [py, "-m", "doit", "kernel", "initramfs"],
        "builder why": [py, "-m", "builder", "why"],
        "forced rebuild, warm BuildKit cache": [py, "-m", "doit", "-a", "kernel", "initramfs"],
    }
    results = {}
    for name, argv in cases.items():
        runs = 1 if "forced" in name else args.runs
        results[name] = median_seconds(argv, runs)
    base = results["no-op doit kernel initramfs"]
    print(f"{'case':40} {'median s':>9} {'x no-op':>8}")
    for name, seconds in results.items():
        print(f"{name:40} {seconds:9.3f} {seconds / base:8.2f}")


if __name__ == "__main__":
    main()
