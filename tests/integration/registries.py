"""Real registries for the tests, on 127.0.0.1 only: Debian's docker-registry (distribution 2.8) with no
auth, with htpasswd basic auth, or with token auth against a token endpoint run here (a thread) that mints
the JWTs the registry accepts, signed by a certificate made here. Every wait has a deadline."""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

START_SECONDS = 30
USER = "builder-test"
PASSWORD = "Pw-4u7h-t3st-3e1f0c"  # what the secret-grep tests look for
SERVICE = "builder-test-registry"
ISSUER = "builder-test-issuer"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_htpasswd(path: Path, user: str = USER, password: str = PASSWORD) -> None:
    """An htpasswd file with a bcrypt hash (the only kind docker-registry takes)."""
    import bcrypt

    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4, prefix=b"2a")).decode()
    path.write_text(f"{user}:{hashed}\n")


def docker_config(directory: Path, registry: str, user: str = USER, password: str = PASSWORD) -> Path:
    """DOCKER_CONFIG directory whose config.json logs in to ``registry`` (the docker login form: base64 auth)."""
    directory.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}, indent=2))
    return directory


@dataclass
class Registry:
    address: str  # 127.0.0.1:PORT
    root: Path
    log: Path


@contextlib.contextmanager
def docker_registry(root: Path, auth: str = "") -> Iterator[Registry]:
    """docker-registry serving 127.0.0.1:PORT from ``root``, with ``auth`` (a YAML ``auth:`` block, or none),
    stopped afterwards."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n"
                      f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}")
    log = root / "registry.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2):
                    break
            except urllib.error.HTTPError:
                break  # 401: up, and wanting credentials
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"docker-registry did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield Registry(f"127.0.0.1:{port}", root, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def htpasswd_auth(root: Path) -> str:
    root.mkdir(parents=True, exist_ok=True)
    write_htpasswd(root / "htpasswd")
    return f"auth:\n  htpasswd:\n    realm: builder-test\n    path: {root / 'htpasswd'}\n"


# --- the token endpoint -------------------------------------------------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenIssuer:
    """A signing key and its self-signed certificate (the registry's rootcertbundle), and what it minted."""

    directory: Path
    minted: list[str] = field(default_factory=list)
    asked: list[dict[str, Any]] = field(default_factory=list)  # each request: scopes, service, who
    anonymous_pull: bool = False  # grant pull to a request without credentials, as public registries do
    field_name: str = "token"  # or access_token (OAuth2's name; some endpoints send only that)

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "builder test token issuer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(hours=1))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.bundle = self.directory / "token-ca.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._der = self.cert.public_bytes(serialization.Encoding.DER)

    def mint(self, access: list[dict[str, Any]], subject: str, seconds: int = 300) -> str:
        """A JWT (ES256, the certificate in x5c) granting ``access`` for SERVICE."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self._der).decode()]}
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + seconds, "nbf": now - 10,
                  "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        token = f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
        self.minted.append(token)
        return token

    def answer(self, query: dict[str, list[str]], authorization: str | None) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) for one token request."""
        user = None
        if authorization and authorization.startswith("Basic "):
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            if (user, password) != (USER, PASSWORD):
                return 401, {"details": "bad credentials"}
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":") if scope.count(":") == 2 else ("", "", "")
            granted = actions.split(",") if user else [a for a in actions.split(",") if a == "pull"]
            if kind == "repository" and granted:
                access.append({"type": kind, "name": name, "actions": granted})
        service = (query.get("service") or [None])[0]
        self.asked.append({"scopes": query.get("scope", []), "service": service, "user": user})
        if user is None and not (self.anonymous_pull and access):
            return 401, {"details": "credentials wanted"}
        token = self.mint(access, user or "anonymous")
        return 200, {self.field_name: token, "expires_in": 300}

    def registry_auth(self, realm: str) -> str:
        return (f"auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
                f"    rootcertbundle: {self.bundle}\n")


@contextlib.contextmanager
def token_endpoint(issuer: TokenIssuer) -> Iterator[str]:
    """The realm URL of a token endpoint on 127.0.0.1 answering with ``issuer``'s tokens."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            self._send(*issuer.answer(query, self.headers.get("Authorization")))

        def do_POST(self) -> None:  # noqa: N802
            """OAuth2's password grant, which BuildKit's resolver tries first when it has credentials."""
            size = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(size).decode())
            user, password = (form.get("username") or [""])[0], (form.get("password") or [""])[0]
            authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() if user else None
            scopes = [s for scope in form.get("scope", []) for s in scope.split()]
            status, body = issuer.answer({**form, "scope": scopes}, authorization)
            if status == 200:  # OAuth2 names it access_token, whatever the GET endpoint calls it
                body = {"access_token": body[issuer.field_name], "expires_in": body["expires_in"]}
            self._send(status, body)

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def skopeo_inspect(ref: str, *, creds: str | None = None, raw: bool = False) -> subprocess.CompletedProcess[str]:
    """skopeo inspect of docker://ref over plain HTTP (a loopback registry), with ``creds`` USER:PASSWORD."""
    argv = ["skopeo", "inspect", "--tls-verify=false", "--retry-times=0"]
    argv += ["--creds", creds] if creds else ["--no-creds"]
    argv += ["--raw"] if raw else []
    return subprocess.run([*argv, f"docker://{ref}"], capture_output=True, text=True, timeout=60)
