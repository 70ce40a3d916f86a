"""The build plan of one target on one platform: pure and cheap.

A plan renders the build (Dockerfile + context, in memory), names every input with its digest, and
describes the BuildKit request. It fetches nothing, builds nothing and writes nothing: `why`, `--dry-run`,
`doit list` and the up-to-date check use it alone. The executor (executor.py) carries a plan out.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

from builder.core.locations import Locations
from builder.core.platforms import Platform
from builder.host.backend import BuildOutput, BuildRequest
from builder.host.hashindex import HashIndex
from builder.host.outputs import inputs_digest
from builder.host.services import Services
from builder.host.sources import SourceCache
from builder.model.recipe import Recipe
from builder.model.settings import Settings
from builder.resolve.graph import Graph
from builder.resolve.identity import Identities
from builder.resolve.render import BuildContext, render


class Project(Protocol):
    """What a plan and those who carry it out take from its project (project.Project is one): so that this
    module does not import the project, which makes the plans."""

    root: Path
    settings: Settings
    services: Services

    @property
    def locations(self) -> Locations: ...

    @property
    def out_dir(self) -> Path: ...

    @property
    def state_dir(self) -> Path: ...

    @property
    def identities(self) -> Identities: ...

    @property
    def cache(self) -> SourceCache: ...

    @property
    def hashes(self) -> HashIndex: ...

    def graph(self, platform: Platform) -> Graph: ...

    def recipe_variables(self, recipe: Recipe, platform: Platform) -> dict[str, str]: ...

    def prebuilt(self, platform: Platform) -> dict[str, tuple[str, str]]: ...

    def plan(self, name: str, platform: Platform) -> Plan: ...

TOOLCHAIN_INPUT = "toolchain"
BUILD_IMAGES = ("TOOLCHAIN", "IMAGER")  # the images this project bootstraps (toolchain.py), by variable
IMAGE_INPUT = "image"


@dataclass
class Plan:
    """Everything needed to build ``recipe`` for ``platform`` and to tell whether it is up to date."""

    project: Project
    platform: Platform
    recipe: Recipe
    command: str | None = None  # one of the recipe's commands: run it instead of building the recipe

    @property
    def task(self) -> str:
        """The doit task's base name: the recipe, or the command's (recipe-command unless it names one)."""
        if not self.command:
            return self.recipe.name
        return self.recipe.commands[self.command].task or f"{self.recipe.name}-{self.command}"

    @cached_property
    def flavor(self) -> str:
        """The flavor this build is (FLAVOR=debug): when asked for and the recipe or one it takes, by any
        edge, has flavors; "" otherwise. A flavored build is another task with other outputs."""
        asked = self.project.settings.flavor
        if not asked or self.command:
            return ""
        return asked if self.graph.flavored(self.recipe.name) else ""

    @property
    def subtask(self) -> str:
        """The doit subtask name: the arch, and the flavor when there is one (amd64, amd64-debug)."""
        return f"{self.platform.arch}-{self.flavor}" if self.flavor else self.platform.arch

    @property
    def label(self) -> str:
        """The doit task name: recipe:arch (recipe:arch-flavor, recipe-command:arch)."""
        return f"{self.task}:{self.subtask}"

    @property
    def slug(self) -> str:
        """The label as a file name: recipe-arch."""
        return f"{self.task}-{self.subtask}"

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
            command=self.command,
        )

    @property
    def outputs(self) -> list[str]:
        """What the export holds: the recipe's outputs; for a command, what it writes, named 0, 1, ..."""
        if self.command:
            return [str(index) for index in range(len(self.recipe.commands[self.command].writes))]
        return list(self.recipe.outputs)

    @property
    def writes(self) -> dict[str, str]:
        """For a command: export name -> the project file it is written back to."""
        if not self.command:
            return {}
        return {str(index): rel for index, rel in enumerate(self.recipe.commands[self.command].writes.values())}

    @property
    def targets(self) -> list[Path]:
        return [self.project.out_dir / name for name in self.outputs]

    @property
    def upstream(self) -> list[str]:
        """Labels of the tasks whose published outputs this build takes (they run first)."""
        return [self.project.plan(name, self.platform).label for name in self.graph.upstream_tasks(self.recipe.name)]

    @property
    def images(self) -> dict[str, str]:
        """Every image the build starts from -> where it is named (the toolchain, image dependencies)."""
        found: dict[str, str] = {}
        for recipe in self.graph.closure(self.recipe.name):
            if recipe.variant in ("toolchain", "imager"):
                variable = recipe.variant.upper()
                found.setdefault(self.project.recipe_variables(recipe, self.platform)[variable], variable)
            prebuilt = self.project.prebuilt(self.platform).get(recipe.name)
            for index, dep in self.graph.dependencies(recipe):
                if dep.image is not None:
                    where = prebuilt[1] if prebuilt else recipe.where("dependencies", index, "image")
                    found.setdefault(dep.image, where)
        return dict(sorted(found.items()))

    def image_inputs(self) -> dict[str, tuple[str, str, str]]:
        """Input name -> (image ref, where it is named, platform) for every image the build starts from."""
        platform = self.platform.docker
        return {f"{TOOLCHAIN_INPUT if where in BUILD_IMAGES else IMAGE_INPUT} {ref}": (ref, where, platform)
                for ref, where in self.images.items()}

    def inputs(self, identities: Identities) -> dict[str, str]:
        """Every input by name -> digest: the rendered context (published artifacts by their sha256 in
        out/ now) and the portable identity of every image the build starts from."""
        named = self.context.inputs(identities.artifacts())
        for name, (ref, where, platform) in self.image_inputs().items():
            named[name] = identities.image(ref, where=where, platform=platform)
        return dict(sorted(named.items()))

    @staticmethod
    def digest(inputs: dict[str, str]) -> str:
        return inputs_digest(inputs)

    def origin(self, input_name: str) -> str:
        """What a user knows an input as (a project file, a URL, out/NAME), for "why did this rebuild"."""
        item = self.context.files.get(input_name)
        return item.origin if item else input_name

    def request(self, context_dir: Path, export_dir: Path) -> BuildRequest:
        """The BuildKit request: the export stage, for this platform, to a local directory."""
        settings = self.project.settings
        return BuildRequest(
            context=context_dir,
            target=self.context.target,
            platform=self.platform.docker,
            output=BuildOutput("local", dest=export_dir),
            no_cache=settings.no_cache,
            cache_from=settings.cache_from,
            cache_to=settings.cache_to,
            secrets=tuple(sorted(self.context.secrets.items())),
        )
