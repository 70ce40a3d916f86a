"""Section 3's workflow, for real: the kernel task pushes its output tree to a registry (docker-registry on
127.0.0.1, started here and stopped after), and another checkout builds the initramfs from that image
through PKG_KERNEL= without compiling a kernel, and boots (its modules signed by the release key). A new
push to the same tag is a new input of what takes it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.core.platforms import AMD64

from .conftest import BOTH, Built, boot_to_marker, builder, copy_project, doit, sums
from .registries import docker_registry

pytestmark = [pytest.mark.build]


@pytest.fixture(scope="module")
def loopback_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """docker-registry serving 127.0.0.1:PORT from a scratch directory, anonymous, for this module only."""
    with docker_registry(tmp_path_factory.mktemp("registry")) as served:
        yield served.address


@pytest.fixture(scope="module")
def pushed(shipped: Built, loopback_registry: str) -> str:
    """The shipped kernel, both arches, pushed as test/kernel:t1 (an index over t1-amd64 and t1-arm64)."""
    result = doit(shipped.root, "kernel", BOTH, "PUSH=1", f"REGISTRY={loopback_registry}", "USERNAME=test", "TAG=t1")
    assert result.code == 0, result.text[-3000:]
    assert f"pushed {loopback_registry}/test/kernel:t1 (amd64, arm64)" in result.text, result.text[-3000:]
    return f"{loopback_registry}/test/kernel:t1"


@pytest.fixture(scope="module")
def consumer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("consumer") / "project")


def test_a_pushed_kernel_makes_the_initramfs_elsewhere_without_compiling_one(shipped: Built, pushed: str,
                                                                             consumer: Path) -> None:
    result = doit(consumer, "kernel", "initramfs", "PLATFORM=linux/amd64", f"PKG_KERNEL={pushed}")
    assert result.code == 0, result.text[-3000:]
    for task in ("kernel:amd64", "initramfs:amd64"):
        assert result.ran(task), result.stdout
    text = (consumer / ".builder" / "logs" / "kernel-amd64.log").read_text()
    assert "==> kernel-build:" not in text and "linux-source" not in text  # no kernel step ran
    assert f"COPY --from={pushed} / /prebuilt/" in text
    built, reference = sums(consumer / "out"), sums(shipped.out)
    for name in ("vmlinuz-amd64", "config-amd64", "modules-amd64.tar"):
        assert built[name] == reference[name]  # the very bytes that were pushed


@pytest.mark.boot
def test_the_initramfs_made_from_the_pushed_kernel_boots_with_its_modules(consumer: Path) -> None:
    result = boot_to_marker(consumer, AMD64)
    assert "BUILDER-VPOLL " in result.console and "BUILDER-EXAMPLE hello" in result.console


def test_a_new_push_to_the_same_tag_rebuilds_what_takes_it(pushed: str, consumer: Path) -> None:
    still = builder(consumer, "why", "--platform", "linux/amd64", "-v", f"PKG_KERNEL={pushed}")
    assert "kernel:amd64: up to date" in still.stdout and "initramfs:amd64: up to date" in still.stdout, still.text
    # the same tree with another label is another image: push it to t1-amd64 and make the index again
    amd64 = f"{pushed}-amd64"
    subprocess.run(["docker", "pull", "-q", amd64], check=True, capture_output=True, timeout=300)
    container = subprocess.run(["docker", "create", amd64, "/none"], check=True, capture_output=True, text=True,
                               timeout=60).stdout.strip()
    try:
        subprocess.run(["docker", "commit", "--change", "LABEL org.builder.test=second-push", container, amd64],
                       check=True, capture_output=True, timeout=120)
    finally:
        subprocess.run(["docker", "rm", container], capture_output=True, timeout=60)
    for argv in (["docker", "push", "-q", amd64],
                 ["docker", "manifest", "rm", pushed],
                 ["docker", "manifest", "create", "--insecure", pushed, amd64, f"{pushed}-arm64"],
                 ["docker", "manifest", "push", "--insecure", "--purge", pushed]):
        subprocess.run(argv, check=argv[2] != "rm", capture_output=True, timeout=300)

    why = builder(consumer, "why", "--platform", "linux/amd64", "-v", f"PKG_KERNEL={pushed}")
    assert "kernel:amd64: would rebuild" in why.stdout and "initramfs:amd64: would rebuild" in why.stdout, why.text
    assert f"changed: image {pushed}" in why.stdout, why.stdout
    again = doit(consumer, "kernel", "initramfs", "PLATFORM=linux/amd64", f"PKG_KERNEL={pushed}")
    assert again.code == 0, again.text[-3000:]
    assert again.ran("kernel:amd64"), again.stdout


def test_an_image_that_is_not_there_or_not_a_kernel_is_one_line(shipped: Built, pushed: str, consumer: Path) -> None:
    before = sums(consumer / "out")
    missing = doit(consumer, "kernel", "PLATFORM=linux/amd64", f"PKG_KERNEL={pushed[:-2]}nope")
    assert missing.code != 0
    assert missing.last_line().startswith(f"error: PKG_KERNEL: {pushed[:-2]}nope is not in the registry"), \
        missing.text[-2000:]
    # a real image of something else (the initramfs task's, pushed the same way) is told apart by what it lacks
    registry = pushed.split("/", 1)[0]
    made = doit(shipped.root, "initramfs", "PLATFORM=linux/amd64", "PUSH=1", f"REGISTRY={registry}", "USERNAME=test",
                "TAG=t1")
    assert made.code == 0, made.text[-3000:]
    initramfs = pushed.replace("/kernel:", "/initramfs:")
    wrong = doit(consumer, "kernel", "PLATFORM=linux/amd64", f"PKG_KERNEL={initramfs}")
    assert wrong.code != 0
    assert wrong.last_line() == (f"error: kernel:amd64: PKG_KERNEL={initramfs} has no /vmlinuz-amd64: it is not "
                                 "an image of recipe kernel (doit kernel PUSH=1 makes one)"), wrong.text[-2000:]
    assert sums(consumer / "out") == before
