"""Recipes resolved into a dependency graph: dependencies first; unknown names and cycles are errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from builder.core.errors import RecipeError
from builder.core.platforms import AMD64, ARM64
from builder.model.recipe import Recipe, load_recipe
from builder.resolve.graph import Graph

MakeRecipe = Callable[..., Recipe]


@pytest.fixture
def recipe(tmp_path: Path) -> MakeRecipe:
    """recipe("c", "a", "b", outputs=True): recipes/c/pkg.yaml depending on stages a and b."""

    def make(name: str, *stages: str, outputs: bool = False, image: str | None = None, folder: str = "") -> Recipe:
        lines = [f"name: {name}"]
        if stages or image:
            lines.append("dependencies:")
            lines += [f"  - stage: {stage}" for stage in stages]
            if image:
                lines.append(f"  - image: {image}")
        if outputs:
            lines += ["finalize:", "  - from: /out/", "outputs:", f"  - {name}.bin"]
        path = tmp_path / "recipes" / (folder or name) / "pkg.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        return load_recipe(path, {}, display=str(path.relative_to(tmp_path)))

    return make


def names(recipes: list[Recipe]) -> list[str]:
    return [r.name for r in recipes]


def test_a_closure_lists_dependencies_before_the_recipes_that_need_them(recipe: MakeRecipe) -> None:
    graph = Graph.of([recipe("app", "lib", "base"), recipe("lib", "base"), recipe("base"), recipe("other")])
    assert names(graph.closure("app")) == ["base", "lib", "app"]
    assert names(graph.closure("lib")) == ["base", "lib"]
    assert names(graph.closure("other")) == ["other"]


def test_a_shared_dependency_appears_once_in_a_diamond(recipe: MakeRecipe) -> None:
    graph = Graph.of([recipe("top", "left", "right"), recipe("left", "base"), recipe("right", "base"),
                      recipe("base")])
    assert names(graph.closure("top")) == ["base", "left", "right", "top"]


def test_an_image_dependency_is_not_a_recipe_in_the_graph(recipe: MakeRecipe) -> None:
    graph = Graph.of([recipe("a", image="example.invalid/tools:1")])
    assert names(graph.closure("a")) == ["a"]


def test_a_dependency_cycle_is_an_error_spelling_out_the_cycle(recipe: MakeRecipe) -> None:
    with pytest.raises(RecipeError) as info:
        Graph.of([recipe("a", "b"), recipe("b", "a")])
    assert "dependency cycle: a -> b -> a" in str(info.value)
    assert str(info.value).startswith("recipes/a/pkg.yaml:2: ")


def test_a_longer_cycle_names_every_recipe_on_it(recipe: MakeRecipe) -> None:
    with pytest.raises(RecipeError, match="dependency cycle: b -> c -> d -> b"):
        Graph.of([recipe("a", "b"), recipe("b", "c"), recipe("c", "d"), recipe("d", "b")])


def test_a_recipe_depending_on_itself_is_a_cycle(recipe: MakeRecipe) -> None:
    with pytest.raises(RecipeError, match="dependency cycle: a -> a"):
        Graph.of([recipe("a", "a")])


def test_an_unknown_stage_dependency_is_an_error_naming_file_line_and_the_known_recipes(
    recipe: MakeRecipe,
) -> None:
    with pytest.raises(RecipeError) as info:
        Graph.of([recipe("app", "base", "nope"), recipe("base")])
    assert str(info.value) == ("recipes/app/pkg.yaml:4: dependencies.1.stage: unknown recipe 'nope'; "
                               "known: app, base")


def test_two_recipes_with_the_same_name_is_an_error_naming_both_files(recipe: MakeRecipe) -> None:
    with pytest.raises(RecipeError) as info:
        Graph.of([recipe("kernel", folder="kernel"), recipe("kernel", folder="kernel-rt")])
    assert str(info.value) == ("recipes/kernel-rt/pkg.yaml:1: recipe name 'kernel' is already used by "
                               "recipes/kernel/pkg.yaml:1")


def test_asking_for_an_unknown_recipe_lists_the_known_ones(recipe: MakeRecipe) -> None:
    graph = Graph.of([recipe("b"), recipe("a")])
    with pytest.raises(RecipeError, match=r"unknown recipe 'kernal'; known recipes: a, b"):
        graph["kernal"]


def test_only_recipes_with_outputs_are_exported_in_name_order(recipe: MakeRecipe) -> None:
    graph = Graph.of([recipe("z", outputs=True), recipe("m"), recipe("a", "m", outputs=True)])
    assert names(graph.exported()) == ["a", "z"]


def test_the_graph_can_be_drawn_with_graphviz(recipe: MakeRecipe) -> None:
    dot = Graph.of([recipe("a", "b", outputs=True, image="example.invalid/t:1"), recipe("b")]).dot()
    assert dot.startswith("digraph recipes {")
    assert '"a" [shape=box];' in dot and '"b" [shape=ellipse];' in dot
    assert '"a" -> "b";' in dot and '"a" -> "example.invalid/t:1";' in dot


# --- artifact dependencies: published outputs, not a rendered stage ---

def artifact_recipe(tmp_path: Path, name: str, body: str, platforms: str = "") -> Recipe:
    path = tmp_path / "recipes" / name / "pkg.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"name: {name}\n{platforms}{body}")
    return load_recipe(path, {}, display=str(path.relative_to(tmp_path)))


TAKES_K = "dependencies:\n  - artifact: k\n"
OUT = "finalize:\n  - from: /\noutputs: [k.bin, m.tar]\n"


def test_an_artifact_dependency_orders_tasks_but_is_not_rendered(tmp_path: Path) -> None:
    graph = Graph.of([artifact_recipe(tmp_path, "k", OUT),
                      artifact_recipe(tmp_path, "i", "dependencies:\n  - artifact: k\n    outputs: [m.tar]\n")])
    assert names(graph.closure("i")) == ["i"]
    assert names(graph.order("i")) == ["k", "i"]
    assert graph.upstream_tasks("i") == ["k"]
    (_, _, upstream, taken), = graph.artifact_dependencies(graph["i"])
    assert (upstream.name, taken) == ("k", ["m.tar"])


def test_an_artifact_dependency_takes_every_output_by_default(tmp_path: Path) -> None:
    graph = Graph.of([artifact_recipe(tmp_path, "k", OUT), artifact_recipe(tmp_path, "i", TAKES_K)])
    assert [taken for *_, taken in graph.artifact_dependencies(graph["i"])] == [["k.bin", "m.tar"]]


def test_an_artifact_of_a_recipe_without_outputs_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"recipes/i/pkg\.yaml:3: dependencies\.0\.artifact: recipe 'k' publishes "
                                          r"no outputs; use 'stage' to build on it"):
        Graph.of([artifact_recipe(tmp_path, "k", ""), artifact_recipe(tmp_path, "i", TAKES_K)])


def test_an_output_the_upstream_does_not_publish_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"recipes/i/pkg\.yaml:4: dependencies\.0\.outputs: 'k' has no output "
                                          r"'x\.bin'; it has k\.bin, m\.tar"):
        Graph.of([artifact_recipe(tmp_path, "k", OUT),
                  artifact_recipe(tmp_path, "i", "dependencies:\n  - artifact: k\n    outputs: [x.bin]\n")])


ARM64_ONLY = "platforms: [linux/arm64]\n"


@pytest.mark.parametrize("kind", ["artifact", "stage"])
def test_an_edge_to_a_recipe_not_built_for_the_platform_is_refused_naming_both_and_the_way_out(
        tmp_path: Path, kind: str) -> None:
    with pytest.raises(RecipeError, match=rf"^recipes/i/pkg\.yaml:3: dependencies\.0\.{kind}: 'i' takes 'k' for "
                                          r"linux/amd64, which recipes/k/pkg\.yaml:2 leaves out; to take it only "
                                          r"where it is built, give this dependency 'platforms: \[linux/arm64\]'$"):
        Graph.of([artifact_recipe(tmp_path, "k", OUT, platforms=ARM64_ONLY),
                  artifact_recipe(tmp_path, "i", f"dependencies:\n  - {kind}: k\n")], AMD64)


@pytest.mark.parametrize("kind", ["artifact", "stage"])
def test_a_dependency_limited_to_a_platform_is_an_edge_there_only(tmp_path: Path, kind: str) -> None:
    k = artifact_recipe(tmp_path, "k", OUT, platforms=ARM64_ONLY)
    i = artifact_recipe(tmp_path, "i", f"dependencies:\n  - {kind}: k\n    platforms: [linux/arm64]\n")
    assert names(Graph.of([k, i], AMD64).order("i")) == ["i"]
    assert names(Graph.of([k, i], ARM64).order("i")) == ["k", "i"]


def test_a_recipe_not_built_for_the_platform_may_take_others_that_are_not_either(tmp_path: Path) -> None:
    k = artifact_recipe(tmp_path, "k", OUT, platforms=ARM64_ONLY)
    i = artifact_recipe(tmp_path, "i", "dependencies:\n  - stage: k\n", platforms=ARM64_ONLY)
    assert Graph.of([k, i], AMD64).exported() == []


def test_a_dependency_platform_list_is_checked_like_a_recipe_one(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"'amd64' is not an OCI platform name; write 'linux/amd64'"):
        artifact_recipe(tmp_path, "i", "dependencies:\n  - stage: k\n    platforms: [amd64]\n")
    with pytest.raises(RecipeError, match=r"this dependency would be taken for no platform"):
        artifact_recipe(tmp_path, "j", "dependencies:\n  - stage: k\n    platforms: []\n")


def test_a_cycle_through_an_artifact_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"dependency cycle: (i -> k -> i|k -> i -> k)"):
        Graph.of([artifact_recipe(tmp_path, "k", "dependencies:\n  - stage: i\n" + OUT),
                  artifact_recipe(tmp_path, "i", "dependencies:\n  - artifact: k\n" + OUT.replace("k.bin", "i.bin"))])


def test_a_recipe_limited_to_other_platforms_is_not_exported(tmp_path: Path) -> None:
    graph = Graph.of([artifact_recipe(tmp_path, "k", OUT, platforms="platforms: [linux/arm64]\n")], AMD64)
    assert graph.exported() == []
