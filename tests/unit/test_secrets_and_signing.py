"""Build secrets (a host file BuildKit mounts, never in the context) and the module-signing settings:
what the Dockerfile, the context, the request and the inputs say, and the one-line errors."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.core.errors import RecipeError
from builder.core.platforms import AMD64
from builder.host.services import Services
from builder.model import files
from builder.resolve.identity import Identities
from builder.resolve.project import Project
from builder.resolve.render import secret_input
from builder.schedule import memo

MakeProject = Callable[..., Project]
DATA = Path(__file__).resolve().parents[1] / "integration" / "data" / "signing"

SIGNER = """\
name: s
secrets:
  - id: signing-key
    file: "{{ KEY | default('') }}"
steps:
  - prepare: echo prepare
  - install: test -f /run/secrets/signing-key
finalize:
  - from: /out/
outputs:
  - s.bin
"""
KEY_BYTES = b"-----BEGIN PRIVATE KEY-----\nnot really a key, but secret\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "signing.key"
    path.parent.mkdir()
    path.write_bytes(KEY_BYTES)
    return path


def test_a_secret_is_mounted_on_every_run_and_named_by_its_digest_never_its_bytes(make_project: MakeProject,
                                                                                   key: Path) -> None:
    plan = make_project({"recipes/s/pkg.yaml": SIGNER}, {"KEY": str(key)}).plan("s", AMD64)
    context = plan.context
    runs = [line for line in context.dockerfile.splitlines() if line.startswith("RUN ")]
    assert len(runs) == 2
    assert all("--mount=type=secret,id=signing-key,target=/run/secrets/signing-key" in run for run in runs)
    digest = hashlib.sha256(KEY_BYTES).hexdigest()
    scripts = [f.data for f in context.files.values() if f.data is not None and b"echo '==> s:" in f.data]
    assert scripts and all(f"# secret signing-key: sha256 {digest}".encode() in s for s in scripts)
    assert not any(KEY_BYTES in (f.data or b"") for f in context.files.values())
    assert KEY_BYTES.decode() not in context.dockerfile
    assert context.secrets == {"signing-key": key}
    assert plan.inputs(Identities(plan.out_dir, Services()))[secret_input("signing-key")] == digest
    request = plan.request(Path("/ctx"), Path("/export"))
    assert request.secrets == (("signing-key", key),)


def test_without_a_file_the_secret_is_not_mounted(make_project: MakeProject) -> None:
    plan = make_project({"recipes/s/pkg.yaml": SIGNER}).plan("s", AMD64)
    assert "type=secret" not in plan.context.dockerfile
    assert plan.request(Path("/ctx"), Path("/export")).secrets == ()


def test_a_new_key_changes_the_inputs_and_the_memo_sees_it_without_parsing(make_project: MakeProject,
                                                                            key: Path) -> None:
    plan = make_project({"recipes/s/pkg.yaml": SIGNER}, {"KEY": str(key)}).plan("s", AMD64)
    identities = Identities(plan.out_dir, Services())
    check = memo.check_of(plan)
    assert check["secrets"] == {secret_input("signing-key"): str(key)}
    root = plan.root
    before = memo.inputs_now(root, check, identities)
    assert before == plan.inputs(identities)
    key.write_bytes(KEY_BYTES + b"rotated\n")
    after = memo.inputs_now(root, check, identities)
    rotated = hashlib.sha256(KEY_BYTES + b"rotated\n").hexdigest()
    assert after is not None and after[secret_input("signing-key")] == rotated
    key.unlink()
    assert memo.inputs_now(root, check, identities) is None  # the full plan names the problem


@pytest.mark.parametrize("make, message", [
    (lambda p: None, r"secrets\.0\.file: .*signing\.key: cannot read it \(No such file or directory\)"),
    (lambda p: p.mkdir(), r"secrets\.0\.file: .*signing\.key is not a regular file"),
    (lambda p: p.write_bytes(b"x" * (2 << 20)), r"secrets\.0\.file: .*signing\.key is 2097152 bytes; a secret is a "
                                                r"key, at most 1048576 bytes"),
])
def test_a_secret_file_that_cannot_be_one_is_one_line(make_project: MakeProject, tmp_path: Path,
                                                      make: Callable[[Path], None], message: str) -> None:
    path = tmp_path / "signing.key"
    make(path)
    project = make_project({"recipes/s/pkg.yaml": SIGNER}, {"KEY": str(path)})
    with pytest.raises(RecipeError, match=r"recipes/s/pkg\.yaml:4: " + message):
        project.plan("s", AMD64).context  # noqa: B018


# --- MODULE_SIGNING ---

@pytest.mark.parametrize("words, message", [
    ({"MODULE_SIGNING": "sometimes"}, "MODULE_SIGNING=sometimes: expected one of ephemeral, release"),
    ({"MODULE_SIGNING": "release"}, "MODULE_SIGNING=release needs MODULE_SIGNING_CERT=PATH"),
    ({"MODULE_SIGNING_KEY": "k.pem"}, "MODULE_SIGNING_KEY is for MODULE_SIGNING=release; MODULE_SIGNING=ephemeral "
                                      "makes its own throw-away key"),
    ({"MODULE_SIGNING_CERT": "c.pem"}, "MODULE_SIGNING_CERT is for MODULE_SIGNING=release"),
])
def test_the_signing_policy_words_are_checked(make_project: MakeProject, words: dict[str, str], message: str) -> None:
    with pytest.raises(RecipeError, match=f"^command line: {message}"):
        make_project({"recipes/s/pkg.yaml": SIGNER}, words).graph(AMD64)


def test_a_release_checkout_builds_ephemeral_when_the_command_line_says_so(make_project: MakeProject) -> None:
    files = {"recipes/s/pkg.yaml": SIGNER,
             "recipes/vars.yaml": "SOURCE_DATE_EPOCH: 1735689600\nMODULE_SIGNING: release\n"
                                  "MODULE_SIGNING_CERT: c.pem\nMODULE_SIGNING_KEY: /k.pem\n"}
    graph = make_project(files, {"MODULE_SIGNING": "ephemeral"}).graph(AMD64)
    assert graph["s"].name == "s"  # no error: the certificate and key of vars.yaml are simply not taken


def test_the_shipped_kernel_takes_the_certificate_only_with_release(no_host_apt: str) -> None:
    root = Path(__file__).resolve().parents[2]
    ephemeral = Project.load(root, {}, host=AMD64).plan("kernel", AMD64).context
    assert not any(path.endswith("module-signing.crt") for path in ephemeral.files)
    assert ephemeral.secrets == {}
    release = Project.load(root, {"MODULE_SIGNING": "release",
                                  "MODULE_SIGNING_CERT": "tests/integration/data/signing/release.crt",
                                  "MODULE_SIGNING_KEY": str(DATA / "release.key")}, host=AMD64).plan("kernel", AMD64)
    crt = release.context.project_files["kernel-build/files/module-signing.crt"]
    assert crt == "tests/integration/data/signing/release.crt"
    assert release.context.secrets == {"module-signing-key": DATA / "release.key"}
    assert (DATA / "release.key").read_bytes() not in release.context.dockerfile.encode()


# --- the certificate check ---

def test_a_pem_certificate_passes_the_check() -> None:
    files.check_x509_pem((DATA / "release.crt").read_bytes())


@pytest.mark.parametrize("data, message", [
    (b"hello\n", "not a PEM certificate: no -----BEGIN CERTIFICATE----- ... -----END CERTIFICATE----- block"),
    (b"-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n", "the block is not base64"),
    (b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n", "the block is not an X.509 certificate"),
    (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "a private key in a certificate file"),
])
def test_what_is_not_a_certificate_is_named(data: bytes, message: str) -> None:
    with pytest.raises(files.CheckError, match=message):
        files.check_x509_pem(data)


def test_why_names_a_new_key_and_a_new_certificate(make_project: MakeProject, key: Path,
                                                   fake_engine: dict[str, str | None]) -> None:
    from builder.cli.why import explain

    signer = SIGNER.replace("steps:", "files:\n  - src: keys/cert.pem\n    dest: cert.pem\nsteps:")
    project = make_project({"recipes/s/pkg.yaml": signer, "keys/cert.pem": "one\n"}, {"KEY": str(key)})
    plan = project.plan("s", AMD64)
    inputs = plan.inputs(project.identities)
    before = {"digest": plan.digest(inputs), "inputs": inputs, "outputs": {}}
    key.write_bytes(KEY_BYTES + b"rotated\n")
    again = make_project({"keys/cert.pem": "two\n"}, {"KEY": str(key)})
    reasons = explain(again.plan("s", AMD64), again, before).reasons
    assert any(r.startswith(f"changed: {secret_input('signing-key')}") for r in reasons), reasons
    assert any(r.startswith("changed: s/files/cert.pem (keys/cert.pem)") for r in reasons), reasons
    assert not any(KEY_BYTES.decode()[:20] in r for r in reasons)
