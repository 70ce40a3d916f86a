"""The registry client's authentication, piece by piece: challenges, where credentials are read from (the
docker config.json, credential helpers), and token endpoints that misbehave. The flows against a real
docker-registry are in tests/integration/test_registry_auth.py."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from builder.core.errors import BuildError
from builder.host import registry
from builder.host.credentials import DockerConfig, docker_config_path
from builder.host.registry import Challenge, Session
from builder.model.reference import Reference

SECRET = "s3cr3t-R3g1stry-pw"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def config(tmp_path: Path, document: object) -> DockerConfig:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return DockerConfig.read(path)


# --- challenges ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "scheme", "params"), [
    ('Basic realm="Registry Realm"', "basic", {"realm": "Registry Realm"}),
    ('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"',
     "bearer", {"realm": "https://auth.example/token", "service": "registry.example",
                "scope": "repository:a/b:pull,push"}),
    ('bearer realm=https://auth.example/token, service=r.example', "bearer",
     {"realm": "https://auth.example/token", "service": "r.example"}),
    ('Bearer realm="x",error="insufficient_scope",scope="a:b:c d:e:f"', "bearer",
     {"realm": "x", "error": "insufficient_scope", "scope": "a:b:c d:e:f"}),
    ('Bearer realm="say \\"hi\\""', "bearer", {"realm": 'say "hi"'}),
])
def test_a_challenge_is_read_as_rfc_7235_writes_it(header: str, scheme: str, params: dict[str, str]) -> None:
    assert Challenge.parse(header) == Challenge(scheme, params)


@pytest.mark.parametrize("header", ["", "Negotiate abc", "Digest realm=x"])
def test_a_challenge_of_another_scheme_is_none(header: str) -> None:
    assert Challenge.parse(header) is None


def test_a_push_token_serves_a_pull_of_the_same_repository() -> None:
    session = Session(DockerConfig(Path("/none"), {}, {}, None))
    session.keep_token(("r.example", "repository:a/b:pull,push"), "tok")
    assert session.authorization("r.example", "repository:a/b:pull") == "Bearer tok"
    assert session.authorization("r.example", "repository:a/c:pull") is None
    assert session.authorization("other.example", "repository:a/b:pull") is None
    session.forget("r.example", "Bearer tok")
    assert session.authorization("r.example", "repository:a/b:pull") is None


# --- the docker config -----------------------------------------------------------------------------------

def test_the_config_is_docker_configs_or_the_homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "d"))
    assert docker_config_path() == tmp_path / "d" / "config.json"
    monkeypatch.delenv("DOCKER_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert docker_config_path() == tmp_path / ".docker" / "config.json"


@pytest.mark.parametrize("key", ["127.0.0.1:5000", "https://127.0.0.1:5000", "http://127.0.0.1:5000/v1/"])
def test_an_auths_entry_is_found_under_any_key_docker_login_writes(tmp_path: Path, key: str) -> None:
    found = config(tmp_path, {"auths": {"other.example": {"auth": b64("no:no")},
                                        key: {"auth": b64(f"alice:{SECRET}")}}}).login("127.0.0.1:5000", seconds=5)
    assert found is not None and (found.username, found.password) == ("alice", SECRET)
    assert found.origin == f"{tmp_path}/config.json (auths.{key})"
    assert SECRET not in repr(found)


def test_docker_hub_is_its_v1_url_and_username_password_entries_count(tmp_path: Path) -> None:
    found = config(tmp_path, {"auths": {"https://index.docker.io/v1/": {"username": "bob", "password": SECRET}}}
                   ).login("docker.io", seconds=5)
    assert found is not None and (found.username, found.password) == ("bob", SECRET)


def test_no_entry_and_no_file_are_no_credentials(tmp_path: Path) -> None:
    assert config(tmp_path, {"auths": {"other.example": {"auth": b64("a:b")}}}).login("r.example", seconds=5) is None
    absent = DockerConfig.read(tmp_path / "absent.json")
    assert absent.login("r.example", seconds=5) is None
    assert absent.origin("r.example") == f"{tmp_path}/absent.json (no such file)"


@pytest.mark.parametrize(("document", "message"), [
    ('{"auths": {"r.example": {"auth": "x"}},\n  oops}', r":2: malformed JSON: Expecting property name enclosed "
                                                         r"in double quotes \(column 3\)"),
    ("[]", r": expected a JSON object"),
    ({"auths": []}, r": auths: expected an object"),
    ({"auths": {"r.example": "x"}}, r": auths: expected an object"),
    ({"credHelpers": {"r.example": 7}}, r": credHelpers: expected an object"),
    ({"credsStore": ["x"]}, r": credsStore: expected a helper name"),
    ({"credsStore": "../../bin/sh"}, r": credsStore: '\.\./\.\./bin/sh' is not a helper name"),
])
def test_a_malformed_config_is_one_line_naming_the_file(tmp_path: Path, document: object, message: str) -> None:
    with pytest.raises(BuildError, match=rf"^{tmp_path}/config\.json{message}"):
        config(tmp_path, document)


@pytest.mark.parametrize("auth", [f"{SECRET}!", b64(SECRET), "%%%"])
def test_an_auth_that_is_not_base64_of_user_colon_password_never_shows_it(tmp_path: Path, auth: str) -> None:
    with pytest.raises(BuildError) as caught:
        config(tmp_path, {"auths": {"r.example": {"auth": auth}}}).login("r.example", seconds=5)
    assert str(caught.value) == (f"{tmp_path}/config.json: auths.r.example.auth: expected base64 of USER:PASSWORD "
                                 "(the value is not shown)")


# --- credential helpers ----------------------------------------------------------------------------------

@pytest.fixture
def helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory at the front of PATH for docker-credential-* programs."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    return directory


def helper(directory: Path, name: str, body: str) -> None:
    path = directory / f"docker-credential-{name}"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_a_helper_gets_the_server_on_stdin_and_wins_over_auths(tmp_path: Path, helpers: Path) -> None:
    helper(helpers, "t", 'read -r s; [ "$1" = get ] || exit 3; '
                         f'printf \'{{"ServerURL":"%s","Username":"%s","Secret":"{SECRET}"}}\' "$s" "$s"')
    found = config(tmp_path, {"auths": {"r.example:5000": {"auth": b64("file:file")}},
                              "credHelpers": {"r.example:5000": "t"}}).login("r.example:5000", seconds=5)
    assert found is not None and (found.username, found.password) == ("r.example:5000", SECRET)
    assert found.origin == f"docker-credential-t (credHelpers.r.example:5000 in {tmp_path}/config.json)"
    hub = config(tmp_path, {"credsStore": "t"}).login("docker.io", seconds=5)
    assert hub is not None and hub.username == "https://index.docker.io/v1/"


def test_a_helper_that_knows_no_such_server_is_no_credentials(tmp_path: Path, helpers: Path) -> None:
    helper(helpers, "none", "echo 'credentials not found in native keychain'; exit 1")
    docker = config(tmp_path, {"credsStore": "none"})
    assert docker.login("r.example", seconds=5) is None
    assert docker.origin("r.example") == f"docker-credential-none (credsStore in {tmp_path}/config.json)"


def test_a_missing_failing_or_hanging_helper_is_one_line_naming_it(tmp_path: Path, helpers: Path) -> None:
    where = f"(credsStore in {tmp_path}/config.json)"
    with pytest.raises(BuildError, match=rf"^the credential helper docker-credential-gone {re.escape(where)} is "
                                         r"not installed: no docker-credential-gone on PATH"):
        config(tmp_path, {"credsStore": "gone"}).login("r.example", seconds=5)
    helper(helpers, "broken", "echo 'the keyring is locked' >&2; exit 4")
    with pytest.raises(BuildError, match=rf"^the credential helper docker-credential-broken {re.escape(where)} "
                                         r"failed for r\.example with exit status 4: the keyring is locked$"):
        config(tmp_path, {"credsStore": "broken"}).login("r.example", seconds=5)
    helper(helpers, "slow", "exec sleep 30")
    started = time.monotonic()
    with pytest.raises(BuildError, match=r"^the credential helper docker-credential-slow .* did not answer within "
                                         r"1 s \(REGISTRY_TIMEOUT=SECONDS waits longer\)$"):
        config(tmp_path, {"credsStore": "slow"}).login("r.example", seconds=1)
    assert time.monotonic() - started < 5
    helper(helpers, "chatty", "echo hello")
    with pytest.raises(BuildError, match=r"printed no credentials for r\.example \(expected JSON"):
        config(tmp_path, {"credsStore": "chatty"}).login("r.example", seconds=5)


# --- token endpoints that misbehave ------------------------------------------------------------------------

class Stand(BaseHTTPRequestHandler):
    """A registry that wants a bearer token from /token of the same server, whose answer ``token`` sets."""

    token: tuple[int, str, bytes] = (200, "application/json", b'{"token": "t0k3n-value"}')
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.seen.append(f"{self.path} {self.headers.get('Authorization')}")
        if self.path.startswith("/token"):
            status, kind, body = self.token
        elif self.headers.get("Authorization") == "Bearer t0k3n-value":
            status, kind, body = 200, "application/json", b"{}"
        else:
            status, kind, body = 401, "application/json", b"{}"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if status == 401:
            self.send_header("WWW-Authenticate", f'Bearer realm="{self.realm}",service="stand"')
        self.end_headers()
        self.wfile.write(body)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stand() -> Iterator[tuple[str, type[Stand]]]:
    handler = type("Handler", (Stand,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def nobody(tmp_path: Path) -> Session:
    return Session(DockerConfig.read(tmp_path / "none.json"))


def test_an_anonymous_token_lets_the_request_in(stand: tuple[str, type[Stand]], tmp_path: Path) -> None:
    address, handler = stand
    registry.check_push_target(address, seconds=5, session=nobody(tmp_path))
    assert handler.seen == ["/v2/ None", "/token?service=stand None", "/v2/ Bearer t0k3n-value"]


@pytest.mark.parametrize(("answer", "message"), [
    ((200, "text/html", b"<html>login</html>"), r"answered with something that is not a token: not JSON \(text/html; "),
    ((200, "application/json", b'{"tok": 1}'), r"answered with something that is not a token: JSON without 'token'"),
    ((500, "text/plain", b"oops"), r"answered HTTP 500 \(checking it before the push\) \(its own log says why\)$"),
])
def test_a_token_endpoint_that_gives_no_token_is_one_line(stand: tuple[str, type[Stand]], tmp_path: Path,
                                                          answer: tuple[int, str, bytes], message: str) -> None:
    address, handler = stand
    handler.token = answer
    with pytest.raises(BuildError, match=rf"^REGISTRY: the token endpoint http://{address}/token of the registry "
                                         rf"{address} {message}"):
        registry.check_push_target(address, seconds=5, session=nobody(tmp_path))


def test_a_token_endpoint_that_hangs_fails_within_the_deadline(tmp_path: Path) -> None:
    hanging = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does) and never answers
    realm = f"http://127.0.0.1:{hanging.getsockname()[1]}/token"
    started = time.monotonic()
    try:
        with pytest.raises(BuildError, match=rf"^PKG_A: the token endpoint {realm} of the registry r\.example did not "
                                             r"answer within 1 s \(asking\) \(is it running\? REGISTRY_TIMEOUT"):
            registry._token(Reference.of("r.example/a"), Challenge("bearer", {"realm": realm}), "", None, 1.0,
                            "asking", "PKG_A", nobody(tmp_path))
    finally:
        hanging.close()
    assert time.monotonic() - started < 3


def test_credentials_never_go_to_a_plain_http_token_endpoint_elsewhere(tmp_path: Path) -> None:
    session = Session(config(tmp_path, {"auths": {"r.example": {"auth": b64(f"u:{SECRET}")}}}))
    login = session.login("r.example", seconds=5)
    with pytest.raises(BuildError, match=r"names a token endpoint over plain HTTP \(http://auth\.example/t\); "
                                         r"credentials are sent there over HTTPS only"):
        registry._token(Reference.of("r.example/a"), Challenge("bearer", {"realm": "http://auth.example/t"}), "",
                        login, 1.0, "asking", "PKG_A", session)


def test_a_realm_that_is_no_url_is_named(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"names no token endpoint it can be asked \(asking\): realm 'ftp://x'"):
        registry._token(Reference.of("r.example/a"), Challenge("bearer", {"realm": "ftp://x"}), "", None, 1.0,
                        "asking", "PKG_A", nobody(tmp_path))

