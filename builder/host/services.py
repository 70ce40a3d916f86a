"""What one invocation asks of the world outside the project: the Docker engine, BuildKit, and registries.

One Services value is made per invocation (doit, `builder build`, any `builder` command) and passed down
to whatever needs it; no module keeps any of it as a global. Each part remembers what it learnt for as
long as the invocation runs (an engine that timed out, the docker client probes and the BuildKit path they
chose, registry credentials and tokens), and each is safe to share between threads: the builds of one
invocation may run in parallel.

Each part is made when first asked, under a lock: a no-op run that never asks a registry does not import
the registry client.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from builder.host.engine import Engine

if TYPE_CHECKING:
    from builder.host.backend import BuildKits
    from builder.host.registry import Session


class Services:
    """The engine, the BuildKit paths through it and the registry session of one invocation."""

    def __init__(self, engine: Engine | None = None, registries: Session | None = None) -> None:
        self._lock = threading.Lock()
        self.engine = engine or Engine()
        self._buildkits: BuildKits | None = None
        self._registries = registries

    @property
    def buildkits(self) -> BuildKits:
        from builder.host.backend import BuildKits

        with self._lock:
            if self._buildkits is None:
                self._buildkits = BuildKits(self.engine)
            return self._buildkits

    @property
    def registries(self) -> Session:
        from builder.host.registry import Session

        with self._lock:
            if self._registries is None:
                self._registries = Session()
            return self._registries
