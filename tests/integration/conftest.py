"""Shared helpers for the real tests: they drive the project the way a user does (doit, builder)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.core.platforms import Platform
from builder.host import qemu

from ..signing import SIGNING
from .registries import Registry, TokenIssuer, docker_registry, htpasswd_auth

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
COPY_IGNORE = shutil.ignore_patterns("out", ".builder", ".venv", ".doit.db*", ".git", "__pycache__",
                                     ".pytest_cache", "*.egg-info", ".ruff_cache", ".mypy_cache")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout + self.stderr

    def last_line(self) -> str:
        lines = [line for line in self.text.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        return errors[-1] if errors else (lines[-1] if lines else "")

    def ran(self, task: str) -> bool:
        return f".  {task}" in self.stdout

    def skipped(self, task: str) -> bool:
        return f"-- {task}" in self.stdout


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None, timeout: float) -> Result:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    return Result(proc.returncode, proc.stdout, proc.stderr)


def doit(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 3600) -> Result:
    return _run([sys.executable, "-m", "doit", *args], cwd, env, timeout)


def builder(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> Result:
    return _run([sys.executable, "-m", "builder", *args], cwd, env, timeout)


def copy_project(dest: Path) -> Path:
    """A copy of the project in another directory, without outputs or build state."""
    shutil.copytree(ROOT, dest, ignore=COPY_IGNORE)
    return dest


def snapshot(directory: Path) -> dict[str, str]:
    """name -> sha256 of every file under ``directory`` (to prove out/ was left as it was)."""
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def sums(out: Path) -> dict[str, str]:
    """out/SHA256SUMS as name -> sha256."""
    result = {}
    for line in (out / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        result[name] = digest
    return result


def kernel_release(modules_tar: Path) -> str:
    """The release the kernel was built as, read from its modules tree."""
    names = subprocess.run(["tar", "-tf", str(modules_tar)], capture_output=True, text=True, check=True).stdout
    for name in names.splitlines():
        parts = name.removeprefix("./").split("/")
        if len(parts) >= 3 and parts[:2] == ["lib", "modules"] and parts[2]:
            return parts[2]
    raise AssertionError(f"no lib/modules/<release> in {modules_tar}")


BOTH = "PLATFORM=linux/amd64,linux/arm64"
SHIPPED_OUTPUTS = tuple(f"{name}-{arch}{ext}" for arch in ("amd64", "arm64")
                        for name, ext in (("vmlinuz", ""), ("config", ""), ("modules", ".tar"), ("initramfs", ".xz")))


RELEASE_CERT = "tests/integration/data/signing/release.crt"  # the public certificate, a project file

RELEASE_WORDS = ("MODULE_SIGNING=release", f"MODULE_SIGNING_CERT={RELEASE_CERT}",
                 f"MODULE_SIGNING_KEY={SIGNING / 'release.key'}")  # the key: a host file outside the project


def sign_releases(root: Path, *, key: bool = True) -> None:
    """Make ``root`` a release pipeline's checkout: MODULE_SIGNING=release in recipes/vars.yaml, with the
    test certificate, and the private key from outside the project (without ``key``: an auditor's)."""
    words = RELEASE_WORDS if key else RELEASE_WORDS[:2]
    with open(root / "recipes" / "vars.yaml", "a") as f:
        f.write("\n# tests: a release pipeline's checkout\n" + "".join(
            f"{name}: {value}\n" for name, value in (word.split("=", 1) for word in words)))


@dataclass
class Built:
    """A scratch copy of the project after a doit run in it."""

    root: Path
    result: Result

    @property
    def out(self) -> Path:
        return self.root / "out"


@pytest.fixture(scope="session")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The main job on the shipped default configs, for both arches, in a scratch copy of the project
    (the checkout's own out/ is never touched), through the first BuildKit path this machine has. Signed as
    a release (MODULE_SIGNING=release with the test key), so that a rebuild elsewhere can be bit-identical."""
    root = copy_project(tmp_path_factory.mktemp("shipped") / "project")
    sign_releases(root)
    result = doit(root, "kernel", "initramfs", BOTH, f"BACKEND={backends()[0]}")
    assert result.code == 0, result.text[-3000:]
    return Built(root, result)


# What `doit images` takes in the tests: an extra kernel argument and a META value, both of which every
# booted medium must show in its marker.
MEDIA_WORDS = ("EXTRA_KERNEL_ARGS=builder.test=extra-arg", "META=0x0a=network: test/1")
MEDIA_OUTPUTS = ("metal-amd64.iso", "metal-arm64.iso", "metal-amd64.raw.zst", "metal-arm64.raw.zst",
                 "qemu-amd64.qcow2", "qemu-arm64.qcow2", "azure-amd64.vhd.xz", "cmdline-metal-amd64",
                 "cmdline-metal-arm64", "metal-arm64-qemu-uboot.raw.zst", "metal-arm64-qemu-uboot-u-boot.bin")


@pytest.fixture(scope="session")
def media(shipped: Built, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Every shipped profile's boot media for both arches, from the shipped kernels and initramfs, in a copy
    of the shipped project with its out/ and doit database (its kernel tasks are up to date there: their
    inputs do not depend on the path), so that the shipped out/ stays the kernel build alone (what the
    auditor's check compares)."""
    root = tmp_path_factory.mktemp("media") / "project"
    shutil.copytree(shipped.root, root, symlinks=True, ignore=shutil.ignore_patterns(".builder"))
    result = doit(root, "images", BOTH, *MEDIA_WORDS)
    assert result.code == 0, result.text[-3000:]
    for task in ("kernel:amd64", "kernel:arm64", "initramfs:amd64", "initramfs:arm64"):
        assert result.skipped(task), result.stdout  # the media take the shipped kernels, never a rebuild
    return Built(root, result)


def boot_to_marker(root: Path, platform: Platform, timeout: float = 400, *, flavor: str = "") -> qemu.BootResult:
    """Boot root/out's kernel + initramfs for ``platform`` (and flavor); the marker names that kernel and the arch."""
    out, name = root / "out", platform.arch + (f"-{flavor}" if flavor else "")
    result = qemu.boot(platform, out / f"vmlinuz-{name}", out / f"initramfs-{name}.xz",
                       timeout=timeout, console=root / ".builder" / "logs" / f"boot-{name}.log")
    assert result.machine == platform.carch
    assert result.release == kernel_release(out / f"modules-{name}.tar")
    return result


def backends() -> list[str]:
    """The BuildKit paths this machine has: buildx, and the engine's built-in BuildKit where a docker client
    older than 23 can drive it (Debian 12's docker.io; Debian 13's clients cannot)."""
    from builder.core.errors import BuildError
    from builder.host.services import Services

    found, services = [], Services()
    for name in ("buildx", "engine"):
        try:
            services.buildkits.select(name)
        except BuildError:
            continue
        found.append(name)
    return found


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes ``backend`` runs once per BuildKit path of this machine."""
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", backends() or ["none"], scope="session")


@pytest.fixture(scope="session", autouse=True)
def engine_and_toolchain(request: pytest.FixtureRequest) -> None:
    """Real tests need the engine and the toolchain image: ./setup.sh provides both."""
    if not any(item.get_closest_marker("build") or item.get_closest_marker("boot")
               for item in request.session.items):
        return
    doctor = builder(ROOT, "doctor")
    if doctor.code != 0:
        message = f"the machine is not set up (run ./setup.sh):\n{doctor.text}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


# The registries with credentials that test_registry_auth*.py push to and pull from (tests/integration/registries.py)

@pytest.fixture(scope="module")
def basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry with htpasswd basic auth, for one module."""
    root = tmp_path_factory.mktemp("basic-registry")
    with docker_registry(root, htpasswd_auth(root)) as served:
        yield served


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> TokenIssuer:
    """The signer of the token endpoint's JWTs, for one module."""
    return TokenIssuer(tmp_path_factory.mktemp("token-issuer"))
