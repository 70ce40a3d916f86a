"""Sources are fetched into a download cache and used only after sha256 and sha512 both match."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.core.errors import BuildError
from builder.host.sources import SourceCache, digests
from builder.model.recipe import Recipe

PAYLOAD = b"pretend this is linux-source.tar.xz\n"
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
SHA512 = hashlib.sha512(PAYLOAD).hexdigest()
UNREACHABLE = "http://127.0.0.1:9/debian/pool/hello.tar"  # the discard port: connection refused at once

Load = Callable[..., Recipe]
MakeRecipe = Callable[..., Recipe]


@pytest.fixture(autouse=True)
def no_netrc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A developer's own ~/.netrc plays no part in these tests."""
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    path = tmp_path / "upstream" / "hello.tar"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path


@pytest.fixture
def cache(tmp_path: Path) -> SourceCache:
    return SourceCache(tmp_path / "cache")


@pytest.fixture
def recipe(load: Load) -> MakeRecipe:
    """recipe(url, sha256=..., sha512=...): a recipe whose second source (index 1) is the one under test."""

    def make(url: str, sha256: str = SHA256, sha512: str = SHA512) -> Recipe:
        return load(f"""\
            name: hello
            sources:
              - url: file:///dev/null
                destination: unused
                sha256: {"0" * 63}a
                sha512: {"0" * 127}a
              - url: "{url}"
                destination: src/hello.tar
                sha256: {sha256}
                sha512: {sha512}
            """)

    return make


def downloads(cache: SourceCache) -> list[str]:
    folder = cache.root / "downloads"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_a_file_url_is_fetched_verified_and_kept_in_the_cache_by_sha256(
    cache: SourceCache, recipe: MakeRecipe, upstream: Path
) -> None:
    path = cache.fetch(recipe(upstream.as_uri()), 1)
    assert path == cache.root / "downloads" / SHA256
    assert path.read_bytes() == PAYLOAD
    assert downloads(cache) == [SHA256]  # no partial files left behind


def test_a_cached_source_is_used_without_going_back_to_its_url(
    cache: SourceCache, recipe: MakeRecipe, upstream: Path
) -> None:
    hello = recipe(upstream.as_uri())
    cache.fetch(hello, 1)
    upstream.unlink()
    assert cache.fetch(hello, 1).read_bytes() == PAYLOAD


def test_a_wrong_sha256_is_an_error_naming_the_recipe_file_and_line(
    cache: SourceCache, recipe: MakeRecipe, upstream: Path
) -> None:
    hello = recipe(upstream.as_uri(), sha256="e" * 64)
    with pytest.raises(BuildError) as info:
        cache.fetch(hello, 1)
    text = str(info.value)
    assert text.startswith(f"{hello.path}:7: sha256 mismatch for {upstream}")
    assert f"expected {'e' * 64}, got {SHA256}" in text
    assert downloads(cache) == []  # nothing unverified is ever kept


def test_a_wrong_sha512_is_an_error_too_even_when_sha256_matches(
    cache: SourceCache, recipe: MakeRecipe, upstream: Path
) -> None:
    hello = recipe(upstream.as_uri(), sha512="f" * 128)
    with pytest.raises(BuildError) as info:
        cache.fetch(hello, 1)
    assert str(info.value).startswith(f"{hello.path}:7: sha512 mismatch for {upstream}")
    assert downloads(cache) == []


def test_a_missing_local_source_is_an_error_saying_source_not_found(
    cache: SourceCache, recipe: MakeRecipe, tmp_path: Path
) -> None:
    url = (tmp_path / "nowhere" / "hello.tar").as_uri()
    hello = recipe(url)
    with pytest.raises(BuildError) as info:
        cache.fetch(hello, 1)
    assert str(info.value) == f"{hello.path}:7: source not found: {url}"


def test_a_mirror_directory_is_used_when_the_url_is_unreachable(
    tmp_path: Path, recipe: MakeRecipe, upstream: Path
) -> None:
    cache = SourceCache(tmp_path / "cache", mirror=upstream.parent)
    assert cache.fetch(recipe(UNREACHABLE), 1).read_bytes() == PAYLOAD


def test_a_mirror_may_hold_a_source_under_its_sha256(tmp_path: Path, recipe: MakeRecipe) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "sha256").mkdir(parents=True)
    (mirror / "sha256" / SHA256).write_bytes(PAYLOAD)
    cache = SourceCache(tmp_path / "cache", mirror=mirror)
    assert cache.fetch(recipe(UNREACHABLE), 1).read_bytes() == PAYLOAD


