"""The recipe schema (pkg.yaml-like) and its loader: jinja2 text -> YAML -> validated objects.

Parsing happens once; every later stage trusts these objects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import jinja2
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from builder.core.errors import RecipeError
from builder.core.platforms import PLATFORMS, Platform, by_any_name
from builder.model import files, yamlfile
from builder.model.variables import check_image_reference

RECIPE_FILE = "pkg.yaml"
PHASES = ("prepare", "build", "install", "test")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Set by the framework in every build step (variables.build_environment); a recipe may not override them.
PROTECTED_ENV = frozenset({
    "SOURCE_DATE_EPOCH", "KBUILD_BUILD_TIMESTAMP", "KBUILD_BUILD_USER", "KBUILD_BUILD_HOST",
    "KBUILD_BUILD_VERSION", "KCONFIG_NOTIMESTAMP", "LC_ALL", "LANG", "TZ",
})
# the OCI names the 'platforms' key accepts, exactly (no aliases: a recipe says what it means)
PLATFORM_NAMES = tuple(PLATFORMS)
HEX = {"sha256": re.compile(r"^[0-9a-f]{64}$"), "sha512": re.compile(r"^[0-9a-f]{128}$")}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _relative(value: str, what: str) -> str:
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or not value.strip():
        raise ValueError(f"{what} must be a relative path inside the build, not {value!r}")
    return value


def _absolute(value: str) -> str:
    if not value.startswith("/") or ".." in PurePosixPath(value).parts:
        raise ValueError(f"expected an absolute path without '..', not {value!r}")
    return value


def _env_name(key: str) -> str:
    if not ENV_NAME.match(key):
        raise ValueError(f"invalid environment variable name {key!r}")
    if key in PROTECTED_ENV:
        raise ValueError(f"{key} is set by the framework for reproducibility; set the variable "
                         "instead (recipes/vars.yaml or the command line)")
    return key


class Source(_Model):
    """A file fetched on the host, verified, and placed at ``destination`` in the build directory."""

    url: str
    destination: str
    sha256: str
    sha512: str

    @field_validator("destination")
    @classmethod
    def _dest(cls, v: str) -> str:
        return _relative(v, "destination")

    @field_validator("sha256", "sha512", mode="before")
    @classmethod
    def _text(cls, v: Any, info: Any) -> Any:
        if not isinstance(v, str):  # YAML reads 0000... as a number: its leading zeros are gone
            size = 64 if info.field_name == "sha256" else 128
            raise ValueError(f"expected {size} lowercase hex digits as a string (quote it), not {v!r}")
        return v

    @field_validator("sha256", "sha512")
    @classmethod
    def _digest(cls, v: str, info: Any) -> str:
        if not HEX[info.field_name].match(v):
            size = 64 if info.field_name == "sha256" else 128
            raise ValueError(f"expected {size} lowercase hex digits")
        return v

    @property
    def filename(self) -> str:
        return PurePosixPath(self.url.split("?", 1)[0]).name


def _check_platforms(v: list[str] | None, empty: str) -> list[str] | None:
    """A ``platforms`` list: exact OCI names, each once; ``empty`` says what an empty list would mean."""
    if v is None:
        return v
    if not v:
        raise ValueError(f"{empty}; leave 'platforms' out instead")
    for index, item in enumerate(v):
        meant = by_any_name(item)
        if meant is not None and item not in PLATFORM_NAMES:
            raise ValueError(f"{item!r} is not an OCI platform name; write {meant.docker!r}")
        if item not in PLATFORM_NAMES:
            raise ValueError(f"unknown platform {item!r}; expected one of {', '.join(PLATFORM_NAMES)}")
        if item in v[:index]:
            raise ValueError(f"{item!r} is listed twice")
    return v


class Dependency(_Model):
    """What a build stage starts with, besides the toolchain. Exactly one of:

    - ``stage``: another recipe's finalized stage, rendered into this build (what a module builds
      against: headers, a build tree); ``from`` picks a directory of it.
    - ``artifact``: another recipe's *published outputs* from out/ (``outputs`` picks some; default all),
      put into the build context by sha256. The upstream is never rebuilt to get them.
    - ``image``: a container image's filesystem.
    """

    stage: str | None = None
    artifact: str | None = None
    image: str | None = None
    outputs: list[str] | None = None
    from_: str = Field("/", alias="from")
    to: str = "/"
    platforms: list[str] | None = None  # taken only when building for these ("this module only on arm64")

    @field_validator("image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        return v if v is None else check_image_reference(v)

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, v: list[str] | None) -> list[str] | None:
        return _check_platforms(v, "this dependency would be taken for no platform")

    def taken_for(self, platform: Platform | None) -> bool:
        """Whether a build for ``platform`` takes this dependency (None = not one platform: every one)."""
        return self.platforms is None or platform is None or platform.docker in self.platforms

    @model_validator(mode="after")
    def _one_kind(self) -> Dependency:
        if sum(kind is not None for kind in (self.stage, self.artifact, self.image)) != 1:
            raise ValueError("a dependency names exactly one of 'stage', 'artifact' or 'image'")
        if self.outputs is not None and self.artifact is None:
            raise ValueError("'outputs' picks files of an 'artifact' dependency only")
        if self.artifact is not None and self.from_ != "/":
            raise ValueError("an 'artifact' dependency has no 'from'; pick files with 'outputs'")
        _absolute(self.from_)
        _absolute(self.to)
        return self

    @property
    def target(self) -> str:
        """The recipe or image this dependency names."""
        return self.stage or self.artifact or self.image or ""


class Step(_Model):
    """Shell scripts run in order: prepare, build, install, test. A named step is a point a command can
    start from (``commands.NAME.after``)."""

    name: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    prepare: list[str] = []
    build: list[str] = []
    install: list[str] = []
    test: list[str] = []

    @field_validator(*PHASES, mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    def phases(self) -> list[tuple[str, str]]:
        return [(phase, script) for phase in PHASES for script in getattr(self, phase)]


class Secret(_Model):
    """A host file a recipe's build steps read at /run/secrets/ID (a BuildKit secret mount): its bytes
    never enter the build context, a layer, the cache or out/. ``file`` is a path (relative: to the project),
    usually a variable (MODULE_SIGNING_KEY); empty: no secret, the steps see no file. Its sha256 is part
    of every step that mounts it, so a new key reruns those steps (and only those)."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    file: str = ""
    # checked on the host before any build: private-key (PEM or DER, unencrypted), and with ``certificate``
    # (a project file) the private key of that certificate
    check: Literal["private-key"] | None = None
    certificate: str = ""
    variable: str = ""  # the variable the user gives the file as (MODULE_SIGNING_KEY), for messages

    @model_validator(mode="after")
    def _certificate_needs_check(self) -> Secret:
        if self.certificate and self.check != "private-key":
            raise ValueError("'certificate' is what a 'check: private-key' key must belong to; add that check")
        return self


