"""Benchmark: each boot-media stage through the framework beside the same tools run alone, in one run.

    .venv/bin/python bench/images.py [--runs N] [--platform linux/amd64] [--profiles iso,metal,qemu,azure]

Run it on a checkout whose kernel and initramfs are built for the platform (`doit kernel initramfs`).
Round by round, interleaved so that a busy moment hits every case alike, for each profile:
  1. framework: `doit forget image-NAME:ARCH`, then `doit image-NAME:ARCH NO_CACHE=1` (wall time: doit,
     planning, BuildKit without its cache, the export, the out/ transaction)
  2. tools alone: the same step script (the rendered one, byte for byte) run in the IMAGER image with
     `docker run --network=none`, the artifacts mounted from out/; the time the script takes inside the
     container (xorriso, grub-mkimage, mkfs.fat + mtools, sfdisk, qemu-img, the compressor)
and prints median seconds, the ratio (1)/(2) and the difference: what the framework costs on top.
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
sys.path.insert(0, str(ROOT))

from builder.core.platforms import parse_platforms  # noqa: E402
from builder.resolve.project import Project  # noqa: E402


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc


def framework(label: str, platform: str) -> float:
    run([sys.executable, "-m", "doit", "forget", label, f"PLATFORM={platform}"])
    start = time.perf_counter()
    proc = run([sys.executable, "-m", "doit", label, f"PLATFORM={platform}", "NO_CACHE=1"])
    took = time.perf_counter() - start
    if f".  {label}" not in proc.stdout:
        sys.exit(f"{label} did not run:\n{proc.stdout}")
    return took


def tools_alone(project: Project, name: str, platform_spec: str, scratch: Path) -> float:
    """The image step's own script, in the IMAGER image, without BuildKit or doit: seconds inside."""
    platform = parse_platforms(platform_spec)[0]
    plan = project.plan(name, platform)
    context = scratch / name
    plan.context.write(context, {})
    steps = sorted((context / name / "steps").iterdir())
    argv = ["docker", "run", "--rm", "--network=none",
            "-v", f"{context / name / 'env'}:/.builder/env:ro", "-v", f"{context / 'lib'}:/.builder/lib:ro",
            "-v", f"{steps[0]}:/.builder/step:ro", "-v", f"{context / name / 'files'}:/pkg:ro",
            "-v", f"{ROOT / 'out'}:/artifacts:ro", plan.variables["IMAGER"], "bash", "-c",
            "mkdir -p /build && s=$(date +%s%N) && bash /.builder/step/*.sh >/dev/null && e=$(date +%s%N) && "
            "echo $((e - s))"]
    return int(run(argv).stdout.strip().splitlines()[-1]) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--platform", default="linux/amd64")
    parser.add_argument("--profiles", default="iso,metal,qemu,azure")
    args = parser.parse_args()
    arch = parse_platforms(args.platform)[0].arch
    project = Project.load(ROOT, {"PLATFORM": args.platform})
    names = [f"image-{p}" for p in args.profiles.split(",")]
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-images-") as tmp:
        for round_ in range(args.runs):
            for name in names:
                label = f"{name}:{arch}"
                times.setdefault((name, "framework"), []).append(framework(label, args.platform))
                times.setdefault((name, "tools"), []).append(tools_alone(project, name, args.platform,
                                                                         Path(tmp) / str(round_)))
            print(f"round {round_ + 1}/{args.runs} done", file=sys.stderr)
    print(f"{'stage':<22} {'framework':>10} {'tools alone':>12} {'ratio':>7} {'on top':>8}   ({args.runs} runs, "
          f"medians, {args.platform}, NO_CACHE=1)")
    for name in names:
        ours, raw = statistics.median(times[(name, "framework")]), statistics.median(times[(name, "tools")])
        outputs = ", ".join(project.plan(name, parse_platforms(args.platform)[0]).outputs)
        stage = f"{name}:{arch}"
        print(f"{stage:<22} {ours:>9.2f}s {raw:>11.2f}s {ours / raw:>6.1f}x {ours - raw:>7.2f}s   {outputs}")


if __name__ == "__main__":
    main()
