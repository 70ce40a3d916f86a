"""Portable identities of what a build takes from outside its context: toolchain and other images, and
published artifacts. Never an engine's local image ID where something portable exists, so that input
signatures compare across machines."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from builder.core.errors import BuildError
from builder.host import engine, outputs

if TYPE_CHECKING:
    from builder.host.services import Services

PACKAGES_LABEL = "org.builder.toolchain.packages-sha256"  # sha256 of the toolchain's package lock
ROOTFS_LABEL = "org.builder.toolchain.rootfs-sha256"  # sha256 of its canonical rootfs tar (= layer diff-ID)
REQUESTED_LABEL = "org.builder.toolchain.requested"  # the package names it was made from (toolchain.PACKAGES)
PACKAGE_WHERE = "PKG"  # where a prebuilt package's image is named: PKG_NAME, PKGS_PREFIX


@dataclass
class Identities:
    """Asks each image once per invocation, of ``services``' engine and registries; artifacts are read
    fresh (an upstream task may just have run). Safe to share between threads: two that ask for the same
    image at once may both ask, and keep the same answer."""

    out_dir: Path
    services: Services
    registry_seconds: float = 30.0
    _images: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def image(self, ref: str, *, where: str = "TOOLCHAIN", platform: str | None = None) -> str:
        """``ref``'s identity: the digest of its reproducible rootfs (a toolchain this project made), else
        of its package lock (an older toolchain), else its registry digest, else (a locally imported image)
        its engine ID, which is not portable. A prebuilt package (``where`` PKG_NAME) is asked of its
        registry, for ``platform``: what the tag names now, so a new push is a new input."""
        key = f"{ref} {platform}" if where.startswith(PACKAGE_WHERE) and platform else ref
        with self._lock:
            known = self._images.get(key)
        if known is None:
            known = self._ask(ref, where, platform)
            with self._lock:
                known = self._images.setdefault(key, known)
        return known

    def _ask(self, ref: str, where: str, platform: str | None) -> str:
        if where.startswith(PACKAGE_WHERE) and platform:
            from builder.host import registry  # only a prebuilt package asks one: not on every no-op's path

            return "digest:" + registry.platform_digest(ref, platform, seconds=self.registry_seconds, where=where,
                                                        session=self.services.registries)
        info = self.services.engine.inspect_image(ref)
        if info is None:
            raise BuildError(f"image {ref} ({where}) is not in the Docker engine",
                             hint=engine.absent_image_hint(ref, toolchain=where in ("TOOLCHAIN", "IMAGER")))
        labels = (info.get("Config") or {}).get("Labels") or {}
        if labels.get(ROOTFS_LABEL):
            return f"rootfs:sha256:{labels[ROOTFS_LABEL]}"
        if labels.get(PACKAGES_LABEL):
            return f"packages:sha256:{labels[PACKAGES_LABEL]}"
        if info.get("RepoDigests"):
            return f"digest:{sorted(info['RepoDigests'])[0].rpartition('@')[2]}"
        return f"local-id:{info['Id']}"

    def artifacts(self) -> dict[str, str]:
        """out/ name -> sha256 as recorded in out/SHA256SUMS now."""
        return outputs.read_sums(self.out_dir)
