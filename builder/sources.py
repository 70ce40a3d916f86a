"""Sources are fetched on the host into a download cache and verified (sha256 and sha512) before use.

Lookup order: the cache (by sha256), then a local mirror directory (air-gapped sites), then the URL
(http, https or file). A file is only ever used after both digests match.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePath
from urllib.parse import unquote, urlparse

from builder.errors import BuildError
from builder.recipe import Recipe, Source

CHUNK = 1 << 20


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("BUILDER_CACHE", Path(base) / "builder"))


def digests(path: Path) -> tuple[str, str]:
    """(sha256, sha512) of a file, read once."""
    h256, h512 = hashlib.sha256(), hashlib.sha512()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h256.update(chunk)
            h512.update(chunk)
    return h256.hexdigest(), h512.hexdigest()


@dataclass(frozen=True)
class SourceCache:
    root: Path
    mirror: Path | None = None

    def cached_path(self, source: Source) -> Path:
        return self.root / "downloads" / source.sha256

    def fetch(self, recipe: Recipe, index: int) -> Path:
        """The verified local copy of ``recipe.sources[index]``; fetches it when absent.

        The cache never loses good data: a cached file that matches the recipe's sha256 but not its sha512
        stays (the recipe is wrong, or the file was forged: either way a person must look), and a file that
        matches neither is moved aside to downloads/.mismatched/, not deleted.
        """
        source = recipe.sources[index]
        where = recipe.where("sources", index)
        if self.mirror is not None and not self.mirror.is_dir():
            raise BuildError(f"SOURCE_MIRROR {self.mirror} is not a directory", where="SOURCE_MIRROR")
        cached = self.cached_path(source)
        if cached.is_file():
            sha256, sha512 = digests(cached)
            if (sha256, sha512) == (source.sha256, source.sha512):
                return cached
            if sha256 == source.sha256:
                raise BuildError(f"sha512 mismatch for the cached {source.filename} ({cached}): expected "
                                 f"{source.sha512}, got {sha512}", where=where,
                                 hint="its sha256 matches, so check the recipe's sha512; the file is kept")
            self._set_aside(cached)
        cached.parent.mkdir(parents=True, exist_ok=True)
        for candidate in self._mirror_candidates(source):
            if candidate.is_file():
                return self._store(candidate, source, where, cached)
        url = urlparse(source.url)
        if url.scheme == "file":
            local = Path(unquote(url.path))
            if not local.is_file():
                raise BuildError(f"source not found: {source.url}", where=where)
            return self._store(local, source, where, cached)
        if url.scheme in ("http", "https"):
            return self._download(source, where, cached)
        raise BuildError(f"unsupported URL scheme in {source.url!r}; expected http, https or file", where=where)

    def _set_aside(self, path: Path) -> Path:
        """Move a cached file whose bytes match no digest out of the way, keeping it for a look."""
        aside = self.root / "downloads" / ".mismatched"
        aside.mkdir(parents=True, exist_ok=True)
        target = aside / f"{path.name}.{int(time.time())}"
        os.replace(path, target)
        print(f"    moved a cached file that matches no digest aside: {target}", file=sys.stderr, flush=True)
        return target

    def _mirror_candidates(self, source: Source) -> list[Path]:
        if self.mirror is None:
            return []
        names = [source.filename, PurePath(source.destination).name, f"sha256/{source.sha256}"]
        return [self.mirror / n for n in names if n]

    def _store(self, origin: Path, source: Source, where: str, cached: Path) -> Path:
        self._verify(origin, source, where, origin=str(origin))
        fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=".partial-")
        os.close(fd)
        try:
            shutil.copyfile(origin, tmp)
            os.replace(tmp, cached)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return cached

    def _download(self, source: Source, where: str, cached: Path) -> Path:
        fd, tmp_name = tempfile.mkstemp(dir=cached.parent, prefix=".partial-")
        tmp = Path(tmp_name)
        try:
            print(f"    fetching {source.url}", file=sys.stderr, flush=True)
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(source.url, timeout=60) as resp:
                shutil.copyfileobj(resp, out, CHUNK)
            self._verify(tmp, source, where, origin=source.url)
            os.replace(tmp, cached)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise BuildError(f"source not found: cannot fetch {source.url}: {reason}", where=where,
                             hint="put the file in the download cache or a SOURCE_MIRROR directory") from None
        finally:
            if tmp.exists():
                tmp.unlink()
        return cached

    @staticmethod
    def _verify(path: Path, source: Source, where: str, *, origin: str) -> None:
        sha256, sha512 = digests(path)
        for algo, want, got in (("sha256", source.sha256, sha256), ("sha512", source.sha512, sha512)):
            if want != got:
                raise BuildError(f"{algo} mismatch for {origin}: expected {want}, got {got}", where=where)



