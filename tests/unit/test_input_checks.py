"""Host-side input checks found by the bad-input catalogue (tests/integration/bad_inputs.yaml): the Kconfig
checker a files: entry asks for with `check: kconfig`, and the loader's refusals of what would otherwise
hang, overflow or be silently ignored."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.core.errors import BuildError, RecipeError
from builder.core.platforms import AMD64, ARM64
from builder.model import files, yamlfile
from builder.model.aptsources import AptSources
from builder.model.recipe import Recipe, find_recipe_files
from builder.model.variables import check_image_reference, load_vars_file, resolve
from builder.resolve.project import Project

MakeProject = Callable[..., Project]

# ---------------------------------------------------------------------------------------------- kconfig

GOOD_CONFIG = b"""\
#
# Automatically generated file; DO NOT EDIT.
#
CONFIG_CC_VERSION_TEXT="gcc (Debian 12.2.0-14+deb12u1) 12.2.0"
CONFIG_GCC_VERSION=120200
CONFIG_64BIT=y
CONFIG_LOOP=m
CONFIG_FOO=n
CONFIG_LOCALVERSION=""
CONFIG_CMDLINE="console=ttyS0 quote=\\" backslash=\\\\"
CONFIG_PHYSICAL_START=0x1000000
CONFIG_ILLEGAL_POINTER_VALUE=0xdead000000000000
CONFIG_NEGATIVE=-5
# CONFIG_SWAP is not set

