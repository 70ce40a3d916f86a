"""What one invocation asks of the outside is shared by its threads: each question is asked once (or, where
two threads race, answered the same), and no answer leaks into another invocation."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.host import backend
from builder.host.backend import BuildKits
from builder.host.engine import Engine
from builder.host.services import Services
from builder.resolve.identity import ROOTFS_LABEL, Identities


def together(count: int, work: Callable[[int], object]) -> list[object]:
    """``work(n)`` for n in range(count), all threads released at once; their results in order."""
    start, results = threading.Barrier(count), [None] * count

    def run(n: int) -> None:
        start.wait()
        results[n] = work(n)  # type: ignore[call-overload]

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    return results


def test_threads_choosing_a_buildkit_path_probe_each_client_once(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def probe(self: BuildKits, argv: list[str]) -> str | None:
        asked.append(" ".join(argv[1:]))
        time.sleep(0.05)  # long enough for every thread to arrive while the first one asks
        return {"buildx version": "github.com/docker/buildx 0.13.1", "buildx inspect": "Driver: docker\n"}.get(
            " ".join(argv[1:]))

    monkeypatch.setattr(backend, "_clients", lambda: ["/usr/bin/docker"])
    monkeypatch.setattr(BuildKits, "_output", probe)
    kits = Services().buildkits
    chosen = together(8, lambda n: kits.select())
    assert len({id(kit) for kit in chosen}) == 1 and asked == ["buildx version", "buildx inspect"]
    Services().buildkits.select()  # another invocation asks afresh
    assert asked == ["buildx version", "buildx inspect"] * 2


def test_threads_asking_an_image_identity_get_one_answer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    asked: list[str] = []

    def inspect(self: Engine, ref: str) -> dict[str, object]:
        asked.append(ref)
        return {"Id": "sha256:" + "1" * 64, "Config": {"Labels": {ROOTFS_LABEL: "2" * 64}}, "RepoDigests": []}

    monkeypatch.setattr(Engine, "inspect_image", inspect)
    identities = Identities(tmp_path, Services())
    answers = together(8, lambda n: identities.image("builder-toolchain:bookworm"))
    assert set(answers) == {"rootfs:sha256:" + "2" * 64}
    identities.image("builder-toolchain:bookworm")
    assert 1 <= len(asked) <= 8  # once, or once per thread that raced the first: never again after
    before = len(asked)
    identities.image("builder-toolchain:bookworm")
    assert len(asked) == before
