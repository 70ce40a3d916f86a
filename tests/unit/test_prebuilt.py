"""Prebuilt packages: PKG_NAME=ref (and PKGS_PREFIX + PKGS) take a recipe's output tree from a registry image
instead of building it; the registry says what the tag names now, for each platform, within a deadline."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from builder.core.errors import BuildError
from builder.core.platforms import AMD64, ARM64
from builder.host import registry
from builder.model.settings import Settings
from builder.resolve.project import Project

from .test_module_kind import FILES

MakeProject = Callable[..., Project]
CONFIG = json.dumps({"architecture": "arm64", "os": "linux"}).encode()
CONFIG_DIGEST = "sha256:" + hashlib.sha256(CONFIG).hexdigest()
SINGLE = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                     "config": {"digest": CONFIG_DIGEST}, "layers": []}).encode()
INDEX = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
    {"digest": "sha256:" + "a" * 64, "platform": {"os": "linux", "architecture": "amd64"}},
    {"digest": "sha256:" + "b" * 64, "platform": {"os": "linux", "architecture": "arm64"}}]}).encode()

def platform_digest(ref: str, platform: str, *, seconds: float = 5) -> str:
    """What PKG_KERNEL=ref resolves to for ``platform``, asked by a fresh invocation without credentials."""
    return registry.platform_digest(ref, platform, seconds=seconds, where="PKG_KERNEL", session=registry.Session())


class Registry(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        routes = {"/v2/test/kernel/manifests/t1": INDEX, "/v2/test/kernel/manifests/single": SINGLE,
                  f"/v2/test/kernel/blobs/{CONFIG_DIGEST}": CONFIG}
        if self.path == "/v2/test/kernel/manifests/hang":
            time.sleep(5)
        body = routes.get(self.path)
        self.send_response(200 if body else 404)
        self.end_headers()
        self.wfile.write(body or b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_an_index_gives_each_platform_its_own_digest(server: str) -> None:
    ref = f"{server}/test/kernel:t1"
    assert platform_digest(ref, "linux/amd64") == "sha256:" + "a" * 64
    assert platform_digest(ref, "linux/arm64") == "sha256:" + "b" * 64


def test_a_single_image_is_its_manifest_digest_and_must_be_for_the_platform(server: str) -> None:
    ref = f"{server}/test/kernel:single"
    assert platform_digest(ref, "linux/arm64") == \
        "sha256:" + hashlib.sha256(SINGLE).hexdigest()
    with pytest.raises(BuildError, match=r"^PKG_KERNEL: .*/test/kernel:single is a arm64 image, not linux/amd64$"):
        platform_digest(ref, "linux/amd64")


def test_an_image_the_registry_does_not_have_is_named(server: str) -> None:
    with pytest.raises(BuildError, match=r"^PKG_KERNEL: .*/test/kernel:nope is not in the registry"):
        platform_digest(f"{server}/test/kernel:nope", "linux/amd64")


def test_a_registry_that_does_not_answer_fails_within_its_deadline(server: str) -> None:
    started = time.monotonic()
    with pytest.raises(BuildError, match=r"did not answer within 1 s"):
        platform_digest(f"{server}/test/kernel:hang", "linux/amd64", seconds=1)
    assert time.monotonic() - started < 3


def test_a_registry_that_is_not_there_is_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(BuildError, match=r"refused the connection"):
        platform_digest(f"127.0.0.1:{port}/test/kernel:t1", "linux/amd64", seconds=2)


@pytest.mark.parametrize(("words", "message"), [
    ({"PKG_KERNEL": "kernel:latest"}, "PKG_KERNEL: 'kernel:latest' is not a registry image reference"),
    ({"PUSH": "1"}, "PUSH: PUSH=1 needs REGISTRY=HOST[:PORT] to push to"),
    ({"PKGS": "v1"}, "PKGS: PKGS needs PKGS_PREFIX too"),
    ({"PKGS_PREFIX": "127.0.0.1:5000/x"}, "PKGS_PREFIX: PKGS_PREFIX needs PKGS too"),
    ({"REGISTRY_TIMEOUT": "0"}, "REGISTRY_TIMEOUT: '0' is not a number of seconds"),
])
def test_registry_words_are_checked_before_anything_runs(words: dict[str, str], message: str) -> None:
    with pytest.raises(BuildError) as caught:
        Settings.parse(words)
    assert str(caught.value).startswith(message)


def test_a_prebuilt_kernel_is_its_image_for_every_recipe_that_takes_it(
        make_project: MakeProject, monkeypatch: pytest.MonkeyPatch, fake_engine: dict[str, str | None]) -> None:
    asked: list[tuple[str, str]] = []

    def digest(ref: str, platform: str, *, seconds: float, where: str, session: registry.Session) -> str:
        asked.append((ref, platform))
        return "sha256:" + ("c" if platform == "linux/amd64" else "d") * 64

    monkeypatch.setattr(registry, "platform_digest", digest)
    ref = "127.0.0.1:5005/test/kernel:t1"
    project = make_project(FILES, {"TOOLCHAIN": "example.invalid/t:1", "PKG_KERNEL": ref,
                                   "PLATFORM": "linux/amd64,linux/arm64"})
    assert project.prebuilt(AMD64) == {"kernel": (ref, "PKG_KERNEL")}
    kernel = project.graph(AMD64)["kernel"]
    assert [d.image for d in kernel.dependencies] == [ref] and kernel.description.endswith(f"{ref} (PKG_KERNEL)")
    modules = project.plan("modules", ARM64)
    assert f"COPY --from={ref} / /prebuilt/" in modules.context.dockerfile
    assert "make -j" not in modules.context.dockerfile  # nothing of the kernel's own build
    inputs = modules.inputs(project.identities)
    assert inputs[f"image {ref}"] == "digest:sha256:" + "d" * 64
    assert (ref, "linux/arm64") in asked
    assert modules.image_inputs()[f"image {ref}"] == (ref, "PKG_KERNEL", "linux/arm64")


def test_an_unknown_package_name_is_named_with_the_closest_recipe(make_project: MakeProject) -> None:
    with pytest.raises(BuildError) as caught:
        make_project(FILES, {"TOOLCHAIN": "example.invalid/t:1", "PKG_KERNL": "127.0.0.1:5005/x/kernel:t"}).plans()
    assert str(caught.value) == ("PKG_KERNL: no recipe 'kernl' to take prebuilt from 127.0.0.1:5005/x/kernel:t "
                                 "(did you mean PKG_KERNEL?)")


def test_pkgs_prefix_takes_every_recipe_another_one_takes_that_push_makes(make_project: MakeProject) -> None:
    words = {"TOOLCHAIN": "example.invalid/t:1", "PKGS_PREFIX": "127.0.0.1:5005/test", "PKGS": "v1",
             "PKG_HELLO": "127.0.0.1:5005/other/hello:v2"}
    # a recipe without outputs has no task, so PUSH=1 never makes its image: PKGS does not ask for one
    assert make_project(FILES, words).prebuilt(AMD64) == {"hello": ("127.0.0.1:5005/other/hello:v2", "PKG_HELLO")}
    kernel = FILES["recipes/kernel/pkg.yaml"] + "outputs:\n  - vmlinuz\n"
    project = make_project({**FILES, "recipes/kernel/pkg.yaml": kernel}, words)
    assert project.prebuilt(AMD64) == {"kernel": ("127.0.0.1:5005/test/kernel:v1", "PKGS_PREFIX"),
                                       "hello": ("127.0.0.1:5005/other/hello:v2", "PKG_HELLO")}
