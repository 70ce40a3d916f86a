"""YAML loading that remembers where every key and value came from (for file:line errors)."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from builder.core.errors import RecipeError
from builder.model import files

Path_ = tuple[Hashable, ...]


MAX_BYTES = 1 << 20  # a recipe or vars.yaml is a few kilobytes; anything this big is some other file
YAML_KINDS = "a recipe, vars.yaml, profile, overlay or META file"


def read_text(path: Path, display: str, root: Path | None = None) -> str:
    """A YAML text file as UTF-8: a project file (under ``root``: read as files.read_project_file reads every
    project file, so a link out of the project is refused unread), or, without ``root``, a file the command
    line names. Not a regular file, larger than MAX_BYTES or not UTF-8 is a RecipeError naming it."""
    data = files.read_project_file(root, path, display, limit=MAX_BYTES, what=YAML_KINDS)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
                          where=display) from None


MAX_DEPTH = 64  # collections inside collections; a recipe needs five


def _refuse_aliases_and_depth(text: str, filename: str) -> None:
    """YAML aliases are refused before anything is built from them: a few lines of nested aliases expand
    to billions of nodes (the "billion laughs"), and recipes share values with jinja2's {% set %}.
    Nesting is bounded the same way, before the composer recurses into it."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = f":{event.start_mark.line + 1}" if event.start_mark else ""
                raise RecipeError(f"YAML nested deeper than {MAX_DEPTH} levels", where=f"{filename}{line}")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            line = f":{event.start_mark.line + 1}" if event.start_mark else ""
            raise RecipeError(f"YAML alias *{event.anchor} is not supported; write the value out, or share it "
                              "with a jinja2 {% set %}", where=f"{filename}{line}")


def load(text: str, filename: str) -> tuple[Any, dict[Path_, int]]:
    """Parse one YAML document. Returns the data and a map from key path to 1-based line.

    Duplicate keys, tags, aliases, nesting deeper than MAX_DEPTH and malformed YAML are RecipeErrors
    naming the file and line.
    """
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        _refuse_aliases_and_depth(text, filename)
        node = loader.get_single_node()
        lines: dict[Path_, int] = {}
        data = _build(loader, node, (), lines, filename) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = exc.problem or exc.context or "malformed YAML"
        if problem == "found character '\\t' that cannot start any token":
            problem = "a tab character where YAML wants spaces (indent with spaces only)"
        raise RecipeError(f"malformed YAML: {problem}", where=f"{filename}{line}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, other controls)
        line = f":{text[:exc.position].count(chr(10)) + 1}"
        raise RecipeError(f"malformed YAML: character #x{exc.character:04x} is not allowed in YAML",
                          where=f"{filename}{line}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"malformed YAML: {exc}", where=filename) from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, lines


PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{kind}"
                      for kind in ("str", "int", "float", "bool", "null", "timestamp", "seq", "map"))


def _build(
    loader: yaml.SafeLoader, node: yaml.Node, path: Path_, lines: dict[Path_, int], filename: str
) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if node.tag not in PLAIN_TAGS:  # !!binary, !!set, !!python/...: a recipe is plain data
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise RecipeError(f"malformed YAML: could not determine a constructor for the tag {tag!r} (recipes take "
                          "plain strings, numbers, lists and mappings)", where=f"{filename}:{_line(node)}")
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                raise RecipeError("a mapping key must be a scalar", where=f"{filename}:{_line(key_node)}")
            if key in result:
                raise RecipeError(f"duplicate key {key!r}", where=f"{filename}:{_line(key_node)}")
            lines[(*path, key)] = _line(key_node)
            result[key] = _build(loader, value_node, (*path, key), lines, filename)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*path, i), lines, filename) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def line_of(lines: dict[Path_, int], path: Path_) -> int | None:
    """The line of ``path``, or of its nearest ancestor that has one."""
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())
