"""The out-of-tree module kind (``module:``): a recipe gives the sources and unpacks them; the framework adds
the kernel's build stage, the environment the kernel builds with, and the build, install and test steps."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.core.errors import RecipeError
from builder.resolve.project import Project

from ..signing import RELEASE_KEYID, SIGNING, signed, with_signature

MakeProject = Callable[..., Project]

KERNEL = """\
name: kernel
steps:
  - build: echo compile
finalize:
  - from: /usr/src/linux/
    to: /usr/src/linux/
"""
MODULE = """\
name: hello
module:
  source: hello-1.0
  version: "1.0"
sources: []
steps:
  - prepare: mkdir hello-1.0
"""
MODULES = """\
name: modules
dependencies:
  - stage: hello
    from: /lib/modules/
    to: /tree/lib/modules/
steps:
  - install: mkdir /out && tar -cf /out/modules-{{ ARCH }}.tar -C /tree .
finalize:
  - from: /out/
outputs:
  - modules-{{ ARCH }}.tar
"""
FILES = {"recipes/kernel/pkg.yaml": KERNEL, "recipes/hello/pkg.yaml": MODULE, "recipes/modules/pkg.yaml": MODULES}


def test_a_module_builds_against_the_kernels_build_tree_with_the_kernels_compiler(make_project: MakeProject) -> None:
    project = make_project(FILES, {"TOOLCHAIN": "example.invalid/t:1", "PLATFORM": "linux/arm64"})
    hello = project.graph(project.settings.platforms[0])["hello"]
    assert [d.stage for d in hello.dependencies] == ["kernel"]
    assert hello.env == {"ARCH": "arm64", "CROSS_COMPILE": "aarch64-linux-gnu-"}
    assert hello.module is not None and hello.module.version == "1.0"
    assert [(f.from_, f.to) for f in hello.finalize] == [("/rootfs/lib/modules/", "/lib/modules/")]
    dockerfile = project.plans(("modules",))[0].context.dockerfile
    assert "COPY --from=r-kernel /usr/src/linux/ /usr/src/linux/" in dockerfile, dockerfile
    scripts = "".join(step.build[0] + step.install[0] for step in hello.steps[1:])
    assert "make -C /usr/src/linux M=/build/hello-1.0 modules" in scripts
    assert "INSTALL_MOD_DIR=extra/hello" in scripts
    assert 'builder_error "module hello does not build against kernel $release (arm64)' in scripts


def test_a_module_source_outside_the_build_is_refused(make_project: MakeProject) -> None:
    files = {**FILES, "recipes/hello/pkg.yaml": MODULE.replace("source: hello-1.0", "source: ../etc")}
    with pytest.raises(RecipeError, match=r"recipes/hello/pkg.yaml:3: module.source: source must be a relative path"):
        make_project(files, {"TOOLCHAIN": "example.invalid/t:1"}).plans()


def test_a_module_of_an_unknown_kernel_recipe_names_it(make_project: MakeProject) -> None:
    files = {**FILES, "recipes/hello/pkg.yaml": MODULE.replace("module:\n", "module:\n  kernel: linux\n")}
    with pytest.raises(RecipeError, match="unknown recipe 'linux'"):
        make_project(files, {"TOOLCHAIN": "example.invalid/t:1"}).plans()


def test_an_unknown_module_key_names_the_keys_there_are(make_project: MakeProject) -> None:
    files = {**FILES, "recipes/hello/pkg.yaml": MODULE.replace("  version:", "  verison:")}
    with pytest.raises(RecipeError, match=r"pkg.yaml:4: unknown key 'module.verison'; expected one of: kernel, "):
        make_project(files, {"TOOLCHAIN": "example.invalid/t:1"}).plans()


def test_the_manifest_says_which_recipe_built_each_module_and_whether_it_is_signed(
        make_project: MakeProject, tmp_path: Path) -> None:
    from builder.build import kmodules

    kernel = KERNEL.replace("steps:", "sources:\n  - url: http://example.invalid/linux.deb\n    destination: l.deb\n"
                            f"    sha256: {'a' * 64}\n    sha512: {'b' * 128}\nsteps:")
    project = make_project({**FILES, "recipes/kernel/pkg.yaml": kernel}, {"TOOLCHAIN": "example.invalid/t:1"})
    tree = tmp_path / "tree" / "lib" / "modules" / "6.1.176"
    (tree / "kernel" / "fs" / "fat").mkdir(parents=True)
    (tree / "kernel" / "fs" / "fat" / "fat.ko").write_bytes(b"\x7fELF...")
    (tree / "extra" / "hello").mkdir(parents=True)
    (tree / "extra" / "hello" / "hello.ko").write_bytes(signed(b"\x7fELF...", tmp_path))
    (tree / "modules.dep").write_text("")
    with tarfile.open(tmp_path / "modules.tar", "w") as archive:
        archive.add(tmp_path / "tree", arcname=".")
    found = kmodules.inventory(project.plans(("modules",))[0], tmp_path / "modules.tar")
    assert found == [
        {"name": "hello", "path": "extra/hello/hello.ko", "recipe": "hello", "version": "1.0", "source": [],
         "signed": True, "signed_by": f"keyid:{RELEASE_KEYID}"},
        {"name": "fat", "path": "kernel/fs/fat/fat.ko", "recipe": "kernel", "version": "6.1.176",
         "source": [f"sha256:{'a' * 64}"], "signed": False, "signed_by": None},
    ]



def test_a_signature_splits_off_and_names_its_key(tmp_path: Path) -> None:
    from builder.build import kmodules

    module = signed(b"\x7fELF module", tmp_path)
    assert kmodules.split_signature(module) is not None
    assert kmodules.split_signature(module)[0] == b"\x7fELF module"  # type: ignore[index]
    assert kmodules.signature(module) == f"keyid:{RELEASE_KEYID}"
    assert kmodules.signature(b"\x7fELF module") is None
    assert kmodules.signature(b"\x7fELF" + kmodules.SIGNATURE_MAGIC) is None  # too short to hold a signature


def test_a_signer_named_by_issuer_and_serial_is_named_by_their_digest(tmp_path: Path) -> None:
    import hashlib

    from cryptography import x509

    from builder.build import kmodules

    cert = x509.load_pem_x509_certificate((SIGNING / "release.crt").read_bytes())
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 8) // 8, "big")  # DER INTEGER, signed
    issuer_and_serial = cert.issuer.public_bytes() + bytes([0x02, len(serial)]) + serial
    module = signed(b"\x7fELF module", tmp_path, keyid=False)
    assert kmodules.signature(module) == f"issuer-serial:{hashlib.sha256(issuer_and_serial).hexdigest()}"


@pytest.mark.parametrize("sig", [b"\x30\x03\x02\x01", b"not DER at all", b"\x30\x00",
                                 bytes.fromhex("301106092a864886f70d010701a00404026869")])  # CMS "data", not signed
def test_a_signature_that_is_no_cms_signed_data_is_unreadable(sig: bytes) -> None:
    from builder.build import kmodules

    module = with_signature(b"\x7fELF module", sig)
    assert kmodules.split_signature(module) == (b"\x7fELF module", sig)
    assert kmodules.signature(module) == "unreadable"
