"""The imager image (Talos's make imager), as a release pipeline and its users take it: `doit imager` writes
out/imager-amd64.tar, an OCI archive that skopeo and docker load both read; run without the framework, the
image makes the same media as `doit iso` / `doit disk`, byte for byte, from the suite's kernels; and a clean
rebuild at another path with NO_CACHE=1 is the same archive."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import Built, doit, sums

pytestmark = [pytest.mark.build]

AMD64 = "PLATFORM=linux/amd64"
REFERENCE = "127.0.0.1:5005/builder/imager:suite"  # a name only: nothing is pushed or pulled here
WORDS = (AMD64, "REGISTRY=127.0.0.1:5005", "TAG=suite")


def _run(argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def imager(media: Built, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """`doit imager` in a copy of the media project (its kernels and media up to date there)."""
    root = tmp_path_factory.mktemp("imager") / "project"
    shutil.copytree(media.root, root, symlinks=True, ignore=shutil.ignore_patterns(".builder"))
    result = doit(root, "imager", *WORDS)
    assert result.code == 0, result.text[-3000:]
    assert result.skipped("kernel:amd64") and result.skipped("initramfs:amd64"), result.stdout
    return Built(root, result)


@pytest.fixture(scope="session")
def loaded(imager: Built) -> str:
    done = _run(["docker", "load", "-i", str(imager.out / "imager-amd64.tar")])
    assert done.returncode == 0, done.stdout + done.stderr
    assert REFERENCE in done.stdout, done.stdout
    return REFERENCE


def test_the_archive_is_an_oci_image_skopeo_reads_and_the_manifest_records(imager: Built, tmp_path: Path) -> None:
    archive = imager.out / "imager-amd64.tar"
    assert sums(imager.out)["imager-amd64.tar"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    inspect = _run(["skopeo", "inspect", f"oci-archive:{archive}"])
    assert inspect.returncode == 0, inspect.stderr
    info = json.loads(inspect.stdout)
    assert info["Architecture"] == "amd64" and info["Os"] == "linux" and len(info["Layers"]) == 2
    copied = _run(["skopeo", "copy", "--quiet", f"oci-archive:{archive}", f"dir:{tmp_path / 'copy'}"])
    assert copied.returncode == 0, copied.stderr
    config = json.loads(_run(["skopeo", "inspect", "--config", f"oci-archive:{archive}"]).stdout)
    assert config["created"] == config["history"][0]["created"]  # SOURCE_DATE_EPOCH, not the build time
    assert config["config"]["Entrypoint"] == ["python3", "-I", "/usr/lib/builder/media.py"]
    epoch = next(e for e in config["config"]["Env"] if e.startswith("SOURCE_DATE_EPOCH="))
    manifest = json.loads((imager.out / "manifest.json").read_text())
    recorded = manifest["artifacts"]["imager-amd64.tar"]["image"]
    assert recorded["reference"] == REFERENCE and recorded["platform"] == "linux/amd64"
    raw = json.loads(_run(["skopeo", "inspect", "--raw", f"oci-archive:{archive}"]).stdout)
    assert "sha256:" + hashlib.sha256(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
                                      ).hexdigest() == recorded["manifest"]
    assert epoch.split("=")[1].isdigit()
    # the base layer is the IMAGER rootfs the manifest names: its diff id is that rootfs digest
    (identity,) = manifest["artifacts"]["imager-amd64.tar"]["toolchain"].values()
    assert config["rootfs"]["diff_ids"][0] == identity.removeprefix("rootfs:")


@pytest.mark.parametrize("args, name", [
    (["iso", "--arch", "amd64"], "metal-amd64.iso"),
    (["disk", "--platform", "metal", "--arch", "amd64"], "metal-amd64.raw.zst"),
    (["azure", "--arch", "amd64"], "azure-amd64.vhd.xz"),
])
def test_the_imager_image_makes_doits_media_byte_for_byte(media: Built, loaded: str, tmp_path: Path,
                                                          args: list[str], name: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    done = _run(["docker", "run", "--rm", "--network=none", "-v", f"{out}:/out", loaded, *args,
                 "--extra-kernel-arg", "builder.test=extra-arg", "--meta", "0x0a=network: test/1"], timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in out.iterdir()) == [name]
    assert hashlib.sha256((out / name).read_bytes()).hexdigest() == sums(media.out)[name]


def test_what_the_imager_image_does_not_have_is_one_line(loaded: str, tmp_path: Path) -> None:
    done = _run(["docker", "run", "--rm", "--network=none", "-v", f"{tmp_path}:/out", loaded, "iso", "--arch", "arm64"])
    assert done.returncode == 1
    assert done.stderr.splitlines() == ["##builder-error## profile iso is for amd64, not arm64"]
    assert list(tmp_path.iterdir()) == []


def test_a_clean_rebuild_at_another_path_is_the_same_archive(media: Built, imager: Built, tmp_path: Path) -> None:
    root = tmp_path / "elsewhere"
    shutil.copytree(media.root, root, symlinks=True, ignore=shutil.ignore_patterns(".builder"))
    result = doit(root, "imager", *WORDS, "NO_CACHE=1")
    assert result.code == 0, result.text[-3000:]
    assert sums(root / "out")["imager-amd64.tar"] == sums(imager.out)["imager-amd64.tar"]


def test_an_imager_for_another_arch_than_the_build_machines_is_one_line(imager: Built) -> None:
    result = doit(imager.root, "imager", "PLATFORM=linux/arm64")
    assert result.code == 2 and not result.ran("kernel:arm64")  # before any build
    assert result.last_line() == ("error: recipe imager is not built for linux/arm64 (its platforms: linux/amd64) "
                                  "(doit imager PLATFORM=linux/amd64)"), result.text[-2000:]


@pytest.fixture(scope="session")
def installer(imager: Built) -> str:
    """`doit installer` beside the imager (the base layer is compressed once), loaded into the engine."""
    result = doit(imager.root, "installer", *WORDS)
    assert result.code == 0, result.text[-3000:]
    assert result.ran("installer:amd64") and result.skipped("kernel:amd64"), result.stdout
    done = _run(["docker", "load", "-i", str(imager.out / "installer-amd64.tar")])
    assert done.returncode == 0, done.stdout + done.stderr
    return REFERENCE.replace("/imager:", "/installer:")


def _install(installer: str, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installer run as a user runs it: no --privileged, no device, the disk a file in a bind mount."""
    return _run(["docker", "run", "--rm", "--network=none", "-v", f"{out}:/out", installer, "install",
                 "--arch", "amd64", *args], timeout=900)


