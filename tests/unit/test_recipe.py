"""Recipes: jinja2 text -> YAML -> validated objects; every mistake is one line with file:line."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.core.errors import RecipeError
from builder.core.platforms import AMD64, ARM64
from builder.model.recipe import Recipe, find_recipe_files, load_recipe

Load = Callable[..., Recipe]

SHA256 = "a" * 64
SHA512 = "b" * 128
VARIABLES = {"WHAT": "greeter", "MIRROR": "http://mirror.example/debian", "ARCH": "amd64",
             "SHA256": SHA256, "SHA512": SHA512}

GOOD = """\
name: hello
description: a {{ WHAT }}
shell: /bin/bash
dependencies:
  - stage: base
    to: /sysroot/
  - image: example.invalid/tools:1
    from: /usr/bin/
    to: /tools/
sources:
  - url: "{{ MIRROR }}/pool/hello.tar?download=1"
    destination: src/hello.tar
    sha256: {{ SHA256 }}
    sha512: {{ SHA512 }}
files:
  - src: configs/hello-{{ ARCH }}
    dest: config
env:
  JOBS: 4
  VERBOSE: true
steps:
  - prepare: tar xf src/hello.tar
    build:
      - make
      - make check
finalize:
  - from: /out/
outputs:
  - hello-{{ ARCH }}