class Command(_Model):
    """A task that is not a build: a script run on the recipe's build tree as it is after step ``after``,
    whose results are written back into the project (``writes``: path in the build -> project path).
    `doit RECIPE-NAME` (or ``task``) runs it; it is never up to date. (Kernel config write-back: olddefconfig.)"""

    description: str = ""
    task: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9._-]*$")  # the doit task (RECIPE-NAME)
    # run in a container on a terminal (make menuconfig), not in BuildKit: a ``writes`` file the script
    # leaves absent (the user did not save) is not written back
    interactive: bool = False
    after: str
    run: str
    writes: dict[str, str] = {}

    @field_validator("writes")
    @classmethod
    def _writes(cls, v: dict[str, str]) -> dict[str, str]:
        for inside, project in v.items():
            if not inside.startswith("/"):
                raise ValueError(f"{inside!r}: a path in the build is absolute")
            path = PurePosixPath(project)
            if path.is_absolute() or ".." in path.parts or not project:
                raise ValueError(f"{project!r}: a command writes project files, by a relative path without '..'")
        return v


class Module(_Model):
    """An out-of-tree kernel module (the recipe kind of ``module:``): built with ``make -C <kernel build tree>
    M=<source>`` against the ``kernel`` recipe's build stage (its config, Module.symvers and compiler) and
    installed under /lib/modules/RELEASE/extra/RECIPE (so the manifest can say which recipe built it), which
    the recipe's output holds. The recipe gives the sources and unpacks them; the framework adds the stage
    dependency, the build, install and test steps."""

    kernel: str = "kernel"
    source: str
    version: str = ""

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        return _relative(v, "source")