# a free comment
CONFIG_UTF8_STRING="caf\xc3\xa9"
"""


def test_a_normal_config_passes() -> None:
    files.check_kconfig(GOOD_CONFIG)
    files.check_kconfig(b"")


def test_the_shipped_configs_and_fragments_pass() -> None:
    root = Path(__file__).resolve().parents[2] / "kernel-configs"
    for path in [*root.glob("config-*"), *root.glob("fragments/*.config")]:
        files.check_kconfig(path.read_bytes())


@pytest.mark.parametrize("line", [
    "CONFIG_FOO maybe",
    "FOO=y",
    "CONFIG_FOO=maybe",
    'CONFIG_FOO="unterminated',
    'CONFIG_FOO="a"b"',
    "CONFIG_FOO=",
    "CONFIG_=y",
    "config_foo=y",
    "  CONFIG_FOO=y",
    "CONFIG_FOO=y # comment",
    "CONFIG_FOO = y",
    "CONFIG_FOO=0x",
    "CONFIG_FOO=0x1g",
    "CONFIG_FOO=1.5",
    "CONFIG_FOO-BAR=y",
    " ",
])
def test_a_line_that_is_not_kconfig_is_named_with_its_number_and_the_forms(line: str) -> None:
    with pytest.raises(files.CheckError) as info:
        files.check_kconfig(b"CONFIG_A=y\n# comment\n" + line.encode() + b"\nCONFIG_B=y\n")
    assert info.value.line == 3
    assert info.value.message.startswith(f"not a Kconfig line: {line!r}; expected CONFIG_NAME=y|m|n")
    assert "'# CONFIG_NAME is not set'" in info.value.message


def test_a_long_bad_line_is_cut_in_the_message() -> None:
    with pytest.raises(files.CheckError) as info:
        files.check_kconfig(b"X" * 500)
    assert len(info.value.message) < 300
    assert "..." in info.value.message


def test_a_carriage_return_is_named() -> None:
    with pytest.raises(files.CheckError, match="carriage return") as info:
        files.check_kconfig(b"CONFIG_A=y\nCONFIG_B=y\r\n")
    assert info.value.line == 2


@pytest.mark.parametrize("second", ["CONFIG_A=m", "# CONFIG_A is not set"])
def test_a_symbol_set_twice_names_both_lines(second: str) -> None:
    with pytest.raises(files.CheckError, match=r"^CONFIG_A is set again \(first on line 1\)") as info:
        files.check_kconfig(f"CONFIG_A=y\nCONFIG_B=y\n{second}\n".encode())
    assert info.value.line == 3


KERNELISH = {
    "recipes/k/pkg.yaml": """\
        name: k
        files:
          - src: configs/config-{{ ARCH }}
            dest: config
            check: kconfig
        steps:
          - build: cat /pkg/config
        """,
}


def test_a_files_entry_with_check_kconfig_refuses_a_bad_config_naming_its_line(make_project: MakeProject) -> None:
    project = make_project({**KERNELISH, "configs/config-amd64": "CONFIG_A=y\nCONFIG_B maybe\n"})
    with pytest.raises(RecipeError) as info:
        _ = project.plan("k", AMD64).context
    assert re.match(r"^configs/config-amd64:2: not a Kconfig line: 'CONFIG_B maybe'; expected .* "
                    r"\(check: kconfig, recipes/k/pkg\.yaml:5\)$", str(info.value))


def test_a_good_config_renders_as_before(make_project: MakeProject) -> None:
    project = make_project({**KERNELISH, "configs/config-amd64": "CONFIG_A=y\n"})
    assert project.plan("k", AMD64).context.files["k/files/config"].data == b"CONFIG_A=y\n"


def test_an_unknown_check_lists_the_known_ones(load: Callable[..., Recipe]) -> None:
    with pytest.raises(RecipeError, match=r"pkg\.yaml:4: files\.0\.check: unknown check 'kconfg'; expected one of "
                                          r"kconfig, modules, x509$"):
        load("name: a\nfiles:\n  - src: x\n    check: kconfg\n    dest: x\n")


# ------------------------------------------------------------------------------------------ project files

def test_a_files_entry_naming_a_directory_says_to_use_a_glob(make_project: MakeProject) -> None:
    project = make_project({**KERNELISH, "configs/config-amd64/inner": "x\n"})
    with pytest.raises(RecipeError, match=r"files\.0\.src: 'configs/config-amd64' is a directory \(to take the "):
        _ = project.plan("k", AMD64).context


def test_a_files_entry_naming_a_fifo_is_refused_without_reading_it(make_project: MakeProject) -> None:
    project = make_project(KERNELISH)
    (project.root / "configs").mkdir()
    os.mkfifo(project.root / "configs/config-amd64")
    with pytest.raises(RecipeError, match=r"'configs/config-amd64' is not a regular file"):
        _ = project.plan("k", AMD64).context


def test_a_files_entry_that_is_a_dangling_link_says_so(make_project: MakeProject) -> None:
    project = make_project(KERNELISH)
    (project.root / "configs").mkdir()
    (project.root / "configs/config-amd64").symlink_to("gone")
    with pytest.raises(RecipeError, match=r"'configs/config-amd64' is a link that leads nowhere"):
        _ = project.plan("k", AMD64).context


@pytest.mark.parametrize("make", [os.mkfifo, os.mkdir], ids=["fifo", "directory"])
def test_a_recipe_file_that_is_not_a_regular_file_is_an_error(tmp_path: Path, make: Callable[[Path], None]) -> None:
    (tmp_path / "recipes/a").mkdir(parents=True)
    make(tmp_path / "recipes/a/pkg.yaml")
    with pytest.raises(RecipeError, match=r"^recipes/a/pkg\.yaml: not a regular file"):
        find_recipe_files(tmp_path / "recipes", display_root=tmp_path)


def test_a_vars_file_that_is_a_fifo_is_refused_without_reading_it(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "vars.yaml")
    with pytest.raises(RecipeError, match=r"^recipes/vars\.yaml: not a regular file"):
        load_vars_file(tmp_path / "vars.yaml", "recipes/vars.yaml")


# ------------------------------------------------------------------------------------------------- YAML

def test_a_file_larger_than_any_recipe_is_refused_by_its_size(tmp_path: Path) -> None:
    path = tmp_path / "pkg.yaml"
    path.write_bytes(b"#" * (yamlfile.MAX_BYTES + 1))
    with pytest.raises(RecipeError, match=rf"^pkg\.yaml: {yamlfile.MAX_BYTES + 1} bytes; a recipe, vars\.yaml, "
                                          "profile, overlay or META file is "):
        yamlfile.read_text(path, "pkg.yaml")


@pytest.mark.parametrize(("text", "line"), [
    ("a: !!python/object/apply:os.system [true]\n", 1),
    ("a: 1\nb: !!set {x: null}\n", 2),
    ("a: 1\nb: !!binary aGVsbG8=\n", 2),
    ("a: !custom\n  b: 1\n", 1),
])
def test_a_tag_on_any_node_is_refused_with_its_line(text: str, line: int) -> None:
    with pytest.raises(RecipeError, match=rf"^f\.yaml:{line}: malformed YAML: could not determine a constructor"):
        yamlfile.load(text, "f.yaml")


def test_a_character_yaml_does_not_allow_is_named_with_its_line() -> None:
    with pytest.raises(RecipeError, match=r"^f\.yaml:3: malformed YAML: character #x0000 is not allowed"):
        yamlfile.load("a: 1\nb: 2\nc: \x00\n", "f.yaml")


def test_a_tab_is_called_a_tab() -> None:
    with pytest.raises(RecipeError, match=r"^f\.yaml:3: malformed YAML: a tab character where YAML wants spaces"):
        yamlfile.load("a:\n  b: 1\n\tc: 2\n", "f.yaml")


# -------------------------------------------------------------------------------------------- variables

@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes/vars.yaml").write_text("SOURCE_DATE_EPOCH: 1000\n")
    return tmp_path / "recipes"


def resolved(recipes: Path, cli: dict[str, str]) -> dict[str, str]:
    return resolve(recipes_root=recipes, recipe_dir=recipes, cli=cli, platform=ARM64, host=AMD64, apt=AptSources())


def test_an_epoch_past_year_9999_is_one_error_not_an_overflow(recipes: Path, no_host_apt: str) -> None:
    assert resolved(recipes, {"SOURCE_DATE_EPOCH": "253402300799"})["SOURCE_DATE_EPOCH"] == "253402300799"
    with pytest.raises(RecipeError, match=r"^SOURCE_DATE_EPOCH 99999999999999999999 is after 9999-12-31"):
        resolved(recipes, {"SOURCE_DATE_EPOCH": "99999999999999999999"})


@pytest.mark.parametrize("value", ["6.1\n", "a\rb", "x\x00"])
def test_a_command_line_value_with_a_control_character_is_refused(recipes: Path, no_host_apt: str,
                                                                 value: str) -> None:
    with pytest.raises(RecipeError, match=r"^command line: V: a value with a line break or control character"):
        resolved(recipes, {"V": value})


@pytest.mark.parametrize("ref", ["builder-toolchain:bookworm", "registry.example/toolchain:7", "localhost:5000/a/b",
                                 "debian", "a/b@sha256:" + "0" * 64, "r.example:443/x/y:t-1.2_3@sha256:" + "f" * 64])
def test_image_references_docker_reads_are_accepted(ref: str) -> None:
    assert check_image_reference(ref) == ref


@pytest.mark.parametrize("ref", ["", "Builder:1", "a b", "a:b:c", "a/:b", "a@sha256:xyz", "-a", "a:" + "t" * 200,
                                 "x" * 300])
def test_strings_that_are_not_image_references_are_refused(ref: str) -> None:
    with pytest.raises(ValueError, match="is not an image reference; expected"):
        check_image_reference(ref)


def test_a_toolchain_that_is_not_an_image_reference_is_refused(recipes: Path, no_host_apt: str) -> None:
    with pytest.raises(RecipeError, match=r"^command line: TOOLCHAIN: '' is not an image reference"):
        resolved(recipes, {"TOOLCHAIN": ""})
    (recipes / "vars.yaml").write_text("SOURCE_DATE_EPOCH: 1000\nTOOLCHAIN: Not An Image\n")
    with pytest.raises(RecipeError, match=r"^TOOLCHAIN: 'Not An Image' is not an image reference"):
        resolved(recipes, {})


def test_a_platform_variable_on_the_command_line_is_refused_naming_the_platform(make_project: MakeProject) -> None:
    project = make_project({"recipes/a/pkg.yaml": "name: a\ndescription: '{{ ARCH }}'\n"}, {"ARCH": "arm64"})
    with pytest.raises(BuildError) as info:
        project.check_words()
    assert str(info.value) == ("command line: ARCH is set from the platform, so ARCH=arm64 would be ignored "
                               "(choose the platform instead: PLATFORM=linux/arm64)")


# ------------------------------------------------------------------------------------------- recipes

@pytest.mark.parametrize(("platforms", "message"), [
    ("[arm64]", r"platforms: 'arm64' is not an OCI platform name; write 'linux/arm64'"),
    ("[x86_64]", r"platforms: 'x86_64' is not an OCI platform name; write 'linux/amd64'"),
    ("[linux/amd64, linux/amd64]", r"platforms: 'linux/amd64' is listed twice"),
])
def test_recipe_platforms_are_exact_and_listed_once(load: Callable[..., Recipe], platforms: str, message: str) -> None:
    with pytest.raises(RecipeError, match=rf"pkg\.yaml:2: {message}$"):
        load(f"name: a\nplatforms: {platforms}\n")


@pytest.mark.parametrize("image", ['""', '"Busy Box"', "a:b:c"])
def test_an_image_dependency_must_be_an_image_reference(load: Callable[..., Recipe], image: str) -> None:
    with pytest.raises(RecipeError, match=r"pkg\.yaml:3: dependencies\.0\.image: .* is not an image reference"):
        load(f"name: a\ndependencies:\n  - image: {image}\n")