"""


def error_of(load: Load, text: str, variables: dict[str, str] | None = None) -> str:
    with pytest.raises(RecipeError) as info:
        load(text, variables)
    return str(info.value)


def test_a_good_recipe_is_rendered_with_its_variables_and_validated(load: Load, tmp_path: Path) -> None:
    recipe = load(GOOD, VARIABLES)
    assert recipe.name == "hello"
    assert recipe.description == "a greeter"
    assert recipe.shell == "/bin/bash"
    assert recipe.variant == "toolchain"
    assert [(d.stage, d.image, d.from_, d.to) for d in recipe.dependencies] == [
        ("base", None, "/", "/sysroot/"),
        (None, "example.invalid/tools:1", "/usr/bin/", "/tools/"),
    ]
    (source,) = recipe.sources
    assert source.url == "http://mirror.example/debian/pool/hello.tar?download=1"
    assert source.filename == "hello.tar"
    assert (source.destination, source.sha256, source.sha512) == ("src/hello.tar", SHA256, SHA512)
    assert [(f.src, f.dest) for f in recipe.files] == [("configs/hello-amd64", "config")]
    assert recipe.env == {"JOBS": "4", "VERBOSE": "true"}
    assert recipe.steps[0].phases() == [("prepare", "tar xf src/hello.tar"), ("build", "make"),
                                        ("build", "make check")]
    assert [(f.from_, f.to) for f in recipe.finalize] == [("/out/", "/")]
    assert recipe.outputs == ["hello-amd64"]
    assert recipe.path == tmp_path / "pkg.yaml"


def test_a_recipe_knows_the_file_and_line_of_each_of_its_keys(load: Load, tmp_path: Path) -> None:
    recipe = load(GOOD, VARIABLES)
    assert recipe.where("sources", 0, "sha256") == f"{tmp_path / 'pkg.yaml'}:13"
    assert recipe.where("dependencies", 1) == f"{tmp_path / 'pkg.yaml'}:7"
    assert recipe.where() == f"{tmp_path / 'pkg.yaml'}:1"


def test_errors_name_the_display_path_when_one_is_given(tmp_path: Path) -> None:
    path = tmp_path / "pkg.yaml"
    path.write_text("name: a\ncolour: red\n")
    with pytest.raises(RecipeError, match=r"^recipes/a/pkg\.yaml:2: unknown key 'colour'"):
        load_recipe(path, {}, display="recipes/a/pkg.yaml")


def test_an_unknown_top_level_key_is_an_error_naming_file_line_and_key(load: Load) -> None:
    text = error_of(load, "name: a\ndescription: x\ncolour: red\n")
    assert "pkg.yaml:3: unknown key 'colour'" in text
    assert "expected one of: name, description, variant" in text


def test_an_unknown_nested_key_is_an_error_naming_file_line_and_key_path(load: Load) -> None:
    text = error_of(load, """\
        name: a
        steps:
          - build: make
            test: make check
            bild: make
        """)
    assert "pkg.yaml:5: unknown key 'steps.0.bild'" in text
    assert "expected one of: name, prepare, build, install, test" in text


def test_an_unknown_key_in_a_source_lists_the_keys_a_source_has(load: Load) -> None:
    text = error_of(load, f"""\
        name: a
        sources:
          - url: http://mirror.example/a.tar
            destination: a.tar
            sha256: {SHA256}
            sha512: {SHA512}
            mirror: elsewhere
        """)
    assert "pkg.yaml:7: unknown key 'sources.0.mirror'; expected one of: url, destination, sha256, sha512" in text


def test_a_misspelled_required_key_is_reported_by_its_own_name_and_line(load: Load) -> None:
    text = error_of(load, f"""\
        name: a
        sources:
          - url: http://mirror.example/a.tar
            destination: a.tar
            sha265: {SHA256}
            sha512: {SHA512}
        """)
    assert ":5: unknown key 'sources.0.sha265'" in text


def test_a_missing_required_key_is_an_error_naming_it_at_its_parent_line(load: Load) -> None:
    text = error_of(load, """\
        name: a
        sources:
          - url: http://mirror.example/a.tar
            destination: a.tar
            sha512: {{ SHA512 }}
        """, VARIABLES)
    assert text.endswith("pkg.yaml:3: missing required key 'sources.0.sha256'")


def test_a_recipe_without_a_name_is_an_error_at_line_1(load: Load) -> None:
    assert error_of(load, "description: nameless\n").endswith("pkg.yaml:1: missing required key 'name'")


@pytest.mark.parametrize("digest", ["abc123", "A" * 64, "a" * 63, "g" * 64])
def test_a_sha256_that_is_not_64_lowercase_hex_digits_is_an_error_at_its_line(load: Load, digest: str) -> None:
    text = error_of(load, f"""\
        name: a
        sources:
          - url: http://mirror.example/a.tar
            destination: a.tar
            sha256: "{digest}"
            sha512: {SHA512}
        """)
    assert text.endswith("pkg.yaml:5: sources.0.sha256: expected 64 lowercase hex digits")


def test_a_sha512_of_the_wrong_length_is_an_error_at_its_line(load: Load) -> None:
    text = error_of(load, f"""\
        name: a
        sources:
          - url: http://mirror.example/a.tar
            destination: a.tar
            sha256: {SHA256}
            sha512: {SHA256}
        """)
    assert text.endswith("pkg.yaml:6: sources.0.sha512: expected 128 lowercase hex digits")


def test_an_undefined_template_variable_is_an_error_naming_file_line_and_variable(load: Load) -> None:
    text = error_of(load, """\
        name: a
        description: fine
        steps:
          - build: |
              make
              echo {{ NOPE }}
        """)
    assert "pkg.yaml:6: template error: 'NOPE' is undefined" in text
    assert "recipes/vars.yaml" in text  # the hint says where to define it


def test_a_jinja_syntax_error_is_an_error_naming_file_and_line(load: Load) -> None:
    text = error_of(load, "name: a\ndescription: x\n{% if %}\n{% endif %}\n")
    assert "pkg.yaml:3: template error:" in text


def test_a_scratch_recipe_cannot_have_steps(load: Load) -> None:
    text = error_of(load, "name: a\nvariant: scratch\nsteps:\n  - build: make\n")
    assert "pkg.yaml:1:" in text
    assert "variant 'scratch' has no shell, so it cannot have steps" in text


def test_a_scratch_recipe_without_steps_is_fine(load: Load) -> None:
    assert load("name: a\nvariant: scratch\nfinalize:\n  - from: /\n").variant == "scratch"


def test_outputs_without_finalize_are_rejected(load: Load) -> None:
    text = error_of(load, "name: a\noutputs:\n  - a.bin\n")
    assert "a recipe with outputs needs 'finalize'" in text


@pytest.mark.parametrize("destination", ["../escape.tar", "a/../../escape.tar", "/etc/passwd", ""])
def test_a_source_destination_outside_the_build_directory_is_rejected(load: Load, destination: str) -> None:
    text = error_of(load, f"""\
        name: a
        sources:
          - url: http://mirror.example/a.tar
            destination: "{destination}"
            sha256: {SHA256}
            sha512: {SHA512}
        """)
    assert "pkg.yaml:4: sources.0.destination: destination must be a relative path inside the build" in text


def test_a_project_file_outside_the_project_is_rejected(load: Load) -> None:
    text = error_of(load, "name: a\nfiles:\n  - src: ../../etc/passwd\n    dest: passwd\n")
    assert "pkg.yaml:3: files.0.src: src must be a relative path" in text


@pytest.mark.parametrize("kinds", ["stage: b\n    image: c", "stage: b\n    artifact: c", "from: /x/"])
def test_a_dependency_names_exactly_one_of_stage_artifact_or_image(load: Load, kinds: str) -> None:
    text = error_of(load, f"name: a\ndependencies:\n  - {kinds}\n")
    assert "pkg.yaml:3:" in text and "exactly one of 'stage', 'artifact' or 'image'" in text


def test_outputs_pick_files_of_an_artifact_dependency_only(load: Load) -> None:
    text = error_of(load, "name: a\ndependencies:\n  - stage: b\n    outputs: [x]\n")
    assert "'outputs' picks files of an 'artifact' dependency only" in text


def test_an_artifact_dependency_has_no_from(load: Load) -> None:
    text = error_of(load, "name: a\ndependencies:\n  - artifact: b\n    from: /x/\n")
    assert "an 'artifact' dependency has no 'from'" in text


@pytest.mark.parametrize("value", ["[linux/riscv64]", "[arm64]", "[]", "[linux/amd64, amd64]"])
def test_platforms_must_name_known_platforms_exactly(load: Load, value: str) -> None:
    text = error_of(load, f"name: a\nplatforms: {value}\n")
    assert "pkg.yaml:2: platforms" in text


def test_platforms_limit_where_a_recipe_is_built(load: Load) -> None:
    recipe = load("name: a\nplatforms: [linux/arm64]\n")
    assert recipe.builds_for(ARM64) and not recipe.builds_for(AMD64)


def test_a_dependency_copies_between_absolute_paths(load: Load) -> None:
    text = error_of(load, "name: a\ndependencies:\n  - stage: b\n    from: rel/\n")
    assert "expected an absolute path without '..', not 'rel/'" in text


@pytest.mark.parametrize("output", ["dir/a.bin", ".hidden"])
def test_an_output_is_a_plain_file_name_in_out(load: Load, output: str) -> None:
    text = error_of(load, f"name: a\nfinalize:\n  - from: /\noutputs:\n  - {output}\n")
    assert "an output is a plain file name in out/" in text


def test_a_step_phase_may_be_one_script_or_a_list_of_scripts(load: Load) -> None:
    recipe = load("""\
        name: a
        steps:
          - prepare: ./configure
            build: [make, make docs]
          - install:
              - make install
            test: make check
        """)
    assert recipe.steps[0].prepare == ["./configure"]
    assert recipe.steps[0].build == ["make", "make docs"]
    assert [s.phases() for s in recipe.steps] == [
        [("prepare", "./configure"), ("build", "make"), ("build", "make docs")],
        [("install", "make install"), ("test", "make check")],
    ]


def test_phases_run_in_prepare_build_install_test_order_whatever_the_yaml_order(load: Load) -> None:
    recipe = load("name: a\nsteps:\n  - test: t\n    install: i\n    build: b\n    prepare: p\n")
    assert [phase for phase, _ in recipe.steps[0].phases()] == ["prepare", "build", "install", "test"]


def test_env_values_become_strings_and_booleans_lowercase(load: Load) -> None:
    assert load("name: a\nenv:\n  N: 1\n  B: false\n  S: x\n").env == {"N": "1", "B": "false", "S": "x"}


def test_a_recipe_name_must_be_lowercase_letters_digits_dot_dash_underscore(load: Load) -> None:
    assert "name:" in error_of(load, "name: Hello World\n")


def test_a_recipe_must_be_a_mapping(load: Load) -> None:
    assert error_of(load, "- name: a\n").endswith("pkg.yaml:1: a recipe must be a YAML mapping")


def test_a_missing_recipe_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"nowhere/pkg\.yaml: no such file"):
        load_recipe(tmp_path / "nowhere" / "pkg.yaml", {})


def test_recipe_files_are_found_anywhere_under_recipes_in_a_stable_order(tmp_path: Path) -> None:
    for rel in ("b/pkg.yaml", "a/deeper/pkg.yaml", "a/pkg.yaml", "a/notes.yaml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("name: x\n")
    assert [p.relative_to(tmp_path).as_posix() for p in find_recipe_files(tmp_path)] == [
        "a/deeper/pkg.yaml", "a/pkg.yaml", "b/pkg.yaml"]


@pytest.mark.parametrize(("template", "message"), [
    ("name: a\ndescription: '{{ 1 // 0 }}'\n", r"pkg\.yaml:2: template error: ZeroDivisionError: integer division"),
    ("name: a\n{% include 'other.yaml' %}\n", r"pkg\.yaml:2: template error: \{% include %\}, \{% import %\} and "
                                              r"\{% extends %\} are not supported in recipes"),
    ("name: a\ndescription: '{{ [1][5] }}'\n", r"pkg\.yaml:2: template error: "),
    ("name: a\n{% for x in 3 %}{% endfor %}\n", r"pkg\.yaml:2: template error: "),
])
def test_a_template_that_fails_while_rendering_is_one_error_with_its_line(load: Load, template: str,
                                                                          message: str) -> None:
    assert re.search(message, error_of(load, template))


def test_a_digest_yaml_reads_as_a_number_says_to_quote_it(load: Load) -> None:
    text = error_of(load, f"name: a\nsources:\n  - url: file:///x\n    destination: x\n    sha256: {'0' * 64}\n"
                          f"    sha512: {'a' * 128}\n")
    assert "pkg.yaml:5: sources.0.sha256: expected 64 lowercase hex digits as a string (quote it), not 0" in text


@pytest.mark.parametrize(("value", "kind"), [("[a, b]", "a list"), ("{a: b}", "a mapping")])
def test_an_env_value_that_is_a_list_or_mapping_is_refused(load: Load, value: str, kind: str) -> None:
    assert f"pkg.yaml:2: env: FLAGS: expected a string or number, not {kind}" in error_of(
        load, f"name: a\nenv:\n  FLAGS: {value}\n")


def test_two_sources_with_one_destination_are_refused(load: Load) -> None:
    source = f"  - url: file:///x\n    destination: x.tar\n    sha256: {'a' * 64}\n    sha512: {'b' * 128}\n"
    text = error_of(load, "name: a\nsources:\n" + source + source)
    assert "sources.1 and sources.0 both go to 'x.tar'" in text


@pytest.mark.parametrize("target", ["pkg.yaml", "missing.yaml"], ids=["loop", "dangling"])
def test_a_recipe_file_that_is_a_link_to_nowhere_is_an_error(tmp_path: Path, target: str) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "pkg.yaml").symlink_to(target)
    with pytest.raises(RecipeError) as info:
        find_recipe_files(tmp_path)
    assert str(info.value) == f"{tmp_path}/a/pkg.yaml: a link that leads to no file (dangling, or a loop)"


def test_line_numbers_stay_right_after_a_multi_line_set(load: Load) -> None:
    text = error_of(load, '{% set sums = {\n  "a": "1",\n  "b": "2",\n} %}\nname: a\ncolour: blue\n')
    assert "pkg.yaml:6: unknown key 'colour'" in text


def test_template_errors_after_a_multi_line_block_name_the_files_line(load: Load) -> None:
    text = error_of(load, '{#\n  a comment\n#}\n{% set x = [\n 1] %}\nname: a\ndescription: "{{ nope }}"\n')
    assert "pkg.yaml:7: template error: 'nope' is undefined" in text
