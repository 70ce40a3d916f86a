"""Recipes for one platform, resolved into a dependency graph. Unknown names and cycles are errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from builder.errors import RecipeError
from builder.recipe import Recipe


@dataclass(frozen=True)
class Graph:
    """All recipes for one platform, by name."""

    recipes: dict[str, Recipe]

    @classmethod
    def of(cls, recipes: list[Recipe]) -> Graph:
        by_name: dict[str, Recipe] = {}
        for recipe in recipes:
            if recipe.name in by_name:
                first = by_name[recipe.name].where("name")
                raise RecipeError(f"recipe name {recipe.name!r} is already used by {first}",
                                  where=recipe.where("name"))
            by_name[recipe.name] = recipe
        graph = cls(by_name)
        for name in sorted(by_name):
            graph.closure(name)  # reports unknown dependencies and cycles up front
        return graph

    def __getitem__(self, name: str) -> Recipe:
        try:
            return self.recipes[name]
        except KeyError:
            known = ", ".join(sorted(self.recipes)) or "none"
            raise RecipeError(f"unknown recipe {name!r}; known recipes: {known}") from None

    def stage_dependencies(self, recipe: Recipe) -> Iterator[tuple[int, Recipe]]:
        """(index in recipe.dependencies, recipe) for every stage dependency."""
        for index, dep in enumerate(recipe.dependencies):
            if dep.stage is None:
                continue
            if dep.stage not in self.recipes:
                known = ", ".join(sorted(self.recipes))
                raise RecipeError(f"dependencies.{index}.stage: unknown recipe {dep.stage!r}; known: {known}",
                                  where=recipe.where("dependencies", index, "stage"))
            yield index, self.recipes[dep.stage]

    def closure(self, name: str) -> list[Recipe]:
        """``name`` and everything it depends on, dependencies first (a stable topological order)."""
        order: list[Recipe] = []
        done: set[str] = set()
        path: list[str] = []

        def visit(recipe: Recipe) -> None:
            if recipe.name in done:
                return
            if recipe.name in path:
                cycle = " -> ".join([*path[path.index(recipe.name):], recipe.name])
                raise RecipeError(f"dependency cycle: {cycle}", where=recipe.where("dependencies"))
            path.append(recipe.name)
            for _, dep in self.stage_dependencies(recipe):
                visit(dep)
            path.pop()
            done.add(recipe.name)
            order.append(recipe)

        visit(self[name])
        return order

    def exported(self) -> list[Recipe]:
        """Recipes that put artifacts into out/ (those with ``outputs``), by name."""
        return [self.recipes[n] for n in sorted(self.recipes) if self.recipes[n].outputs]

    def dot(self) -> str:
        """The graph in Graphviz dot form."""
        lines = ["digraph recipes {"]
        for name in sorted(self.recipes):
            recipe = self.recipes[name]
            shape = "box" if recipe.outputs else "ellipse"
            lines.append(f'  "{name}" [shape={shape}];')
            for dep in recipe.dependencies:
                target = dep.stage or dep.image
                lines.append(f'  "{name}" -> "{target}";')
        lines.append("}")
        return "\n".join(lines)
