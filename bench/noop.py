"""Benchmark: what a no-op build costs next to a bare doit, measured side by side in one run.

    .venv/bin/python bench/noop.py [--runs N] [--forced] [--no-big]

Run it on a checkout whose outputs are built (`doit kernel initramfs PLATFORM=linux/amd64,linux/arm64`).
It measures, interleaved round by round so that a busy moment hits every case alike:
  1. python startup alone                                   (the floor)
  2. bare doit: a one-task dodo.py whose task is up to date (the yardstick)
  3. no-op `doit kernel initramfs PLATFORM=linux/amd64,linux/arm64`
  4. the same with the plan memo removed first              (parse + render + hash: what the memo saves)
  5. `builder why` for both platforms                       (the full check, explained)
  6. no-op `doit kernel initramfs image-bench-disk …`, in a copy of the project with one more profile: a raw
     disk image of 4 GiB, a real output built by the imager and checked by every no-op like the others
  7. the same with a disk of the smallest size the layout allows (MIN_DISK_MIB): the same tasks and checks
  8. (6) with the stat record (.builder/hashes.json) removed first: every output read, as before the record
  9. with --forced: the same tasks forced through BuildKit on a warm cache (`doit -a`: what the check saves)
and prints median seconds and the ratio to (2). The goals: (3) costs at most 1.4x (2); (6) at most 1.1x (7),
the same no-op with the same tasks and a small disk. (6) against (3) is printed too: one more task. The
copies (6, 7) are built first, in a scratch directory beside the checkout (/var/tmp): the kernel tasks are up
to date there (out/ and .doit.db copied), the disk images are built (the 4 GiB one is sparse where the file
system allows); --no-big leaves out 6-8.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's builder, the one its doit runs use, not an installed one

from builder.host.hashindex import RACY_NS, RECORD  # noqa: E402
from builder.model.profile import MIN_DISK_MIB  # noqa: E402

BOTH = "PLATFORM=linux/amd64,linux/arm64"
ONE_TASK = '''\
def task_hello():
    return {"actions": ["true"], "file_dep": ["dodo.py"], "targets": [], "verbosity": 0}
'''


MEMO = ROOT / ".builder" / "plan-memo.json"
DISK = "bench-disk"  # profiles/bench-disk.yaml in the copies: task image-bench-disk, out/metal-amd64.raw
DISK_PROFILE = """# a raw disk image of {size}, uncompressed: an output as big as a release's (bench/noop.py)
platform: metal
arch: [amd64]
output:
  kind: disk
  format: raw
  size: {size}
"""
COPY_IGNORE = shutil.ignore_patterns("out", ".builder", ".doit.db*", ".git", "__pycache__", ".pytest_cache",
                                     "*.egg-info", ".ruff_cache", ".mypy_cache")


def disk_project(parent: Path, size: str) -> Path:
    """A copy of the checkout whose out/ also holds a raw disk image of ``size``, built by the framework."""
    project = parent / f"disk-{size}"
    shutil.copytree(ROOT, project, ignore=COPY_IGNORE)
    shutil.copytree(ROOT / "out", project / "out", symlinks=True)  # copied: the checkout's out/ is left alone
    shutil.copy2(ROOT / ".doit.db", project / ".doit.db")
    (project / "profiles" / f"{DISK}.yaml").write_text(DISK_PROFILE.format(size=size))
    start = time.perf_counter()
    seconds([sys.executable, "-m", "doit", "kernel", "initramfs", f"image-{DISK}", BOTH], project)
    image = project / "out" / "metal-amd64.raw"  # Talos's name: the profile's platform and arch
    print(f"built {image.name} ({image.stat().st_size / 2**30:.2f} GiB, {image.stat().st_blocks * 512 / 2**30:.2f}"
          f" GiB on disk) in a copy of the project: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return project


def seconds(argv: list[str], cwd: Path, *, forget_memo: bool = False, forget_record: bool = False) -> float:
    if forget_memo:
        MEMO.unlink(missing_ok=True)
    if forget_record:
        (cwd / ".builder" / RECORD).unlink(missing_ok=True)
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
    parser.add_argument("--no-big", action="store_true", help="leave out the cases with a 4 GiB output")
    args = parser.parse_args()
    py = sys.executable
    noop = [py, "-m", "doit", "kernel", "initramfs", BOTH]
    # What setup.sh does after installing: the project's modules compiled, as pip compiles what it installs
    # (doit's among them), so that neither side of a ratio pays Python's compiler under PYTHONDONTWRITEBYTECODE.
    subprocess.run([py, "-m", "compileall", "-q", str(ROOT / "builder"), str(ROOT / "dodo.py")], check=True,
                   stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="bench-bare-doit-") as bare, \
            tempfile.TemporaryDirectory(prefix="bench-noop-", dir="/var/tmp") as scratch:
        (Path(bare) / "dodo.py").write_text(ONE_TASK)
        cases = {
            "python -c pass": ([py, "-c", "pass"], Path(bare)),
            "bare doit (one up-to-date task)": ([py, "-m", "doit"], Path(bare)),
            "no-op doit kernel initramfs, both arches": (noop, ROOT),
            "the same without the plan memo": (noop, ROOT),
            "builder why, both arches": ([py, "-m", "builder", "why", "--platform", BOTH.split("=")[1]], ROOT),
        }
        if not args.no_big:
            big, small = disk_project(Path(scratch), "4GiB"), disk_project(Path(scratch), f"{MIN_DISK_MIB}MiB")
            with_disk = [*noop, f"image-{DISK}"]
            cases |= {"the same + a 4 GiB disk image": (with_disk, big),
                      f"the same + a {MIN_DISK_MIB} MiB disk image": (with_disk, small),
                      "4 GiB, the stat record removed first": (with_disk, big)}
            time.sleep(RACY_NS / 1e9)  # what was built just now is racy until then: read once more, below
        for argv, cwd in cases.values():  # warm the page cache and doit's database once
            seconds(argv, cwd)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, (argv, cwd) in cases.items():
                times[name].append(seconds(argv, cwd, forget_memo="without the plan memo" in name,
                                           forget_record="stat record removed" in name))
    results = {name: statistics.median(values) for name, values in times.items()}
    if args.forced:
        results["forced rebuild, warm BuildKit cache"] = seconds(
            [py, "-m", "doit", "-a", "kernel", "initramfs", BOTH], ROOT)
    base = results["bare doit (one up-to-date task)"]
    print(f"{'case':44} {'median s':>9} {'x bare doit':>12}")
    for name, value in results.items():
        print(f"{name:44} {value:9.3f} {value / base:12.2f}")
    noop_s = results["no-op doit kernel initramfs, both arches"]
    ratio = noop_s / base
    print(f"\nno-op / bare doit = {ratio:.2f} (goal: at most 1.40) -> {'ok' if ratio <= 1.4 else 'OVER'}")
    if not args.no_big:
        big_s = results["the same + a 4 GiB disk image"]
        small_s = results[f"the same + a {MIN_DISK_MIB} MiB disk image"]
        print(f"4 GiB output / the same + a {MIN_DISK_MIB} MiB disk image = {big_s / small_s:.2f} (goal: at most "
              f"1.10) -> {'ok' if big_s / small_s <= 1.1 else 'OVER'}")
        print(f"4 GiB output / the no-op without a disk image = {big_s / noop_s:.2f} (not a goal: it has one more "
              "task, the disk image's, with its own checks)")


if __name__ == "__main__":
    main()
