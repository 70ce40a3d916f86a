"""Registries that want credentials, for real: Debian's docker-registry on 127.0.0.1 with htpasswd basic auth,
and one with token auth whose token endpoint (run here) mints the JWTs it accepts. builder pushes and pulls
through both with the credentials of a docker config.json, and skopeo, another client, reads back what it
pushed. Without credentials, with wrong ones, or with a helper that is missing, each is one line.

These tests build nothing (the image is made from a small tree by builder.host.oci, as PUSH=1 makes it); the
build through `doit … PUSH=1` and `PKG_KERNEL=` from such registries is in test_registry_auth_build.py."""

from __future__ import annotations

import json
import os
import stat
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.core.errors import BuildError
from builder.host import oci, registry
from builder.host.credentials import DockerConfig
from builder.model.reference import Reference

from .registries import (
    PASSWORD,
    USER,
    Registry,
    TokenIssuer,
    docker_config,
    docker_registry,
    skopeo_inspect,
    token_endpoint,
)

SECONDS = 10
EPOCH = 1_700_000_000


@pytest.fixture(scope="module")
def realm(issuer: TokenIssuer) -> Iterator[str]:
    with token_endpoint(issuer) as url:
        yield url


@pytest.fixture(scope="module")
def bearer(tmp_path_factory: pytest.TempPathFactory, issuer: TokenIssuer, realm: str) -> Iterator[Registry]:
    with docker_registry(tmp_path_factory.mktemp("token-registry"), issuer.registry_auth(realm)) as served:
        yield served


@pytest.fixture(autouse=True)
def token_policy(issuer: TokenIssuer) -> Iterator[None]:
    yield
    issuer.anonymous_pull, issuer.field_name = False, "token"


def config_for(tmp_path: Path, address: str, **login: str) -> DockerConfig:
    return DockerConfig.read(docker_config(tmp_path / "docker", address, **login) / "config.json")


def tree(tmp_path: Path, text: str) -> Path:
    """A tar of one file, as BuildKit exports a recipe's output tree."""
    source = tmp_path / "tree"
    source.mkdir(exist_ok=True)
    (source / "hello.txt").write_text(text)
    tar = tmp_path / "tree.tar"
    with tarfile.open(tar, "w") as archive:
        archive.add(source / "hello.txt", arcname="hello.txt")
    return tar


def push(ref: Reference, tar: Path, session: registry.Session) -> str:
    """What PUSH=1 does with a built tree (builder.build.executor._push): layer, config, manifest; its digest."""
    layer, diff_id = oci.layer(tar, EPOCH)
    config = oci.config("amd64", EPOCH, [diff_id], "builder: test")
    manifest = oci.manifest(config, [layer])
    registry.check_push_target(ref.registry, seconds=SECONDS, session=session)
    for blob in (layer, config):
        registry.push_blob(ref, blob.digest, blob.data, seconds=SECONDS, where="PUSH", session=session)
    return registry.push_manifest(ref, manifest.media_type, manifest.data, seconds=SECONDS, where="PUSH",
                                  session=session)


def pushed_digest(ref: str, creds: str | None) -> str:
    inspected = skopeo_inspect(ref, creds=creds)
    assert inspected.returncode == 0, inspected.stderr
    return str(json.loads(inspected.stdout)["Digest"])


# --- basic ---------------------------------------------------------------------------------------------------

def test_a_push_and_a_pull_through_basic_auth(basic: Registry, tmp_path: Path) -> None:
    session = registry.Session(config_for(tmp_path, basic.address))
    ref = Reference.parse(f"{basic.address}/test/hello:basic", "PUSH")
    digest = push(ref, tree(tmp_path, "through basic auth\n"), session)
    assert registry.platform_digest(str(ref), "linux/amd64", seconds=SECONDS, where="PKG_HELLO",
                                    session=session) == digest
    assert pushed_digest(str(ref), f"{USER}:{PASSWORD}") == digest  # another client reads back what was pushed
    anonymous = skopeo_inspect(str(ref))
    assert anonymous.returncode != 0 and "unauthorized" in anonymous.stderr.lower(), anonymous.stderr


