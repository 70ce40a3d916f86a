"""doit entry point.

    doit kernel initramfs                               # host platform
    doit kernel PLATFORM=linux/arm64                    # one platform
    doit kernel initramfs PLATFORM=linux/amd64,linux/arm64
    doit list                                           # every task, described

NAME=value words are settings (PLATFORM, BACKEND, BUILDER, NO_CACHE, DRY_RUN, SOURCE_MIRROR, CACHE_FROM,
CACHE_TO) or template variables (TOOLCHAIN=..., SOURCE_DATE_EPOCH=..., anything a recipe uses).
"""

import sys
from collections.abc import Iterator
from pathlib import Path

from builder.run import handle_signals
from builder.tasks import dodo_tasks, doit_config

handle_signals()  # from here on Ctrl-C / SIGTERM end doit with one line and status 130 / 143, the build stopped
ROOT = Path(__file__).resolve().parent
DOIT_CONFIG = doit_config(ROOT)  # a damaged .doit.db is one line and status 2, before doit opens it


def task_recipes() -> Iterator[dict[str, object]]:
    yield from dodo_tasks(ROOT, sys.argv)