# The steps a module: recipe gets. {source} is in /build; the kernel stage's build tree is /usr/src/linux.
MODULE_BUILD = """\
release=$(cat /usr/src/linux/include/config/kernel.release)
make -C /usr/src/linux M=/build/{source} modules >/tmp/module-build.log 2>&1 ||
  {{ tail -n 40 /tmp/module-build.log
    builder_error "module {name} does not build against kernel $release ({arch}); its compiler output is above"; }}
"""
MODULE_INSTALL = """\
make -s -C /usr/src/linux M=/build/{source} INSTALL_MOD_PATH=/rootfs INSTALL_MOD_DIR=extra/{name} INSTALL_MOD_STRIP=1 \\
  DEPMOD=true modules_install
"""
MODULE_TEST = """\
release=$(cat /usr/src/linux/include/config/kernel.release)
found=$(find /rootfs/lib/modules/$release/extra/{name} -name '*.ko' | wc -l)
[ "$found" -gt 0 ] || builder_error "module {name} built no .ko for kernel $release"
"""


def _module_recipe(data: dict[str, Any], spec: Module, variables: Mapping[str, str]) -> dict[str, Any]:
    """A ``module:`` recipe with what the kind adds: the kernel's build stage, the environment the kernel
    builds with, and the build / install / test steps and finalize of an out-of-tree module."""
    fields = {"source": spec.source, "name": data.get("name", "?"), "arch": variables.get("ARCH", "?")}
    data = dict(data)
    data["dependencies"] = [*data.get("dependencies", []),
                            {"stage": spec.kernel, "from": "/usr/src/linux/", "to": "/usr/src/linux/"}]
    env = {"ARCH": variables.get("KERNEL_ARCH", ""), "CROSS_COMPILE": variables.get("CROSS_COMPILE", "")}
    data["env"] = {**env, **(data.get("env") or {})}
    data["steps"] = [*data.get("steps", []), {"build": MODULE_BUILD.format(**fields),
                                              "install": MODULE_INSTALL.format(**fields),
                                              "test": MODULE_TEST.format(**fields)}]
    data["finalize"] = [*data.get("finalize", []), {"from": "/rootfs/lib/modules/", "to": "/lib/modules/"}]
    data.setdefault("shell", "/bin/bash")
    return data


class Finalize(_Model):
    """Copy ``from`` (in the build stage) to ``to`` (in the recipe's output)."""

    from_: str = Field(alias="from")
    to: str = "/"

    @field_validator("from_", "to")
    @classmethod
    def _abs(cls, v: str) -> str:
        return _absolute(v)


IMAGE_BASES = ("IMAGER", "TOOLCHAIN", "scratch")


