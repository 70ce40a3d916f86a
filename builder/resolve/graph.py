"""Recipes for one platform, resolved into a dependency graph. Unknown names and cycles are errors.

Two kinds of edges: a ``stage`` dependency is rendered into the dependent's own build (one Dockerfile);
an ``artifact`` dependency is a separate task whose published outputs the dependent takes from out/.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from builder.core.errors import RecipeError
from builder.core.platforms import Platform
from builder.model.recipe import Dependency, Recipe


@dataclass(frozen=True)
class Graph:
    """All recipes for one platform, by name."""

    recipes: dict[str, Recipe]
    platform: Platform | None = None  # None when the graph is not for one platform (unit tests)

    @classmethod
    def of(cls, recipes: list[Recipe], platform: Platform | None = None) -> Graph:
        by_name: dict[str, Recipe] = {}
        for recipe in recipes:
            if recipe.name in by_name:
                first = by_name[recipe.name].where("name")
                raise RecipeError(f"recipe name {recipe.name!r} is already used by {first}",
                                  where=recipe.where("name"))
            by_name[recipe.name] = recipe
        graph = cls(by_name, platform)
        for recipe in recipes:  # in the order given (the project's recipes, then its profiles' images)
            graph.order(recipe.name)  # reports unknown dependencies, bad artifacts and cycles up front
        return graph

    def __getitem__(self, name: str) -> Recipe:
        try:
            return self.recipes[name]
        except KeyError:
            known = ", ".join(sorted(self.recipes)) or "none"
            raise RecipeError(f"unknown recipe {name!r}; known recipes: {known}") from None

    def _named(self, recipe: Recipe, index: int, kind: str, name: str) -> Recipe:
        if name not in self.recipes:
            known = ", ".join(sorted(self.recipes))
            raise RecipeError(f"dependencies.{index}.{kind}: unknown recipe {name!r}; known: {known}",
                              where=recipe.where("dependencies", index, kind))
        return self.recipes[name]

    def dependencies(self, recipe: Recipe) -> Iterator[tuple[int, Dependency]]:
        """(index in recipe.dependencies, dependency) for every dependency a build for this platform takes:
        one whose own ``platforms`` leave this platform out is not an edge here."""
        for index, dep in enumerate(recipe.dependencies):
            if dep.taken_for(self.platform):
                yield index, dep

    def _upstream(self, recipe: Recipe, index: int, kind: str, name: str) -> Recipe:
        """The recipe a stage or artifact edge names, which must be built for this platform whenever
        ``recipe`` is: an edge never takes a recipe its ``platforms`` leave out (refused here, not by a
        compiler inside the build)."""
        upstream = self._named(recipe, index, kind, name)
        if self.platform is not None and recipe.builds_for(self.platform) and not upstream.builds_for(self.platform):
            only = ", ".join(upstream.platforms or [])
            raise RecipeError(
                f"dependencies.{index}.{kind}: {recipe.name!r} takes {upstream.name!r} for {self.platform.docker}, "
                f"which {upstream.where('platforms')} leaves out; to take it only where it is built, give this "
                f"dependency 'platforms: [{only}]'", where=recipe.where("dependencies", index, kind))
        return upstream

    def stage_dependencies(self, recipe: Recipe) -> Iterator[tuple[int, Recipe]]:
        """(index in recipe.dependencies, recipe) for every stage dependency."""
        for index, dep in self.dependencies(recipe):
            if dep.stage is not None:
                yield index, self._upstream(recipe, index, "stage", dep.stage)

    def artifact_dependencies(self, recipe: Recipe) -> Iterator[tuple[int, Dependency, Recipe, list[str]]]:
        """(index, dependency, upstream recipe, the output names taken) for every artifact dependency."""
        for index, dep in self.dependencies(recipe):
            if dep.artifact is None:
                continue
            upstream = self._upstream(recipe, index, "artifact", dep.artifact)
            where = recipe.where("dependencies", index, "artifact")
            if not upstream.outputs:
                raise RecipeError(f"dependencies.{index}.artifact: recipe {upstream.name!r} publishes no outputs; "
                                  "use 'stage' to build on it", where=where)
            taken = dep.outputs if dep.outputs is not None else list(upstream.outputs)
            for name in taken:
                if name not in upstream.outputs:
                    raise RecipeError(f"dependencies.{index}.outputs: {upstream.name!r} has no output {name!r}; "
                                      f"it has {', '.join(upstream.outputs)}",
                                      where=recipe.where("dependencies", index, "outputs"))
            yield index, dep, upstream, taken

    def order(self, name: str) -> list[Recipe]:
        """``name`` and everything it depends on by any edge, dependencies first (stable topological order)."""
        return self._walk(name, artifacts=True)

    def closure(self, name: str) -> list[Recipe]:
        """The recipes rendered into ``name``'s build: itself and its stage dependencies, dependencies first."""
        return self._walk(name, artifacts=False)

    def _walk(self, name: str, *, artifacts: bool) -> list[Recipe]:
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
            if artifacts:
                for _, _, upstream, _ in self.artifact_dependencies(recipe):
                    visit(upstream)
            path.pop()
            done.add(recipe.name)
            order.append(recipe)

        visit(self[name])
        return order

    def flavored(self, name: str) -> bool:
        """Whether ``name`` or a recipe it takes, by any edge, declares flavors (FLAVOR=... makes it another build)."""
        return any(r.flavors for r in self.order(name))

    def upstream_tasks(self, name: str) -> list[str]:
        """Recipes whose published outputs ``name``'s build takes, directly (their tasks run first)."""
        return sorted({upstream.name for _, _, upstream, _ in self.artifact_dependencies(self[name])})

    def exported(self) -> list[Recipe]:
        """Recipes that put artifacts into out/ for this platform (those with ``outputs``), by name."""
        return [self.recipes[n] for n in sorted(self.recipes)
                if self.recipes[n].outputs and (self.platform is None or self.recipes[n].builds_for(self.platform))]

    def dot(self) -> str:
        """The graph in Graphviz dot form (dashed edges: artifacts taken from out/)."""
        lines = ["digraph recipes {"]
        for name in sorted(self.recipes):
            recipe = self.recipes[name]
            shape = "box" if recipe.outputs else "ellipse"
            lines.append(f'  "{name}" [shape={shape}];')
            for dep in recipe.dependencies:
                style = " [style=dashed]" if dep.artifact else ""
                lines.append(f'  "{name}" -> "{dep.target}"{style};')
        lines.append("}")
        return "\n".join(lines)