def test_the_installer_writes_doits_disk_layout_onto_a_file(media: Built, installer: str, tmp_path: Path) -> None:
    done = _install(installer, tmp_path, "--disk", "/out/metal.raw", "--extra-kernel-arg", "builder.test=extra-arg",
                    "--meta", "0x0a=network: test/1")
    assert done.returncode == 0, done.stdout + done.stderr
    made = hashlib.sha256((tmp_path / "metal.raw").read_bytes()).hexdigest()
    doits = subprocess.run(["zstd", "-dc", str(media.out / "metal-amd64.raw.zst")], capture_output=True, check=True)
    assert made == hashlib.sha256(doits.stdout).hexdigest()  # the metal profile's 1 GiB, byte for byte


@pytest.mark.boot
@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_a_disk_the_installer_wrote_boots_with_the_extra_arg_and_meta(installer: str, tmp_path: Path,
                                                                       firmware: str) -> None:
    from builder.core.platforms import AMD64
    from builder.host import qemu

    done = _install(installer, tmp_path, "--disk", "/out/disk.raw", "--size", "512MiB",
                    "--extra-kernel-arg", "builder.test=installed", "--meta", "0x0a=network: installed/1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "disk.raw").stat().st_size == 512 << 20
    result = qemu.boot_media(AMD64, tmp_path / "disk.raw", firmware=firmware, cdrom=False, timeout=900,
                             console=tmp_path / "console.log")
    assert "builder.test=installed" in result.cmdline and result.fields["platform"] == "metal"
    assert result.fields["meta.0xa"] == "network: installed/1"
    assert "BUILDER-BOOT-OK" in result.console


def test_an_existing_disk_file_keeps_its_length(installer: str, tmp_path: Path) -> None:
    disk = tmp_path / "big.raw"
    with open(disk, "wb") as f:
        f.truncate((700 << 20) + 1000)
    done = _install(installer, tmp_path, "--disk", "/out/big.raw", "--size", "512MiB")
    assert done.returncode == 0, done.stdout + done.stderr
    assert disk.stat().st_size == (700 << 20) + 1000  # the layout covers 512 MiB; the file is not cut


def test_an_installer_disk_too_small_is_one_line_and_the_file_is_left_alone(installer: str, tmp_path: Path) -> None:
    disk = tmp_path / "small.raw"
    with open(disk, "wb") as f:
        f.truncate(64 << 20)
    done = _install(installer, tmp_path, "--disk", "/out/small.raw")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "##builder-error## /out/small.raw: 64 MiB is too small; the disk layout needs at least 104 MiB"]
    assert disk.stat().st_size == 64 << 20 and disk.read_bytes() == bytes(64 << 20)


