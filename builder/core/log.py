"""Steps announce themselves: one helper for progress lines and timing on the terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def step(title: str) -> Iterator[None]:
    """Announce ``title``, and when it ends, how long it took."""
    say(f"==> {title}")
    start = time.monotonic()
    try:
        yield
    except BaseException:
        say(f"<== {title}: failed after {time.monotonic() - start:.1f}s")
        raise
    say(f"<== {title}: done in {time.monotonic() - start:.1f}s")
