"""YAML that remembers where every key came from, so errors can say file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.core.errors import RecipeError
from builder.model import yamlfile

TEXT = """\
name: a
steps:
  - build: make
    test: make check
env:
  A: "1"
"""


def test_every_key_remembers_the_line_it_is_on() -> None:
    data, lines = yamlfile.load(TEXT, "pkg.yaml")
    assert data == {"name": "a", "steps": [{"build": "make", "test": "make check"}], "env": {"A": "1"}}
    assert lines[("name",)] == 1
    assert lines[("steps",)] == 2
    assert lines[("steps", 0)] == 3
    assert lines[("steps", 0, "build")] == 3
    assert lines[("steps", 0, "test")] == 4
    assert lines[("env", "A")] == 6


def test_a_key_path_without_a_line_falls_back_to_its_nearest_ancestor() -> None:
    _, lines = yamlfile.load(TEXT, "pkg.yaml")
    assert yamlfile.line_of(lines, ("steps", 0, "install")) == 3
    assert yamlfile.line_of(lines, ("nothing", "here")) == 1
    assert yamlfile.line_of(lines, ()) == 1


def test_a_duplicate_key_is_rejected_naming_file_line_and_key() -> None:
    with pytest.raises(RecipeError) as info:
        yamlfile.load("name: a\nenv:\n  A: 1\n  A: 2\n", "recipes/a/pkg.yaml")
    assert str(info.value) == "recipes/a/pkg.yaml:4: duplicate key 'A'"


def test_a_duplicate_top_level_key_is_rejected_too() -> None:
    with pytest.raises(RecipeError, match=r"^f\.yaml:3: duplicate key 'name'$"):
        yamlfile.load("name: a\ndescription: x\nname: b\n", "f.yaml")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: 1\n  b: 2\n", 2),
        ("a: 1\nb: [1, 2\nc: 3\n", 3),
        ("a: 1\nb: 'unterminated\n", 3),
    ],
)
def test_malformed_yaml_is_a_recipe_error_naming_file_and_line(text: str, line: int) -> None:
    with pytest.raises(RecipeError) as info:
        yamlfile.load(text, "recipes/x/pkg.yaml")
    assert str(info.value).startswith(f"recipes/x/pkg.yaml:{line}: malformed YAML: ")


def test_tags_that_would_construct_python_objects_are_rejected() -> None:
    with pytest.raises(RecipeError, match=r"^f\.yaml:1: malformed YAML: could not determine a constructor"):
        yamlfile.load("a: !!python/object:os.system x\n", "f.yaml")


def test_an_empty_document_is_no_data() -> None:
    assert yamlfile.load("", "f.yaml") == (None, {})


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(9))
    with pytest.raises(RecipeError) as info:
        yamlfile.load(bomb, "recipes/a/pkg.yaml")
    assert str(info.value) == ("recipes/a/pkg.yaml:2: YAML alias *a is not supported; write the value out, or "
                               "share it with a jinja2 {% set %}")


def test_yaml_nested_absurdly_deep_is_an_error_naming_the_line() -> None:
    with pytest.raises(RecipeError, match=r"^pkg\.yaml:2: YAML nested deeper than 64 levels$"):
        yamlfile.load("name: a\nb: " + "[" * 5000 + "]" * 5000 + "\n", "pkg.yaml")


def test_a_file_that_is_not_utf8_is_named_with_the_first_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "pkg.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(RecipeError) as info:
        yamlfile.read_text(path, "recipes/a/pkg.yaml")
    assert str(info.value) == "recipes/a/pkg.yaml: not UTF-8 text (byte 0xe9 at offset 9)"