def test_basic_auth_without_credentials_names_the_registry_and_the_file(basic: Registry, tmp_path: Path) -> None:
    config = DockerConfig.read(tmp_path / "absent" / "config.json")
    with pytest.raises(BuildError) as caught:
        registry.platform_digest(f"{basic.address}/test/hello:basic", "linux/amd64", seconds=SECONDS,
                                 where="PKG_HELLO", session=registry.Session(config))
    assert str(caught.value) == (
        f"PKG_HELLO: the registry {basic.address} wants credentials (asking for {basic.address}/test/hello:basic) "
        f"and there are none for it in {tmp_path}/absent/config.json (no such file) (docker login "
        f"{basic.address} stores them there; DOCKER_CONFIG=DIR reads DIR/config.json)")


def test_wrong_basic_credentials_are_refused_naming_where_they_came_from(basic: Registry, tmp_path: Path) -> None:
    config = config_for(tmp_path, f"https://{basic.address}", password="not-" + PASSWORD)
    with pytest.raises(BuildError) as caught:
        registry.check_push_target(basic.address, seconds=SECONDS, session=registry.Session(config))
    assert str(caught.value).startswith(
        f"REGISTRY: the registry {basic.address} refused the credentials from {tmp_path}/docker/config.json "
        f"(auths.https://{basic.address}) (checking it before the push)")
    assert PASSWORD not in str(caught.value)