def test_a_corrupt_file_in_the_mirror_is_rejected(tmp_path: Path, recipe: MakeRecipe) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "hello.tar").write_bytes(b"tampered")
    cache = SourceCache(tmp_path / "cache", mirror=mirror)
    with pytest.raises(BuildError, match=f"sha256 mismatch for {mirror / 'hello.tar'}"):
        cache.fetch(recipe(UNREACHABLE), 1)


def test_an_unreachable_url_without_a_mirror_says_where_to_put_the_file(
    cache: SourceCache, recipe: MakeRecipe
) -> None:
    hello = recipe(UNREACHABLE)
    with pytest.raises(BuildError) as info:
        cache.fetch(hello, 1)
    text = str(info.value)
    assert text.startswith(f"{hello.path}:7: connection refused: cannot fetch {UNREACHABLE}")
    assert "SOURCE_MIRROR" in text
    assert downloads(cache) == []


def test_a_corrupted_cache_entry_is_set_aside_and_fetched_again(cache: SourceCache, recipe: MakeRecipe,
                                                                 upstream: Path) -> None:
    hello = recipe(upstream.as_uri())
    cached = cache.fetch(hello, 1)
    cached.write_bytes(b"bit rot")
    assert cache.fetch(hello, 1).read_bytes() == PAYLOAD
    assert downloads(cache) == [".mismatched", SHA256]
    (aside,) = (cache.root / "downloads" / ".mismatched").iterdir()
    assert aside.name.startswith(SHA256 + ".") and aside.read_bytes() == b"bit rot"


def test_a_wrong_sha512_never_deletes_a_cached_file_that_matches_the_sha256(cache: SourceCache, recipe: MakeRecipe,
                                                                            upstream: Path) -> None:
    cached = cache.fetch(recipe(upstream.as_uri()), 1)
    with pytest.raises(BuildError) as info:
        cache.fetch(recipe(upstream.as_uri(), sha512="a" * 128), 1)
    assert "sha512 mismatch for the cached hello.tar" in str(info.value)
    assert "its sha256 matches, so check the recipe's sha512; the file is kept" in str(info.value)
    assert cached.read_bytes() == PAYLOAD


def test_a_source_mirror_that_is_not_a_directory_is_an_error(tmp_path: Path, recipe: MakeRecipe,
                                                             upstream: Path) -> None:
    cache = SourceCache(tmp_path / "cache", tmp_path / "no-such-mirror")
    with pytest.raises(BuildError, match=r"^SOURCE_MIRROR: SOURCE_MIRROR .*/no-such-mirror is not a directory$"):
        cache.fetch(recipe(upstream.as_uri()), 1)


def test_an_unsupported_url_scheme_is_an_error(cache: SourceCache, recipe: MakeRecipe) -> None:
    with pytest.raises(BuildError, match=r"unsupported URL scheme in 'ftp://example\.invalid/hello\.tar'"):
        cache.fetch(recipe("ftp://example.invalid/hello.tar"), 1)


def test_no_message_shows_a_password_in_the_url(cache: SourceCache, recipe: MakeRecipe, tmp_path: Path) -> None:
    with pytest.raises(BuildError) as info:
        cache.fetch(recipe("ftp://user:hunter2@example.invalid/hello.tar"), 1)
    assert "'ftp://user:***@example.invalid/hello.tar'" in str(info.value)
    assert "hunter2" not in str(info.value)
    url = f"file://user:hunter2@{tmp_path / 'nowhere.tar'}"
    with pytest.raises(BuildError) as info:
        cache.fetch(recipe(url), 1)
    assert "hunter2" not in str(info.value)


def test_both_digests_are_computed_in_one_read(upstream: Path) -> None:
    assert digests(upstream) == (SHA256, SHA512)


def test_partial_files_a_killed_writer_left_are_removed_and_a_live_writers_kept(tmp_path: Path) -> None:
    from builder.host.sources import _partial_file

    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid names no running process now
    (tmp_path / f".partial-{dead.pid}-abc").write_bytes(b"half")
    (tmp_path / ".partial-old-format").write_bytes(b"half")
    (tmp_path / f".partial-{os.getppid()}-live").write_bytes(b"in progress")
    made = _partial_file(tmp_path, "url", "recipe")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".partial-{os.getppid()}-live", made.name])
    assert made.name.startswith(f".partial-{os.getpid()}-")
