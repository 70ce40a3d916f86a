"""A project (recipes + variables + caches) and the build plan of one target on one platform."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from builder import backend, engine, outputs
from builder.errors import BuildError
from builder.graph import Graph
from builder.log import say
from builder.platforms import Platform, host_platform
from builder.recipe import Recipe, find_recipe_files, load_recipe
from builder.render import BuildContext, render
from builder.sources import SourceCache, default_cache_dir
from builder.variables import build_environment, resolve

TOOLCHAIN_INPUT = "toolchain image"


def find_root(start: Path | None = None) -> Path:
    """The project root: the nearest directory upwards holding recipes/ and dodo.py."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "recipes").is_dir() and (candidate / "dodo.py").is_file():
            return candidate
    raise BuildError(f"no builder project here ({here}): expected a directory with recipes/ and dodo.py")


@dataclass
class Project:
    root: Path
    cli_vars: Mapping[str, str] = field(default_factory=dict)
    host: Platform = field(default_factory=host_platform)
    _graphs: dict[Platform, Graph] = field(default_factory=dict, repr=False)
    _variables: dict[tuple[Path, Platform], dict[str, str]] = field(default_factory=dict, repr=False)

    @property
    def recipes_root(self) -> Path:
        return self.root / "recipes"

    @property
    def out_dir(self) -> Path:
        return self.root / "out"

    @property
    def state_dir(self) -> Path:
        return self.root / ".builder"

    @cached_property
    def cache(self) -> SourceCache:
        mirror = self.cli_vars.get("SOURCE_MIRROR")
        return SourceCache(default_cache_dir(), Path(mirror) if mirror else None)

    def variables(self, recipe_dir: Path, platform: Platform) -> dict[str, str]:
        key = (recipe_dir, platform)
        if key not in self._variables:
            self._variables[key] = resolve(recipes_root=self.recipes_root, recipe_dir=recipe_dir,
                                           cli=self.cli_vars, platform=platform, host=self.host)
        return self._variables[key]

    def graph(self, platform: Platform) -> Graph:
        if platform not in self._graphs:
            recipes = []
            for path in find_recipe_files(self.recipes_root):
                display = str(path.relative_to(self.root))
                recipes.append(load_recipe(path, self.variables(path.parent, platform), display))
            self._graphs[platform] = Graph.of(recipes)
        return self._graphs[platform]

    def recipe_variables(self, recipe: Recipe, platform: Platform) -> dict[str, str]:
        return self.variables((self.root / recipe.path).parent, platform)

    def plan(self, name: str, platform: Platform) -> Plan:
        return Plan(self, platform, self.graph(platform)[name])


@dataclass
class Plan:
    """Everything needed to build ``recipe`` for ``platform`` and to tell whether it is up to date."""

    project: Project
    platform: Platform
    recipe: Recipe

    @property
    def label(self) -> str:
        return f"{self.recipe.name}:{self.platform.arch}"

    @property
    def graph(self) -> Graph:
        return self.project.graph(self.platform)

    @cached_property
    def variables(self) -> dict[str, str]:
        return self.project.recipe_variables(self.recipe, self.platform)

    @cached_property
    def context(self) -> BuildContext:
        closure = self.graph.closure(self.recipe.name)
        return render(
            self.graph,
            self.recipe.name,
            project_root=self.project.root,
            variables_for={r.name: self.project.recipe_variables(r, self.platform) for r in closure},
            build_env=build_environment(self.variables),
        )

    @property
    def outputs(self) -> list[str]:
        return list(self.recipe.outputs)

    @property
    def targets(self) -> list[Path]:
        return [self.project.out_dir / name for name in self.outputs]

    @property
    def toolchains(self) -> list[str]:
        refs = {self.project.recipe_variables(r, self.platform)["TOOLCHAIN"]
                for r in self.graph.closure(self.recipe.name) if r.variant == "toolchain"}
        return sorted(refs)

    @cached_property
    def inputs(self) -> dict[str, str]:
        """Every input by name -> digest: the rendered build context plus the toolchain image ID."""
        named = dict(self.context.inputs())
        for ref in self.toolchains:
            named[f"{TOOLCHAIN_INPUT} {ref}"] = engine.require_image(ref)
        for recipe in self.graph.closure(self.recipe.name):
            for index, dep in enumerate(recipe.dependencies):
                if dep.image is not None:
                    named[f"image {dep.image}"] = engine.require_image(
                        dep.image, variable=f"{recipe.where('dependencies', index, 'image')}")
        return named

    @property
    def digest(self) -> str:
        text = "".join(f"{k}\0{v}\n" for k, v in sorted(self.inputs.items()))
        return hashlib.sha256(text.encode()).hexdigest()

    def origin(self, input_name: str) -> str:
        """What a user knows an input as (a project file, a URL), for "why did this rebuild"."""
        item = self.context.files.get(input_name)
        return item.origin if item else input_name

    @property
    def no_cache(self) -> bool:
        return self.variables.get("NO_CACHE", "0") not in ("", "0", "false", "no")

    def dry_run(self) -> str:
        """The exact build command, with the rendered context written (sources left out) for a look."""
        kit = backend.detect()
        work = self.project.state_dir / "dry-run" / f"{self.recipe.name}-{self.platform.arch}"
        shutil.rmtree(work, ignore_errors=True)
        self.context.write(work / "context", sources={})
        command = kit.shell_command(work / "context", self.context.target, work / "export", no_cache=self.no_cache)
        missing = [f"{r}:{i}" for (r, i) in self.context.source_keys()]
        note = f"  # sources fetched and verified first: {', '.join(missing)}" if missing else ""
        return command + note

    def build(self) -> dict[str, object]:
        """Build, install the outputs into out/ atomically, and return what doit stores as values."""
        inputs, digest = self.inputs, self.digest  # engine and toolchain checked before any work
        kit = backend.detect()
        closure = self.graph.closure(self.recipe.name)
        sources = {(r.name, i): self.project.cache.fetch(r, i) for r in closure for i in range(len(r.sources))}
        tmp_root = self.project.state_dir / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{self.recipe.name}-{self.platform.arch}-", dir=tmp_root))
        try:
            self.context.write(work / "context", sources)
            (work / "export").mkdir()
            log = self.project.state_dir / "logs" / f"{self.recipe.name}-{self.platform.arch}.log"
            say(f"    {self.label}: building ({kit.kind}; log: {log.relative_to(self.project.root)})")
            backend.build(kit, work / "context", self.context.target, work / "export", log_path=log,
                          label=self.label, no_cache=self.no_cache)
            digests = outputs.install(work / "export", self.outputs, self.project.out_dir, label=self.label)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        outputs.record(self.project.out_dir, digests, {
            "task": self.label,
            "platform": self.platform.docker,
            "inputs_sha256": digest,
            "source_date_epoch": int(self.variables["SOURCE_DATE_EPOCH"]),
            "toolchain": {k.removeprefix(TOOLCHAIN_INPUT + " "): v for k, v in inputs.items()
                          if k.startswith(TOOLCHAIN_INPUT)},
        })
        for name, sha in digests.items():
            say(f"    {self.label}: out/{name}  sha256:{sha[:16]}…")
        return {"digest": digest, "outputs": digests, "inputs": inputs}