class ImageSpec(_Model):
    """This recipe's output is one OCI image, written to out/ as an OCI archive (its one output, NAME.tar):
    the build images' canonical rootfs as the first layer (``base``: IMAGER or TOOLCHAIN; none for scratch),
    then the recipe's finalized tree as the second. Every date in it is SOURCE_DATE_EPOCH, which the image's
    environment carries too; ``name`` is the reference the archive tags it with (docker load)."""

    base: Literal["IMAGER", "TOOLCHAIN", "scratch"] = "scratch"
    name: str | None = None
    entrypoint: list[str] = []
    cmd: list[str] = []
    env: dict[Annotated[str, AfterValidator(_env_name)], str] = {}
    workdir: str = "/"

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, v: str) -> str:
        return _absolute(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is None:
            return v
        check_image_reference(v)
        if "@" in v or ":" not in v.rsplit("/", 1)[-1]:
            raise ValueError(f"{v!r}: expected NAME:TAG, the name docker load tags the image with (no digest)")
        return v

    @field_validator("entrypoint", "cmd")
    @classmethod
    def _words(cls, v: list[str]) -> list[str]:
        for word in v:
            if "\0" in word:
                raise ValueError(f"{word!r} holds a NUL, which no process argument can")
        return v

    @field_validator("env")
    @classmethod
    def _values(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if "\0" in value:
                raise ValueError(f"{key}: the value holds a NUL, which no environment variable can")
        return v


class FileSpec(_Model):
    """Project files (a glob relative to the project root) given to the build under /pkg. ``check`` names a
    host-side check every matched file must pass before any build (files.CHECKS: e.g. kconfig)."""

    src: str
    dest: str
    check: str | None = None

    @field_validator("check")
    @classmethod
    def _check(cls, v: str | None) -> str | None:
        if v is not None and v not in files.CHECKS:
            raise ValueError(f"unknown check {v!r}; expected one of {', '.join(sorted(files.CHECKS))}")
        return v

    @field_validator("src")
    @classmethod
    def _src(cls, v: str) -> str:
        return _relative(v, "src")

    @field_validator("dest")
    @classmethod
    def _dest(cls, v: str) -> str:
        return _relative(v, "dest")


class Recipe(_Model):
    """One recipe, rendered for one platform and validated."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str = ""
    variant: Literal["toolchain", "imager", "scratch"] = "toolchain"  # FROM TOOLCHAIN, IMAGER or nothing
    shell: str = "/bin/sh"
    platforms: list[str] | None = None
    dependencies: list[Dependency] = []
    sources: list[Source] = []
    files: list[FileSpec] = []
    env: dict[Annotated[str, AfterValidator(_env_name)], str] = {}
    steps: list[Step] = []
    finalize: list[Finalize] = []
    outputs: list[str] = []
    flavors: str | None = None
    module: Module | None = None
    commands: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")], Command] = {}
    secrets: list[Secret] = []
    unreproducible: str = ""  # why this recipe's tree differs from build to build (the manifest says it)
    image: ImageSpec | None = None

    _path: Path = PrivateAttr()
    _lines: dict[Any, int] = PrivateAttr(default_factory=dict)

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for key, value in v.items():
                if isinstance(value, (list, dict)):
                    kind = "a list" if isinstance(value, list) else "a mapping"
                    raise ValueError(f"{key}: expected a string or number, not {kind}")
            return {k: (str(x).lower() if isinstance(x, bool) else str(x)) if x is not None else x
                    for k, x in v.items()}
        return v

    @field_validator("sources")
    @classmethod
    def _one_source_per_destination(cls, v: list[Source]) -> list[Source]:
        seen: dict[str, int] = {}
        for index, source in enumerate(v):
            if source.destination in seen:
                raise ValueError(f"sources.{index} and sources.{seen[source.destination]} both go to "
                                 f"{source.destination!r}")
            seen[source.destination] = index
        return v

    @field_validator("outputs")
    @classmethod
    def _outputs(cls, v: list[str]) -> list[str]:
        for name in v:
            if "/" in name or name.startswith(".") or not name:
                raise ValueError(f"an output is a plain file name in out/, not {name!r}")
        return v

    @field_validator("flavors")
    @classmethod
    def _flavors(cls, v: str | None) -> str | None:
        if v is None:
            return v
        _relative(v, "flavors")
        name = PurePosixPath(v).name
        if name.count("*") != 1 or "*" in str(PurePosixPath(v).parent) or any(c in v for c in "?[]"):
            raise ValueError(f"expected a project path whose file name has one '*' standing for the flavor name "
                             f"(kernel-configs/flavors/*.config), not {v!r}")
        return v

    def flavor_names(self, root: Path) -> list[str]:
        """The flavors this recipe has: what the '*' of ``flavors`` matches under the project ``root``."""
        if not self.flavors:
            return []
        pattern = PurePosixPath(self.flavors)
        prefix, _, suffix = pattern.name.partition("*")
        found = (root / pattern.parent).glob(pattern.name) if (root / pattern.parent).is_dir() else []
        return sorted(p.name[len(prefix):len(p.name) - len(suffix)] for p in found
                      if p.is_file() and len(p.name) > len(prefix) + len(suffix))

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, v: list[str] | None) -> list[str] | None:
        return _check_platforms(v, "an empty list would build this recipe for no platform")

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.variant == "scratch" and self.steps:
            raise ValueError("variant 'scratch' has no shell, so it cannot have steps")
        if self.outputs and not self.finalize:
            raise ValueError("a recipe with outputs needs 'finalize' to say where they come from")
        if self.image is not None and (len(self.outputs) != 1 or not self.outputs[0].endswith(".tar")):
            raise ValueError("an image recipe has one output, the OCI archive it writes (outputs: [NAME.tar]), "
                             f"not {self.outputs}")
        if self.image is not None and not self.finalize:
            raise ValueError("an image recipe needs 'finalize' to say what its tree (the image's layer) holds")
        names = [step.name for step in self.steps if step.name]
        for name, command in self.commands.items():
            if command.after not in names:
                known = ", ".join(names) or "none: give a step a name"
                raise ValueError(f"commands.{name}.after: no step named {command.after!r} (named steps: {known})")
        return self

    @property
    def path(self) -> Path:
        return self._path

    def builds_for(self, platform: Platform) -> bool:
        """Whether this recipe is built for ``platform``; every platform when its ``platforms`` does not limit it."""
        return self.platforms is None or platform.docker in self.platforms

    def where(self, *key: Any) -> str:
        """``file:line`` of a key path such as ('sources', 0, 'sha256')."""
        line = yamlfile.line_of(self._lines, tuple(key))
        return f"{self._path}:{line}" if line else str(self._path)


PREBUILT_ROOT = "/prebuilt/"


def prebuilt_recipe(recipe: Recipe, ref: str, word: str) -> Recipe:
    """``recipe`` taken prebuilt: its output tree is the image ``ref`` (what PUSH=1 pushed of it), checked to
    hold the recipe's outputs, so every dependent takes the image instead of a build."""
    check = "".join(f'[ -e {PREBUILT_ROOT}{name} ] || builder_error "{word}={ref} has no /{name}: it is not an '
                    f'image of recipe {recipe.name} (doit {recipe.name} PUSH=1 makes one)"\n'
                    for name in recipe.outputs)
    stand_in = Recipe.model_validate({
        "name": recipe.name,
        "description": f"{recipe.name}, prebuilt: {ref} ({word})",
        "platforms": recipe.platforms,
        "dependencies": [{"image": ref, "to": PREBUILT_ROOT}],
        "steps": [{"test": check or "true"}],
        "finalize": [{"from": PREBUILT_ROOT, "to": "/"}],
        "outputs": list(recipe.outputs),
    })
    stand_in._path = recipe._path
    return stand_in


def _template_env() -> jinja2.Environment:
    return jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              autoescape=False)


_MULTILINE_TAG = re.compile(r"\{%.*?%\}|\{#.*?#\}", re.S)


def _keep_lines(text: str) -> str:
    """A tag or comment spanning lines renders to nothing, so every YAML line after it would be reported
    that many lines too high: each is followed by an expression printing the newlines it swallowed, on
    its own last line, so jinja2's own line numbers stay those of the file too."""
    def keep(match: re.Match[str]) -> str:
        swallowed = match.group(0).count("\n")
        return match.group(0) + (f'{{{{ "\\n" * {swallowed} }}}}' if swallowed else "")

    return _MULTILINE_TAG.sub(keep, text)


def render_template(text: str, variables: Mapping[str, str], filename: str) -> str:
    """Render recipe text with jinja2; undefined variables are errors naming the line. Line numbers in
    the output are those of the file, multi-line tags included."""
    try:
        return _template_env().from_string(_keep_lines(text)).render(**variables)
    except jinja2.TemplateSyntaxError as exc:
        raise RecipeError(f"template error: {exc.message}", where=f"{filename}:{exc.lineno}") from None
    except jinja2.UndefinedError as exc:
        raise RecipeError(f"template error: {exc.message}", where=_template_where(exc, filename),
                          hint="define it in recipes/vars.yaml or on the command line (NAME=value)") from None
    except jinja2.TemplateError as exc:
        raise RecipeError(f"template error: {exc.message}", where=_template_where(exc, filename)) from None
    except TypeError as exc:
        if "no loader" in str(exc):  # {% include %}, {% import %}, {% extends %}: a recipe is one file
            raise RecipeError("template error: {% include %}, {% import %} and {% extends %} are not supported "
                              "in recipes; share values with vars.yaml", where=_template_where(exc, filename)) from None
        raise RecipeError(f"template error: {exc}", where=_template_where(exc, filename)) from None
    except (ArithmeticError, ValueError, LookupError, AttributeError) as exc:  # {{ 1 // 0 }}, {{ x[9] }}, ...
        raise RecipeError(f"template error: {type(exc).__name__}: {exc}",
                          where=_template_where(exc, filename)) from None


def _template_where(exc: BaseException, filename: str) -> str:
    line = _template_line(exc)
    return f"{filename}:{line}" if line else filename


def template_names(path: Path) -> set[str]:
    """The variables a recipe's template refers to ({} when it cannot be parsed: loading says why)."""
    from jinja2 import meta

    try:
        return set(meta.find_undeclared_variables(_template_env().parse(path.read_text(encoding="utf-8"))))
    except (OSError, UnicodeDecodeError, jinja2.TemplateError):
        return set()


def _template_line(exc: BaseException) -> int | None:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def load_recipe(path: Path, variables: Mapping[str, str], display: str | None = None, *,
                root: Path | None = None) -> Recipe:
    """Load ``path`` rendered with ``variables`` (``root``: the project it must stay inside). Every problem
    is a RecipeError with file:line."""
    name = display or str(path)
    text = yamlfile.read_text(path, name, root)
    rendered = render_template(text, variables, name)
    data, lines = yamlfile.load(rendered, name)
    if not isinstance(data, dict):
        raise RecipeError("a recipe must be a YAML mapping", where=f"{name}:1")
    if isinstance(data.get("module"), dict):
        try:
            spec = Module.model_validate(data["module"])
        except ValidationError as exc:
            raise explain(exc, lines, name, within=("module",)) from None
        data = _module_recipe(data, spec, variables)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise explain(exc, lines, name) from None
    recipe._path = Path(name)
    recipe._lines = lines
    return recipe


def explain(exc: ValidationError, lines: dict[Any, int], filename: str,
            models: Mapping[tuple[Any, ...], type[BaseModel]] | None = None,
            within: tuple[str, ...] = ()) -> RecipeError:
    """The first validation error, as one line naming the file, line and key (``within``: the key path of
    the part validated on its own; ``models``: key path -> the model there, for the keys it allows; default
    a recipe's)."""
    errors = exc.errors()
    # a misspelled key shows up as both "missing" and "extra": name the misspelling
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = within + tuple(_yaml_key(part) for part in err["loc"] if part != "[key]")  # [key]: pydantic's dict key mark
    line = yamlfile.line_of(lines, loc)
    key = ".".join(str(part) for part in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        parent = models.get(tuple(loc[:-1])) if models is not None else _model_at(loc[:-1])
        allowed = ", ".join(info.alias or name for name, info in parent.model_fields.items()) if parent else ""
        message = f"unknown key {key!r}" + (f"; expected one of: {allowed}" if allowed else "")
    elif err["type"] == "missing":
        message = f"missing required key {key!r}"
    else:
        text = err["msg"].removeprefix("Value error, ")
        message = f"{key}: {text}" if loc else text  # a whole-model check names its own keys
    return RecipeError(message, where=f"{filename}:{line}" if line else filename)


def _yaml_key(part: Any) -> Any:
    return "from" if part == "from_" else part


_CHILDREN: dict[str, type[_Model]] = {
    "dependencies": Dependency, "sources": Source, "steps": Step, "finalize": Finalize, "files": FileSpec,
}
_SECTIONS: dict[str, type[_Model]] = {"module": Module}  # a mapping of its own, not a list of them


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    if not loc:
        return Recipe
    if isinstance(loc[0], str) and loc[0] in _CHILDREN and len(loc) == 2:
        return _CHILDREN[loc[0]]
    if len(loc) == 1 and loc[0] in _SECTIONS:
        return _SECTIONS[loc[0]]
    return None


def find_recipe_files(recipes_root: Path, *, display_root: Path | None = None) -> list[Path]:
    """Every pkg.yaml under ``recipes_root``, in a stable order. One that is a link going nowhere (dangling,
    or a loop) or not a regular file (a directory, a fifo, which reading would block on) is an error: it
    would otherwise vanish from the build without a word. Errors name it relative to ``display_root``."""
    found = []
    project = display_root or recipes_root.parent
    for path in sorted(recipes_root.rglob("*")):
        where = str(path.relative_to(display_root)) if display_root else str(path)
        if path.is_symlink() and path.is_dir():  # rglob does not descend into it: its recipes would vanish
            outside = files.link_out(project, path)
            if outside is not None:
                raise RecipeError(f"a link out of the project (to {outside}); builder reads project files only",
                                  where=where)
            if any(path.rglob(RECIPE_FILE)):
                raise RecipeError(f"a link to a directory with recipes ({RECIPE_FILE}); builder does not follow "
                                  "directory links in recipes/", where=where, hint="move the recipes here instead")
        if path.name != RECIPE_FILE:
            continue
        outside = files.link_out(project, path)
        if outside is not None:
            raise RecipeError(f"a link out of the project (to {outside}); builder reads project files only",
                              where=where)
        if not path.is_file():
            if path.is_symlink() and not path.exists():
                raise RecipeError("a link that leads to no file (dangling, or a loop)", where=where)
            raise RecipeError("not a regular file (a recipe is a YAML text file)", where=where)
        found.append(path)
    return found