class Killer:
    """docker-registry behind a proxy on 127.0.0.1 that kills it (SIGKILL) when the request it waits for
    arrives, before answering: the registry dies mid-push at exactly that step. start() brings it back on
    the same storage, to read what it kept."""

    def __init__(self, root: Path) -> None:
        from .registries import free_port

        self.root, self.port, self.proxy_port = root, free_port(), free_port()
        root.mkdir(parents=True, exist_ok=True)
        (root / "config.yml").write_text(
            f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n")
        self.kill_on: tuple[str, str] | None = None  # (method, path regex)
        self.killed = False
        self.proc: subprocess.Popen[bytes] | None = None
        self.server = self._serve()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.proxy_port}"

    def start(self) -> None:
        import time
        import urllib.request

        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.root / "config.yml")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("docker-registry did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def _serve(self):  # type: ignore[no-untyped-def]
        import http.client
        import re
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        killer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                wanted = killer.kill_on
                if wanted and not killer.killed and self.command == wanted[0] and re.search(wanted[1], self.path):
                    killer.killed = True
                    killer.stop()  # the registry dies with this request unanswered
                    self.close_connection = True
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", killer.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                try:
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                except OSError:
                    self.close_connection = True
                    return
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

        server = ThreadingHTTPServer(("127.0.0.1", self.proxy_port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def _tagged(address: str, name: str) -> str | None:
    done = _run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{address}/builder/{name}"])
    if done.returncode != 0:
        return None
    return "sha256:" + hashlib.sha256(done.stdout.encode()).hexdigest()


@pytest.mark.parametrize("method, path", [
    ("PUT", r"/blobs/uploads/"),  # a layer
    ("PUT", r"/manifests/sha256:"),  # the arch's manifest, by digest
    ("PUT", r"/manifests/t1$"),  # the tag itself
])
def test_a_push_is_a_transaction_a_registry_killed_at_any_step_leaves_the_old_tag(
        imager: Built, tmp_path: Path, method: str, path: str) -> None:
    root = tmp_path / "project"
    shutil.copytree(imager.root, root, symlinks=True, ignore=shutil.ignore_patterns(".builder"))
    shutil.copytree(imager.root / ".builder" / "layers", root / ".builder" / "layers")  # the base layer, compressed
    killer = Killer(tmp_path / "registry")
    killer.start()
    try:
        words = ("imager", AMD64, "PUSH=1", f"REGISTRY={killer.address}", "TAG=t1", "REGISTRY_TIMEOUT=20")
        first = doit(root, *words)
        assert first.code == 0, first.text[-3000:]
        old = _tagged(killer.address, "imager:t1")
        assert old is not None
        recorded = json.loads((root / "out" / "manifest.json").read_text())["artifacts"]["imager-amd64.tar"]["image"]
        assert recorded["pushed"] and recorded["index"] == old  # out/manifest.json names the index the tag holds
        before = sums(root / "out")
        with open(root / "profiles" / "iso.yaml", "a") as f:  # another table: another layer, manifest and index
            f.write("customization:\n  extraKernelArgs: [builder.test=second]\n")
        killer.kill_on = (method, path)
        second = doit(root, *words)
        assert killer.killed
        assert second.code == 1
        assert killer.address in second.last_line(), second.last_line()  # the failure names the registry
        assert sums(root / "out") == before  # out/ as it was
        killer.start()
        assert _tagged(killer.address, "imager:t1") == old  # the tag did not move
    finally:
        killer.stop()
        killer.server.shutdown()


def _keypair(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    key, pub = directory / "image.key", directory / "image.pub"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)],
                   check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "ec", "-in", str(key), "-pubout", "-out", str(pub)], check=True, capture_output=True,
                   timeout=60)
    return key, pub


def _skopeo_blob(reference: str, dest: Path, media_type: str) -> bytes:
    """The one layer of ``media_type`` of an image, read with skopeo (not our registry client)."""
    copied = _run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{reference}", f"dir:{dest}"])
    assert copied.returncode == 0, copied.stderr
    manifest = json.loads((dest / "manifest.json").read_text())
    (layer,) = [entry for entry in manifest["layers"] if entry["mediaType"] == media_type]
    return (dest / layer["digest"].split(":")[1]).read_bytes(), layer  # type: ignore[return-value]


