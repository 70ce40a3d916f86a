"""The prebuilt-kernel workflow through registries that want credentials, for real: `doit kernel PUSH=1`
pushes the shipped kernel to a docker-registry with htpasswd basic auth and to one with token auth (its
token endpoint runs here), with the credentials of a docker config.json; skopeo reads both back; another
checkout builds its initramfs from `PKG_KERNEL=` on the token registry (BuildKit pulls with the same
config.json); and neither the password nor any token minted appears in any output, log, out/ or .doit.db."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Built, Result, builder, copy_project, doit, sums
from .registries import (
    PASSWORD,
    USER,
    Registry,
    TokenIssuer,
    docker_registry,
    skopeo_inspect,
    token_endpoint,
)

pytestmark = [pytest.mark.build]

AMD64 = "PLATFORM=linux/amd64"
RESULTS: list[Result] = []  # every command's output, searched for secrets at the end


@pytest.fixture(scope="module")
def bearer(tmp_path_factory: pytest.TempPathFactory, issuer: TokenIssuer) -> Iterator[Registry]:
    with token_endpoint(issuer) as realm, \
            docker_registry(tmp_path_factory.mktemp("token-registry"), issuer.registry_auth(realm)) as served:
        yield served


@pytest.fixture(scope="module")
def login(tmp_path_factory: pytest.TempPathFactory, basic: Registry, bearer: Registry) -> dict[str, str]:
    """DOCKER_CONFIG of a config.json that logs in to both, as `docker login` writes it."""
    directory = tmp_path_factory.mktemp("docker-config")
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {basic.address: {"auth": auth},
                                                                 f"http://{bearer.address}": {"auth": auth}}}))
    return {"DOCKER_CONFIG": str(directory)}


def run(command: Result) -> Result:
    RESULTS.append(command)
    return command


@pytest.fixture(scope="module")
def pushed(shipped: Built, basic: Registry, bearer: Registry, login: dict[str, str]) -> dict[str, str]:
    """The shipped amd64 kernel pushed to both registries as test/kernel:auth; registry -> index digest."""
    digests = {}
    for served in (basic, bearer):
        result = run(doit(shipped.root, "kernel", AMD64, "PUSH=1", f"REGISTRY={served.address}", "USERNAME=test",
                          "TAG=auth", env=login))
        assert result.code == 0, result.text[-3000:]
        assert f"pushed {served.address}/test/kernel:auth (amd64) sha256:" in result.text, result.text[-3000:]
        digests[served.address] = result.text.split(f"pushed {served.address}/test/kernel:auth (amd64) ")[1].split()[0]
    return digests


def test_a_kernel_is_pushed_through_basic_auth_and_through_a_token(pushed: dict[str, str], basic: Registry,
                                                                   bearer: Registry, issuer: TokenIssuer) -> None:
    for served in (basic, bearer):
        ref = f"{served.address}/test/kernel:auth"
        read = skopeo_inspect(ref, creds=f"{USER}:{PASSWORD}", raw=True)
        assert read.returncode == 0, read.stderr
        index = json.loads(read.stdout)
        assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64"]
        assert skopeo_inspect(ref).returncode != 0  # and nobody else can
    # the push went through tokens the endpoint minted for the pushing user, with push access
    assert any(a["user"] == USER and "repository:test/kernel:pull,push" in a["scopes"] for a in issuer.asked)


@pytest.fixture(scope="module")
def consumer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("auth-consumer") / "project")


def test_pkg_kernel_comes_from_a_registry_that_wants_a_token(shipped: Built, pushed: dict[str, str],
                                                             bearer: Registry, login: dict[str, str],
                                                             consumer: Path) -> None:
    ref = f"{bearer.address}/test/kernel:auth"
    result = run(doit(consumer, "kernel", "initramfs", AMD64, f"PKG_KERNEL={ref}", env=login))
    assert result.code == 0, result.text[-3000:]
    assert result.ran("kernel:amd64") and result.ran("initramfs:amd64"), result.stdout
    text = (consumer / ".builder" / "logs" / "kernel-amd64.log").read_text()
    assert "==> kernel-build:" not in text and f"COPY --from={ref} / /prebuilt/" in text  # no kernel step ran
    built, reference = sums(consumer / "out"), sums(shipped.out)
    for name in ("vmlinuz-amd64", "config-amd64", "modules-amd64.tar"):
        assert built[name] == reference[name]  # the very bytes pushed through the token flow
    why = run(builder(consumer, "why", "--platform", "linux/amd64", "-v", f"PKG_KERNEL={ref}", env=login))
    assert "kernel:amd64: up to date" in why.stdout, why.text
    without = run(doit(consumer, "kernel", AMD64, f"PKG_KERNEL={ref}",
                       env={"DOCKER_CONFIG": str(consumer / "no-docker-config")}))
    assert without.code != 0
    assert without.last_line().startswith(f"error: PKG_KERNEL: the registry {bearer.address} wants credentials "
                                          f"(asking for {ref}) and there are none for it in "), without.text[-2000:]


def test_no_password_or_token_appears_in_output_logs_out_or_the_database(
        shipped: Built, pushed: dict[str, str], issuer: TokenIssuer, consumer: Path) -> None:
    secrets = [PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(), *issuer.minted]
    assert len(issuer.minted) >= 2 and len(RESULTS) >= 2  # tokens were used, commands were run
    for index, result in enumerate(RESULTS):
        for secret in secrets:
            assert secret not in result.text, f"a secret in the output of command {index}"
    searched = []
    for root in (shipped.root, consumer):
        for path in [*(root / ".builder").rglob("*"), *(root / "out").rglob("*"), *root.glob(".doit.db*")]:
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                searched.append(path.relative_to(root).as_posix())
                for secret in secrets:
                    assert secret.encode() not in data, f"a secret in {path}"
    assert ".builder/logs/kernel-amd64-push.log" in searched and "out/SHA256SUMS" in searched, searched
