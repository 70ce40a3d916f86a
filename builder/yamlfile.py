"""YAML loading that remembers where every key and value came from (for file:line errors)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml

from builder.errors import RecipeError

Path_ = tuple[Hashable, ...]


def load(text: str, filename: str) -> tuple[Any, dict[Path_, int]]:
    """Parse one YAML document. Returns the data and a map from key path to 1-based line.

    Duplicate keys, tags and malformed YAML are RecipeErrors naming the file and line.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[Path_, int] = {}
        data = _build(loader, node, (), lines, filename) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = exc.problem or exc.context or "malformed YAML"
        raise RecipeError(f"malformed YAML: {problem}", where=f"{filename}{line}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"malformed YAML: {exc}", where=filename) from None
    finally:
        loader.dispose()
    return data, lines


def _build(
    loader: yaml.SafeLoader, node: yaml.Node, path: Path_, lines: dict[Path_, int], filename: str
) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
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