def test_a_credential_helper_gives_the_login(basic: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """credHelpers: docker-credential-NAME get, the server on stdin, JSON on stdout (a real program)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-buildertest"
    helper.write_text("#!/bin/sh\nread -r server\n"
                      f'[ "$1" = get ] && [ "$server" = "{basic.address}" ] || exit 1\n'
                      f'printf \'{{"ServerURL":"%s","Username":"{USER}","Secret":"{PASSWORD}"}}\' "$server"\n')
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "config.json").write_text(json.dumps({"credHelpers": {basic.address: "buildertest"}}))
    session = registry.Session(DockerConfig.read(tmp_path / "config.json"))
    ref = Reference.parse(f"{basic.address}/test/hello:helper", "PUSH")
    digest = push(ref, tree(tmp_path, "through a credential helper\n"), session)
    assert pushed_digest(str(ref), f"{USER}:{PASSWORD}") == digest


def test_a_missing_credential_helper_is_one_line_naming_it(basic: Registry, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "builder-none-such"}))
    with pytest.raises(BuildError) as caught:
        registry.check_push_target(basic.address, seconds=SECONDS,
                                   session=registry.Session(DockerConfig.read(tmp_path / "config.json")))
    assert str(caught.value) == (
        f"the credential helper docker-credential-builder-none-such (credsStore in {tmp_path}/config.json) is not "
        f"installed: no docker-credential-builder-none-such on PATH (install it, or remove credsStore from "
        f"{tmp_path}/config.json)")


# --- bearer tokens -------------------------------------------------------------------------------------------

def test_a_push_and_a_pull_through_a_bearer_token(bearer: Registry, issuer: TokenIssuer, tmp_path: Path) -> None:
    session = registry.Session(config_for(tmp_path, bearer.address))
    ref = Reference.parse(f"{bearer.address}/test/hello:token", "PUSH")
    before = len(issuer.asked)
    digest = push(ref, tree(tmp_path, "through a bearer token\n"), session)
    assert registry.platform_digest(str(ref), "linux/amd64", seconds=SECONDS, where="PKG_HELLO",
                                    session=session) == digest
    asked = issuer.asked[before:]
    # one token for /v2/ (no scope) and one for the repository, kept for every later request (the pull too)
    assert [a["scopes"] for a in asked] == [[], ["repository:test/hello:pull,push"]], asked
    assert all(a["user"] == USER and a["service"] == "builder-test-registry" for a in asked)
    assert pushed_digest(str(ref), f"{USER}:{PASSWORD}") == digest


def test_an_access_token_field_serves_as_well(bearer: Registry, issuer: TokenIssuer, tmp_path: Path) -> None:
    issuer.field_name = "access_token"
    session = registry.Session(config_for(tmp_path, bearer.address))
    ref = Reference.parse(f"{bearer.address}/test/hello:oauth", "PUSH")
    assert push(ref, tree(tmp_path, "access_token\n"), session) == pushed_digest(str(ref), f"{USER}:{PASSWORD}")


def test_an_anonymous_pull_gets_its_token_anonymously(bearer: Registry, issuer: TokenIssuer, tmp_path: Path) -> None:
    ref = Reference.parse(f"{bearer.address}/test/hello:public", "PUSH")
    digest = push(ref, tree(tmp_path, "public\n"), registry.Session(config_for(tmp_path, bearer.address)))
    issuer.anonymous_pull = True
    before = len(issuer.asked)
    nobody = registry.Session(DockerConfig.read(tmp_path / "none" / "config.json"))
    assert registry.platform_digest(str(ref), "linux/amd64", seconds=SECONDS, where="PKG_HELLO",
                                    session=nobody) == digest
    assert [(a["user"], a["scopes"]) for a in issuer.asked[before:]] == [(None, ["repository:test/hello:pull"])]
    with pytest.raises(BuildError, match=rf"^REGISTRY: the registry {bearer.address} wants credentials \(checking "):
        push(ref.with_name("public-2"), tree(tmp_path, "public\n"), nobody)


def test_a_token_is_fetched_once_for_many_threads(bearer: Registry, issuer: TokenIssuer, tmp_path: Path) -> None:
    ref = Reference.parse(f"{bearer.address}/test/hello:threads", "PUSH")
    digest = push(ref, tree(tmp_path, "threads\n"), registry.Session(config_for(tmp_path, bearer.address)))
    session = registry.Session(config_for(tmp_path, bearer.address))
    before = len(issuer.asked)
    found: list[str] = []
    errors: list[BaseException] = []

    def pull() -> None:
        try:
            found.append(registry.platform_digest(str(ref), "linux/amd64", seconds=SECONDS, where="PKG_HELLO",
                                                  session=session))
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=pull) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and found == [digest] * 8, errors
    assert [a["scopes"] for a in issuer.asked[before:]] == [["repository:test/hello:pull"]]


def test_an_expired_token_is_fetched_again(bearer: Registry, issuer: TokenIssuer, tmp_path: Path) -> None:
    session = registry.Session(config_for(tmp_path, bearer.address))
    ref = Reference.parse(f"{bearer.address}/test/hello:expiry", "PUSH")
    digest = push(ref, tree(tmp_path, "expiry\n"), session)
    key = (bearer.address, "repository:test/hello:pull,push")
    assert session.token(key)
    session.keep_token(key, issuer.mint([], USER, seconds=-60))  # what the session holds has expired
    before = len(issuer.asked)
    assert registry.platform_digest(str(ref), "linux/amd64", seconds=SECONDS, where="PKG_HELLO",
                                    session=session) == digest
    assert len(issuer.asked) == before + 1


def test_a_token_endpoint_refusing_the_credentials_says_where_they_came_from(
        bearer: Registry, tmp_path: Path) -> None:
    config = config_for(tmp_path, bearer.address, password="wrong-" + PASSWORD)
    with pytest.raises(BuildError) as caught:
        registry.check_push_target(bearer.address, seconds=SECONDS, session=registry.Session(config))
    assert str(caught.value).startswith(
        "REGISTRY: the token endpoint http://127.0.0.1:") and (
        f"of the registry {bearer.address} refused the credentials from {tmp_path}/docker/config.json "
        f"(auths.{bearer.address}) (checking it before the push)") in str(caught.value)
