"""Fixtures for the fast unit tests: tiny projects in tmp dirs; no engine, no network, no /etc/apt."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from builder.core.errors import BuildError
from builder.core.platforms import AMD64
from builder.host.engine import Engine
from builder.model import aptsources
from builder.model.aptsources import AptSources
from builder.model.recipe import Recipe, load_recipe
from builder.resolve.project import Project

MIRROR = "http://mirror.example/debian"
TOOLCHAIN_ID = "sha256:" + "1" * 64
EPOCH = "1735689600"  # 2025-01-01T00:00:00Z

WriteTree = Callable[[Path, Mapping[str, str]], Path]


def _write_tree(root: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


@pytest.fixture(autouse=True)
def _no_epoch_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A SOURCE_DATE_EPOCH exported by CI or reprotest must not change what these tests see."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)


@pytest.fixture(autouse=True)
def _never_this_machines_apt_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings read without given apt sources see an empty tmp dir, never /etc/apt (a safety net: the
    tests that need a mirror give theirs, as AptSources.of(MIRROR))."""
    monkeypatch.setattr(aptsources, "APT_SOURCES", (tmp_path / "no-apt",))


@pytest.fixture
def write_tree() -> WriteTree:
    """write_tree(root, {"rel/path": "text"}): files written (dedented), parents created."""
    return _write_tree


APT = AptSources.of(MIRROR)  # what the tests give as this machine's apt sources


@pytest.fixture
def no_host_apt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """This machine's apt sources never leak in: read, they list only the example mirror."""
    listing = tmp_path / "apt-sources.list"
    listing.write_text(f"deb {MIRROR} bookworm main\n")
    monkeypatch.setattr(aptsources, "APT_SOURCES", (listing,))
    return MIRROR


@pytest.fixture
def make_project(tmp_path: Path, no_host_apt: str) -> Callable[..., Project]:
    """make_project({"recipes/a/pkg.yaml": ...}, cli_vars) -> a fresh Project on an amd64 host.

    Calling it again (re)writes the given files in the same root and returns a new Project, so
    nothing is cached between a "before" and an "after".
    """
    root = tmp_path / "project"

    def make(files: Mapping[str, str] | None = None, cli_vars: Mapping[str, str] | None = None) -> Project:
        if not (root / "dodo.py").exists():
            _write_tree(root, {"dodo.py": "", "recipes/vars.yaml": f"SOURCE_DATE_EPOCH: {EPOCH}\n"})
        _write_tree(root, files or {})
        return Project.load(root, dict(cli_vars or {}), host=AMD64, apt=APT)

    return make


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    """The Docker engine replaced by a dict of image ref -> ID (None: absent; other refs: TOOLCHAIN_ID).

    ``labels`` in the dict under "labels:REF" (a JSON-free "k=v" string) give an image labels."""
    ids: dict[str, str | None] = {}

    def inspect_image(self: Engine, ref: str) -> dict[str, object] | None:
        found = ids.get(ref, TOOLCHAIN_ID)
        if found is None:
            return None
        label = ids.get(f"labels:{ref}")
        labels = dict([label.split("=", 1)]) if label else {}
        return {"Id": found, "Config": {"Labels": labels}, "RepoDigests": []}

    def image_id(self: Engine, ref: str) -> str | None:
        return ids.get(ref, TOOLCHAIN_ID)

    def require_image(self: Engine, ref: str, variable: str = "TOOLCHAIN") -> str:
        found = image_id(self, ref)
        if found is None:
            raise BuildError(f"image {ref} ({variable}) is not in the Docker engine")
        return found

    monkeypatch.setattr(Engine, "inspect_image", inspect_image)
    monkeypatch.setattr(Engine, "image_id", image_id)
    monkeypatch.setattr(Engine, "require_image", require_image)
    return ids


@pytest.fixture
def load(tmp_path: Path) -> Callable[..., Recipe]:
    """load(text, variables=None, name="pkg.yaml") -> the recipe written to tmp_path and loaded."""

    def _load(text: str, variables: Mapping[str, str] | None = None, name: str = "pkg.yaml") -> Recipe:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return load_recipe(path, dict(variables or {}))

    return _load
