"""doit entry point.

    doit kernel initramfs                               # host platform
    doit kernel PLATFORM=linux/arm64                    # one platform
    doit kernel initramfs PLATFORM=linux/amd64,linux/arm64
    doit list                                           # every task, described

NAME=value words are settings (PLATFORM, BACKEND, OUT_DIR, NO_CACHE, DRY_RUN, PUSH, ...: SETTINGS in
builder/model/settings.py) or template variables (TOOLCHAIN=..., SOURCE_DATE_EPOCH=..., anything a recipe uses).
"""

import sys
from collections.abc import Iterator
from pathlib import Path

from builder.cli.doitglue import Session
from builder.core.run import handle_signals

handle_signals()  # from here on Ctrl-C / SIGTERM end doit with one line and status 130 / 143, the build stopped
SESSION = Session.from_argv(Path(__file__).resolve().parent, sys.argv)  # a bad NAME=value: one line, status 2
DOIT_CONFIG = SESSION.doit_config()  # a damaged .doit.db is one line and status 2, before doit opens it


def task_recipes() -> Iterator[dict[str, object]]:
    yield from SESSION.tasks()
