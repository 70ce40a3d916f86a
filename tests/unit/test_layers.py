"""The import contract: builder/ is a stack of layer packages, and no import runs back up it.

Every import counts, a lazy one inside a function and a type-only one (`if TYPE_CHECKING:`) included: a
layer may name only its own package and those below. The modules' runtime imports form no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "builder"
LAYERS = ["scripts", "core", "model", "host", "resolve", "build", "schedule", "cli"]  # bottom first: the contract
TOP_LEVEL = {"__init__", "__main__"}  # builder/__main__.py starts the cli


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module imported, line, type-only) for every builder import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only |= {id(child) for stmt in node.body for child in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "builder":
                found += [(f"builder.{a.name}", node.lineno, id(node) in type_only) for a in node.names]
            elif node.module.startswith("builder."):
                found.append((node.module, node.lineno, id(node) in type_only))
                found += [(f"{node.module}.{a.name}", node.lineno, id(node) in type_only) for a in node.names
                          if (PACKAGE.parent / f"{node.module}.{a.name}".replace(".", "/")).with_suffix(".py").exists()]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in type_only) for a in node.names if a.name.startswith("builder.")]
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: a relative import; name the layer (from builder.LAYER ...)")
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def _modules() -> dict[str, Path]:
    return {_module(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_lives_in_a_layer_package() -> None:
    loose = [m for m, p in _modules().items() if p.parent == PACKAGE and p.stem not in TOP_LEVEL]
    assert loose == []
    assert sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()) == sorted(LAYERS)


def test_each_layer_says_what_it_owns_and_what_it_may_import() -> None:
    for layer in LAYERS:
        doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text()))
        assert doc and ("Imports" in doc or "import" in doc), f"builder/{layer}/__init__.py says nothing"


def test_no_import_runs_back_up_a_layer() -> None:
    wrong = []
    for module, path in _modules().items():
        mine = _layer(module)
        if mine is None:
            continue
        for imported, line, _ in _imports(path):
            theirs = _layer(imported)
            if theirs is not None and LAYERS.index(theirs) > LAYERS.index(mine):
                wrong.append(f"builder/{path.relative_to(PACKAGE)}:{line}: {mine} imports {imported} ({theirs})")
    assert wrong == []


def test_the_runtime_imports_form_no_cycle() -> None:
    modules = _modules()
    edges = {m: sorted({i for i, _, type_only in _imports(p) if not type_only and i in modules and i != m})
             for m, p in modules.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for module in edges:
        if module not in state:
            visit(module)


def test_the_contract_catches_an_import_up_a_layer(tmp_path: Path) -> None:
    """The checks above can fail: an upward import in a scratch file is found by the same reader."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from builder.cli import commands\n")
    assert [(m, line) for m, line, _ in _imports(probe)] == [("builder.cli", 2), ("builder.cli.commands", 2)]


# --- no hidden global state ---

# Signals reach a process, not an invocation: the handler's record of them is the one module-level state.
PROCESS_WIDE = {("builder.core.run", "_received"), ("builder.core.run", "_next_hook")}
MUTABLE = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)


def test_no_module_keeps_state_of_its_own() -> None:
    """What an invocation learns (engine answers, probes, chosen paths, tokens, caches) lives in the values
    it passes down (builder.host.services.Services, the project, the session), never in a module: a
    lower-case module-level container or a memoizing decorator would be state shared by every caller and
    thread. UPPER-CASE names are constant tables."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module(path)
        tree = ast.parse(path.read_text(), str(path))
        # Class attributes too, but not annotated fields: pydantic and dataclasses give each instance its own.
        attributes = [s for c in tree.body if isinstance(c, ast.ClassDef) for s in c.body if isinstance(s, ast.Assign)]
        for node in [*tree.body, *attributes]:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) else []
            value = getattr(node, "value", None)
            mutable = isinstance(value, MUTABLE) or (isinstance(value, ast.Call) and ast.unparse(value.func) in (
                "dict", "list", "set", "collections.defaultdict", "defaultdict", "threading.local"))
            for target in targets:
                name = ast.unparse(target)
                if mutable and not name.isupper() and not name.startswith("__") and (module, name) not in PROCESS_WIDE:
                    found.append(f"{module}.{name} (line {node.lineno})")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for decorator in node.decorator_list:
                    if ast.unparse(decorator) in ("cache", "functools.cache", "lru_cache", "functools.lru_cache") \
                            or ast.unparse(decorator).startswith(("lru_cache(", "functools.lru_cache(")):
                        found.append(f"{module}.{node.name} is memoized (line {node.lineno})")
    assert found == []
