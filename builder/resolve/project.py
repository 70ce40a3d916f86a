"""A project: its recipes parsed once per platform with their layered variables, its caches and places."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from builder.core.errors import BuildError
from builder.core.locations import Locations
from builder.core.platforms import PLATFORMS, Platform, host_platform
from builder.host.hashindex import HashIndex
from builder.host.services import Services
from builder.host.sources import SourceCache, default_cache_dir
from builder.model.aptsources import AptSources
from builder.model.profile import PROFILES_DIR, Profile, load_profiles
from builder.model.recipe import Recipe, find_recipe_files, load_recipe, prebuilt_recipe, template_names
from builder.model.settings import SETTINGS, Settings
from builder.model.variables import DEFAULTS, VARS_FILE, load_vars_file, resolve
from builder.resolve.graph import Graph
from builder.resolve.identity import Identities
from builder.resolve.plan import Plan


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
    settings: Settings
    host: Platform = field(default_factory=host_platform)
    services: Services = field(default_factory=Services)  # the invocation's engine, BuildKit and registries
    _graphs: dict[Platform, Graph] = field(default_factory=dict, repr=False)
    _variables: dict[tuple[Path, Platform], dict[str, str]] = field(default_factory=dict, repr=False)
    _plans: dict[tuple[str, Platform], Plan] = field(default_factory=dict, repr=False)
    _prebuilt: dict[Platform, dict[str, tuple[str, str]]] = field(default_factory=dict, repr=False)
    # The session's (doitglue.Session gives its own): one identity per image and one stat record per
    # invocation, whether its tasks came from the memo or the full plan.
    given_identities: Identities | None = field(default=None, repr=False)
    given_hashes: HashIndex | None = field(default=None, repr=False)

    @classmethod
    def load(cls, root: Path, words: dict[str, str] | None = None, *, host: Platform | None = None,
             services: Services | None = None, apt: AptSources | None = None) -> Project:
        """A project with settings parsed from ``NAME=value`` words (``apt``: the apt sources to use instead
        of this machine's)."""
        host = host or host_platform()
        return cls(root, Settings.parse(words or {}, host=host, apt=apt), host, services or Services())

    @property
    def recipes_root(self) -> Path:
        return self.root / "recipes"

    @cached_property
    def locations(self) -> Locations:
        """out/ (OUT_DIR), the build state (STATE_DIR) and doit's database."""
        return Locations.of(self.root, self.settings.out_dir, self.settings.state_dir)

    @property
    def out_dir(self) -> Path:
        return self.locations.out

    @property
    def state_dir(self) -> Path:
        """Build state that is not an artifact: logs, locks, temporary contexts. Never inside out/."""
        return self.locations.state

    @cached_property
    def cache(self) -> SourceCache:
        return SourceCache(default_cache_dir(), self.settings.source_mirror, self.settings.fetch_limits)

    @cached_property
    def identities(self) -> Identities:
        return self.given_identities or Identities(self.out_dir, self.services,
                                                   registry_seconds=self.settings.registry_timeout)

    @cached_property
    def hashes(self) -> HashIndex:
        """The sha256 of out/'s files, read again only when their stat changed (builder.host.hashindex)."""
        return self.given_hashes or HashIndex(self.state_dir)

    def variables(self, recipe_dir: Path, platform: Platform) -> dict[str, str]:
        key = (recipe_dir, platform)
        if key not in self._variables:
            self._variables[key] = resolve(recipes_root=self.recipes_root, recipe_dir=recipe_dir,
                                           cli=self.settings.variables, platform=platform, host=self.host,
                                           apt=self.settings.apt)
        return self._variables[key]

    def graph(self, platform: Platform) -> Graph:
        if platform not in self._graphs:
            recipes = []
            for path in find_recipe_files(self.recipes_root, display_root=self.root):
                display = str(path.relative_to(self.root))
                recipes.append(load_recipe(path, self.variables(path.parent, platform), display, root=self.root))
            chosen = self._choose_prebuilt(recipes)
            self._prebuilt[platform] = chosen
            recipes = [prebuilt_recipe(r, *chosen[r.name]) if r.name in chosen else r for r in recipes]
            recipes += self._image_recipes(platform, {r.name: r.outputs for r in recipes})
            self._graphs[platform] = Graph.of(recipes, platform)
            self._check_flavor(self._graphs[platform])
        return self._graphs[platform]

    @cached_property
    def profiles(self) -> list[Profile]:
        """profiles/*.yaml, validated once; PROFILE=name must name one of them."""
        profiles = load_profiles(self.root)
        known = {p.name for p in profiles}
        for name in self.settings.profiles:
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                raise BuildError(f"no profile {name!r} (profiles/{name}.yaml)", where="PROFILE",
                                 hint=f"did you mean {close[0]}?" if close else
                                 f"profiles: {', '.join(sorted(known)) or 'none'}")
        return profiles

    def _image_recipes(self, platform: Platform, outputs: dict[str, list[str]]) -> list[Recipe]:
        """A recipe per profile built for ``platform`` (image-NAME: images.py); ``outputs``: each project
        recipe's outputs, where the images find the kernel and initramfs they take."""
        from builder.resolve.images import (
            IMAGER_RECIPE,
            INITRAMFS_RECIPE,
            INSTALLER_RECIPE,
            KERNEL_RECIPE,
            image_recipe,
            imager_recipe,
            installer_profiles,
        )

        variables = self.variables(self.recipes_root, platform)
        made = [image_recipe(p, platform, variables, self.settings.meta, outputs) for p in self.profiles
                if platform.arch in p.arch]
        boots = all(any(n.startswith(prefix) for n in outputs.get(name, []))
                    for name, prefix in ((KERNEL_RECIPE, "vmlinuz-"), (INITRAMFS_RECIPE, "initramfs-")))
        settings = self.settings
        for name, profiles in ((IMAGER_RECIPE, self.profiles), (INSTALLER_RECIPE, installer_profiles(self.profiles))):
            if profiles and boots and name not in outputs:  # the imager and installer images, given a kernel
                reference = (f"{settings.registry}/" if settings.registry else "") + \
                    f"{settings.username}/{name}:{settings.tag or 'latest'}"
                made.append(imager_recipe(profiles, platform, variables, outputs, reference, name, self.host))
        return made

    def prebuilt(self, platform: Platform) -> dict[str, tuple[str, str]]:
        """Recipes taken prebuilt from a registry (PKG_NAME=ref, PKGS_PREFIX + PKGS): name -> (ref, word)."""
        self.graph(platform)
        return self._prebuilt[platform]

    def _choose_prebuilt(self, recipes: list[Recipe]) -> dict[str, tuple[str, str]]:
        settings = self.settings
        chosen: dict[str, tuple[str, str]] = {}
        if settings.packages_prefix and settings.packages_tag:  # every recipe another one takes and PUSH=1 pushes
            taken = {dep.stage or dep.artifact for r in recipes for dep in r.dependencies if dep.stage or dep.artifact}
            pushed = {r.name for r in recipes if r.outputs}  # a task of its own: a recipe without one is never pushed
            for name in sorted(n for n in taken if n and n in pushed):
                chosen[name] = (f"{settings.packages_prefix}/{name}:{settings.packages_tag}", "PKGS_PREFIX")
        by_word = {r.name.upper().replace("-", "_").replace(".", "_"): r.name for r in recipes}
        for word, ref in sorted(settings.packages.items()):
            if word not in by_word:
                close = difflib.get_close_matches(word, sorted(by_word), n=1)
                raise BuildError(f"no recipe {word.lower()!r} to take prebuilt from {ref}", where=f"PKG_{word}",
                                 hint=f"did you mean PKG_{close[0]}?" if close else "PKG_NAME names a recipe")
            chosen[by_word[word]] = (ref, f"PKG_{word}")
        return chosen

    def _check_flavor(self, graph: Graph) -> None:
        """FLAVOR=name must be a flavor some recipe has; a flavored build must not write the default's files."""
        flavor = self.settings.flavor
        if not flavor:
            return
        having = [r for r in graph.recipes.values() if r.flavors]
        if not having:
            raise BuildError(f"no recipe has flavors, so FLAVOR={flavor} would change nothing", where="FLAVOR",
                             hint="a recipe declares them with flavors: PATH/*.config")
        for recipe in having:
            names = recipe.flavor_names(self.root)
            if flavor not in names:
                raise BuildError(f"unknown flavor {flavor!r}: {recipe.flavors} has "
                                 f"{', '.join(names) or 'none'}", where="FLAVOR",
                                 hint=f"declared at {recipe.where('flavors')}")
        for recipe in graph.recipes.values():
            if not recipe.outputs or not graph.flavored(recipe.name):
                continue
            same = [name for name in recipe.outputs if f"-{flavor}" not in name]
            if same:
                raise BuildError(f"outputs: {same[0]} would be the default build's file too, but with FLAVOR={flavor} "
                                 f"{recipe.name} is another build (it or a recipe it takes has flavors)",
                                 where=recipe.where("outputs", recipe.outputs.index(same[0])),
                                 hint="name it with {{ FLAVOR_SUFFIX }}")

    def check_words(self) -> None:
        """Every command-line variable must be one something uses: a misspelled ``PLATFROM=`` is an error
        naming the closest known name, not a silent build for the host."""
        if not self.settings.variables:
            return
        known = set(SETTINGS) | set(DEFAULTS) | {"SOURCE_DATE_EPOCH", "DEBIAN_MIRROR"}
        known |= set(self.host.variables(self.host))
        for path in find_recipe_files(self.recipes_root, display_root=self.root):
            known |= template_names(path)
        for path in self.recipes_root.rglob(VARS_FILE):
            known |= set(load_vars_file(path, path.relative_to(self.root).as_posix(), root=self.root))
        from_platform = self.host.variables(self.host)
        for name in sorted(self.settings.variables):
            if name in from_platform:  # the platform layer would silently win over it
                value = self.settings.variables[name]
                chosen = [p.docker for p in PLATFORMS.values() if p.variables(self.host)[name] == value]
                raise BuildError(f"{name} is set from the platform, so {name}={value} would be ignored",
                                 where="command line", hint="choose the platform instead: PLATFORM="
                                 + (chosen[0] if chosen else ",".join(PLATFORMS)))
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f"did you mean {close[0]}?" if close else "no recipe, vars.yaml or setting uses it"
                raise BuildError(f"unknown variable {name}={self.settings.variables[name]}", where="command line",
                                 hint=hint)

    def recipe_variables(self, recipe: Recipe, platform: Platform) -> dict[str, str]:
        if recipe.path.parts[0] == PROFILES_DIR:  # a profile's build: the project's variables, no recipe directory's
            return self.variables(self.recipes_root, platform)
        return self.variables((self.root / recipe.path).parent, platform)

    def plan(self, name: str, platform: Platform) -> Plan:
        """One plan per target and platform, so its context is rendered once however often it is asked."""
        key = (name, platform)
        if key not in self._plans:
            self._plans[key] = self._plan(self.graph(platform)[name], platform)
        return self._plans[key]

    def _plan(self, recipe: Recipe, platform: Platform, command: str | None = None) -> Plan:
        """The plan of ``recipe`` (or of its ``command``) for ``platform``, every choice taken here."""
        graph = self.graph(platform)
        closure = graph.closure(recipe.name)
        asked = self.settings.flavor
        flavor = asked if asked and not command and graph.flavored(recipe.name) else ""
        images: dict[str, str] = {}
        prebuilt = self.prebuilt(platform)
        spec = recipe.image
        if spec is not None and spec.base != "scratch":  # the image's first layer is that build image's rootfs
            images.setdefault(self.recipe_variables(recipe, platform)[spec.base], spec.base)
        for member in closure:
            if member.variant in ("toolchain", "imager"):
                variable = member.variant.upper()
                images.setdefault(self.recipe_variables(member, platform)[variable], variable)
            chosen = prebuilt.get(member.name)
            for index, dep in graph.dependencies(member):
                if dep.image is not None:
                    images.setdefault(dep.image, chosen[1] if chosen else member.where("dependencies", index, "image"))
        return Plan(
            platform=platform,
            recipe=recipe,
            graph=graph,
            variables_for={member.name: self.recipe_variables(member, platform) for member in closure},
            flavor=flavor,
            upstream=tuple(self.plan(name, platform).label for name in graph.upstream_tasks(recipe.name)),
            images=dict(sorted(images.items())),
            root=self.root,
            settings=self.settings,
            locations=self.locations,
            command=command,
        )

    def command_plans(self) -> list[Plan]:
        """A plan per command of every recipe and requested platform (tasks that are not builds)."""
        result = []
        for platform in self.settings.platforms:
            for recipe in sorted(self.graph(platform).recipes.values(), key=lambda r: r.name):
                if recipe.builds_for(platform):
                    result += [self.command_plan(recipe.name, command, platform) for command in recipe.commands]
        return result

    def command_plan(self, name: str, command: str, platform: Platform) -> Plan:
        key = (f"{name} {command}", platform)
        if key not in self._plans:
            recipe = self.graph(platform)[name]
            if command not in recipe.commands:
                known = ", ".join(sorted(recipe.commands)) or "none"
                raise BuildError(f"recipe {name} has no command {command!r} (its commands: {known})")
            self._plans[key] = self._plan(recipe, platform, command)
        return self._plans[key]

    def plans(self, targets: tuple[str, ...] = ()) -> list[Plan]:
        """A plan per requested target (default: every exported recipe) and platform, in platform order."""
        result = []
        for platform in self.settings.platforms:
            graph = self.graph(platform)
            names = targets or tuple(r.name for r in graph.exported())
            for name in names:
                recipe = graph[name]
                if recipe.outputs and recipe.builds_for(platform):
                    result.append(self.plan(name, platform))
        return result
