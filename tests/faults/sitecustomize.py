"""Fault injection for tests, from outside builder/: with this directory on PYTHONPATH and
``BUILDER_FAULT=POINT`` set, the process kills itself (SIGKILL) at that write boundary of an out/ publish.
It wraps builder.host.outputs' own steps, so builder/ holds no hook for tests.

Points, in the order a publish passes them (see builder.host.outputs.publish):
  stage           the staging tree is made; before the old tree is linked into it
  stage-artifact  the first new artifact is moved into the staging tree
  stage-sums      SHA256SUMS is written there, manifest.json not yet
  staged          the staging tree is complete; before it is swapped in
  exchanged       the swap is done; before the old tree is removed
  committed       the publish returned
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable
from typing import Any

POINTS = ("stage", "stage-artifact", "stage-sums", "staged", "exchanged", "committed")
VARIABLE = "BUILDER_FAULT"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _wrap(module: Any, name: str, *, before: Callable[..., bool] | None = None,
          after: Callable[..., bool] | None = None) -> None:
    inner = getattr(module, name)

    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before is not None and before(*args):
            _die()
        result = inner(*args, **kwargs)
        if after is not None and after(*args):
            _die()
        return result

    setattr(module, name, wrapper)


def _install(point: str) -> None:
    from builder.host import outputs

    always: Callable[..., bool] = lambda *args: True  # noqa: E731
    if point == "stage":
        _wrap(outputs, "_link_tree", before=always)
    elif point == "stage-artifact":
        _wrap(outputs, "_move", after=always)
    elif point == "stage-sums":
        _wrap(outputs, "_write", after=lambda path, *rest: path.name == outputs.SUMS)
    elif point == "staged":
        _wrap(outputs, "_swap", before=always)
    elif point == "exchanged":
        _wrap(outputs, "_swap", after=always)
    elif point == "committed":
        _wrap(outputs, "publish", after=always)
    else:
        raise SystemExit(f"{VARIABLE}={point}: not one of {', '.join(POINTS)}")


if os.environ.get(VARIABLE):
    _install(os.environ[VARIABLE])
