"""doit entry point.

    doit kernel initramfs                               # host platform
    doit kernel PLATFORM=linux/arm64                    # one platform
    doit kernel initramfs PLATFORM=linux/amd64,linux/arm64
    doit list                                           # every task, described

Any NAME=value on the command line is a template variable (TOOLCHAIN=..., SOURCE_DATE_EPOCH=...,
NO_CACHE=1, SOURCE_MIRROR=/path, DRY_RUN=1).
"""

import sys
from collections.abc import Iterator
from pathlib import Path

from doit import doit_cmd

from builder.errors import BuildError
from builder.plan import Project
from builder.platforms import host_platform
from builder.tasks import acquire_run_lock, doit_config, generate, wants_lock

ROOT = Path(__file__).resolve().parent
DOIT_CONFIG = doit_config(ROOT)


def task_recipes() -> Iterator[dict[str, object]]:
    variables = dict(doit_cmd._CMDLINE_VARS or {})
    platform_spec = variables.pop("PLATFORM", None) or host_platform().docker
    dry_run = variables.pop("DRY_RUN", "0") not in ("0", "", "no", "false")
    try:
        if wants_lock(sys.argv) and not dry_run:
            acquire_run_lock(ROOT)
        yield from list(generate(Project(ROOT, variables), platform_spec, dry_run=dry_run))
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
