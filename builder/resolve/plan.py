"""The build plan of one target on one platform: a frozen value, pure and cheap.

The project makes each plan from its resolved graph with every choice taken (Project.plan). A plan renders
the build (Dockerfile + context, in memory), names every input with its digest, and describes the BuildKit
request. It fetches nothing, builds nothing, writes nothing and holds no project: what does I/O (the
engine's identities, the source cache, the stat record) comes beside it as a Workspace, to the up-to-date
check (schedule/tasks.py), to `why`, and to the executor (build/executor.py), which carries a plan out.
"""

from __future__ import annotations

from collections.abc import Mapping
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


class Workspace(Protocol):
    """What carrying a plan out asks of its invocation (project.Project is one): its places and settings,
    and the parts that do I/O, which a plan never touches itself: the engine, BuildKit and registries
    (services), the identities of images and artifacts, the source cache and the stat record."""

    root: Path
    settings: Settings
    services: Services

    @property
    def locations(self) -> Locations: ...

    @property
    def out_dir(self) -> Path: ...

    @property
    def identities(self) -> Identities: ...

    @property
    def cache(self) -> SourceCache: ...

    @property
    def hashes(self) -> HashIndex: ...


TOOLCHAIN_INPUT = "toolchain"
BUILD_IMAGES = ("TOOLCHAIN", "IMAGER")  # the images this project bootstraps (toolchain.py), by variable
IMAGE_INPUT = "image"
IMAGE_TREE = ".image-tree.tar"  # an image recipe's export: its tree, which becomes the archive


@dataclass(frozen=True, eq=False)
class Plan:
    """Everything needed to build ``recipe`` for ``platform`` and to tell whether it is up to date: a value,
    made by the project from its resolved graph (Project.plan) with every choice already taken (flavor,
    variables, prebuilt packages, the tasks it waits for, the images it starts from). It holds no project
    and asks nothing of the world: inputs() takes the identities, the executor the workspace. Its context
    is rendered when first asked, from its own fields."""

    platform: Platform
    recipe: Recipe
    graph: Graph
    variables_for: Mapping[str, Mapping[str, str]]  # recipe name -> its variables, for the recipe's closure
    flavor: str  # the flavor this build is (FLAVOR=debug) when it or a recipe it takes has flavors, else ""
    upstream: tuple[str, ...]  # labels of the tasks whose published outputs this build takes (they run first)
    images: Mapping[str, str]  # every image the build starts from -> where it is named (TOOLCHAIN, PKG_KERNEL, ...)
    root: Path
    settings: Settings
    locations: Locations
    command: str | None = None  # one of the recipe's commands: run it instead of building the recipe

    @property
    def task(self) -> str:
        """The doit task's base name: the recipe, or the command's (recipe-command unless it names one)."""
        if not self.command:
            return self.recipe.name
        return self.recipe.commands[self.command].task or f"{self.recipe.name}-{self.command}"

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
    def variables(self) -> dict[str, str]:
        return dict(self.variables_for[self.recipe.name])

    @property
    def out_dir(self) -> Path:
        return self.locations.out

    @cached_property
    def context(self) -> BuildContext:
        """The rendered build (Dockerfile, scripts, files with their digests): made once, from the fields."""
        return render(self.graph, self.recipe.name, project_root=self.root,
                      variables_for={name: dict(v) for name, v in self.variables_for.items()}, command=self.command)

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
        return [self.out_dir / name for name in self.outputs]

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
        """The BuildKit request: the export stage, for this platform, to a local directory (an image recipe's:
        to a tar in it, the layer its archive is made from)."""
        settings = self.settings
        output = BuildOutput("local", dest=export_dir) if self.recipe.image is None else \
            BuildOutput("tar", dest=export_dir / IMAGE_TREE)  # the image's layer: kept whole, owners and modes
        return BuildRequest(
            context=context_dir,
            target=self.context.target,
            platform=self.platform.docker,
            output=output,
            no_cache=settings.no_cache,
            cache_from=settings.cache_from,
            cache_to=settings.cache_to,
            secrets=tuple(sorted(self.context.secrets.items())),
        )