def test_signed_pushes_verify_with_builder_and_openssl_and_the_key_is_nowhere(
        media: Built, imager: Built, tmp_path: Path) -> None:
    import base64

    from builder.host import cosign

    from .conftest import builder
    from .registries import docker_registry

    key, pub = _keypair(tmp_path / "keys")  # a host file outside the project, as a pipeline keeps it
    roots = []
    with docker_registry(tmp_path / "registry") as served:
        for index, source in enumerate((imager.root, media.root)):  # the second: no imager yet, another path
            root = tmp_path / f"project-{index}"
            shutil.copytree(source, root, symlinks=True, ignore=shutil.ignore_patterns(".builder"))
            words = ("imager", AMD64, "PUSH=1", f"REGISTRY={served.address}", f"TAG=t{index}",
                     f"IMAGE_SIGNING_KEY={key}")  # (PUSH=1 runs every task: NO_CACHE=1 would compile a kernel)
            result = doit(root, *words)
            assert result.code == 0, result.text[-3000:]
            roots.append(root)
        records = [json.loads((r / "out" / "manifest.json").read_text())["artifacts"]["imager-amd64.tar"]["image"]
                   for r in roots]
        for field in ("manifest", "index", "signatures"):  # two clean pushes: the same digests, signatures too
            assert records[0][field] == records[1][field], field
        repository = f"{served.address}/builder/imager"
        checked = builder(tmp_path, "verify-image", f"{repository}:t0", "--key", str(pub))
        assert checked.code == 0, checked.text
        assert checked.stdout.count("signed, the key verifies it") == 2  # the index and the amd64 manifest
        for digest in (records[0]["index"], records[0]["manifest"]):  # a second implementation: openssl
            data, layer = _skopeo_blob(f"{repository}:{cosign.signature_tag(digest)}", tmp_path / digest[7:19],
                                       cosign.PAYLOAD_MEDIA)
            assert json.loads(data)["critical"]["image"]["docker-manifest-digest"] == digest
            (tmp_path / "payload").write_bytes(data)
            (tmp_path / "sig").write_bytes(base64.b64decode(layer["annotations"][cosign.SIGNATURE_ANNOTATION]))
            done = _run(["openssl", "dgst", "-sha256", "-verify", str(pub), "-signature", str(tmp_path / "sig"),
                         str(tmp_path / "payload")])
            assert done.returncode == 0 and "Verified OK" in done.stdout, done.stdout + done.stderr
        _, other = _keypair(tmp_path / "other")
        wrong = builder(tmp_path, "verify-image", f"{repository}:t0", "--key", str(other))
        assert wrong.code == 1 and wrong.last_line().endswith("no valid signature (a signature the key does not "
                                                              "verify)"), wrong.text
        with open(roots[0] / "profiles" / "metal.yaml", "a") as f:  # other bytes, so no signature exists for them
            f.write("customization:\n  extraKernelArgs: [builder.test=unsigned]\n")
        unsigned = doit(roots[0], "imager", AMD64, "PUSH=1", f"REGISTRY={served.address}", "TAG=plain")
        assert unsigned.code == 0, unsigned.text[-2000:]
        missing = builder(tmp_path, "verify-image", f"{repository}:plain", "--key", str(pub))
        assert missing.code == 1 and missing.last_line().endswith(".sig)") and " is not signed (no sha256-" in \
            missing.last_line(), missing.text
        with open(roots[0] / "profiles" / "iso.yaml", "a") as f:  # other content under t0 moves the tag
            f.write("customization:\n  extraKernelArgs: [builder.test=moved]\n")
        moved = doit(roots[0], "imager", AMD64, "PUSH=1", f"REGISTRY={served.address}", "TAG=t0")
        assert moved.code == 0, moved.text[-2000:]
        stale = builder(tmp_path, "verify-image", f"{repository}:t0@{records[0]['index']}", "--key", str(pub))
        assert stale.code == 1 and " moved: it names sha256:" in stale.last_line(), stale.text
    secret = "".join(key.read_text().splitlines()[1:-1])  # the key's base64 body
    for root in roots:
        for path in [*(root / "out").rglob("*"), *(root / ".builder").rglob("*"), *root.glob(".doit.db*")]:
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


def test_builder_images_list_names_every_image_and_source_with_its_digest(tmp_path: Path) -> None:
    from .conftest import builder, copy_project

    root = copy_project(tmp_path / "project")
    listed = builder(root, "images", "list")
    assert listed.code == 0, listed.text
    lines = [line.split() for line in listed.stdout.splitlines()]
    images = {words[1]: words for words in lines if words[0] == "image"}
    assert {words[3] for words in images.values()} == {"TOOLCHAIN", "IMAGER"}
    assert all(words[2].startswith("rootfs:sha256:") for words in images.values())
    sources = {words[1]: words[2] for words in lines if words[0] == "source"}
    kernel = next(url for url in sources if "/linux-source-" in url)
    assert sources[kernel].removeprefix("sha256:") in (root / "recipes" / "kernel-build" / "pkg.yaml").read_text()
    assert any(url.endswith("_arm64.deb") for url in sources) and any(url.endswith("_amd64.deb") for url in sources)
