"""A target on one platform rendered into a BuildKit build: a Dockerfile and a build context.

The context is held in memory with a digest per file, so the up-to-date check can hash the exact
build inputs without writing anything; it is written to disk only when a build runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import jinja2

from builder.core.errors import RecipeError
from builder.host.credentials import redact
from builder.model import files
from builder.model.recipe import Recipe, Secret
from builder.model.variables import build_environment
from builder.resolve.graph import Graph

LIB = "lib/builder.sh"


@dataclass(frozen=True)
class ContextFile:
    """One file of the build context: inline bytes, or a host file known by its sha256.

    Host files are a fetched source (``fetch`` = (recipe, index in its sources)) or a published artifact
    (``artifact`` = its name in out/, whose sha256 is known only when the upstream task has run).
    """

    digest: str
    origin: str  # what a user knows this file as: a project path, a URL, "out/NAME", "rendered"
    data: bytes | None = None
    fetch: tuple[str, int] | None = None
    artifact: str | None = None
    mode: int = 0o644


@dataclass
class BuildContext:
    target: str  # the Dockerfile stage to export: the target recipe's export stage
    dockerfile: str
    files: dict[str, ContextFile] = field(default_factory=dict)
    project_files: dict[str, str] = field(default_factory=dict)  # context path -> project path it holds
    patterns: dict[str, list[str]] = field(default_factory=dict)  # files: pattern -> the paths it matched
    secrets: dict[str, Path] = field(default_factory=dict)  # secret id -> the host file BuildKit mounts
    secret_digests: dict[str, str] = field(default_factory=dict)  # secret id -> its sha256 when rendered

    def add(self, path: str, data: bytes, origin: str, mode: int = 0o644) -> None:
        self.files[path] = ContextFile(hashlib.sha256(data).hexdigest(), origin, data=data, mode=mode)

    def inputs(self, artifact_digests: Mapping[str, str]) -> dict[str, str]:
        """Every input of the build by name -> sha256, the Dockerfile included.

        ``artifact_digests`` maps an out/ name to the sha256 it has now (absent: "absent")."""
        named = {"Dockerfile": hashlib.sha256(self.dockerfile.encode()).hexdigest()}
        named.update({secret_input(sid): digest for sid, digest in self.secret_digests.items()})
        for path, item in self.files.items():
            named[path] = artifact_digests.get(item.artifact, "absent") if item.artifact else item.digest
        return dict(sorted(named.items()))

    def fetches(self) -> list[tuple[str, int]]:
        """(recipe, source index) of every fetched source the context needs."""
        return [f.fetch for f in self.files.values() if f.fetch is not None]

    def artifacts(self) -> list[str]:
        """The out/ names of every published artifact the context needs."""
        return sorted({f.artifact for f in self.files.values() if f.artifact is not None})

    def write(self, directory: Path, host_files: Mapping[str, Path]) -> None:
        """Materialize the context. ``host_files`` maps a context path to the verified host file that
        fills it (sources, artifacts); paths absent from it are left out (a dry run)."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "Dockerfile").write_text(self.dockerfile)
        for rel, item in sorted(self.files.items()):
            dest = directory / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if item.data is not None:
                dest.write_bytes(item.data)
            elif rel in host_files and item.artifact is not None:
                # copied: a link (and the chmod below) would change the file in out/, its ctime at least, and
                # a changed ctime makes the next no-op read it again (builder.host.hashindex)
                shutil.copyfile(host_files[rel], dest)
            elif rel in host_files:
                try:
                    os.link(host_files[rel], dest)
                except OSError:
                    shutil.copyfile(host_files[rel], dest)
            else:
                continue
            os.chmod(dest, item.mode)


def stage_name(recipe: Recipe) -> str:
    """The stage dependents copy from: the recipe's finalized tree. Every other stage of the recipe is this
    name, '_' and what it is: recipe names have no '_', so recipe kernel's "r-kernel_build" can never be
    recipe kernel-build's "r-kernel-build"."""
    return "r-" + recipe.name


IMAGE_SPEC = "_image.json"  # an image recipe's config, in its context (no recipe name starts with _)


def export_stage_name(recipe: Recipe) -> str:
    """The stage exported to the host: only the recipe's ``outputs``."""
    return stage_name(recipe) + "_export"


def command_stage_name(recipe: Recipe, command: str) -> str:
    return f"{stage_name(recipe)}_command_{command}"


def _template() -> jinja2.Template:
    text = resources.files("builder").joinpath("templates/Dockerfile.j2").read_text()
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, autoescape=False)
    return env.from_string(text)


def render(
    graph: Graph,
    target: str,
    *,
    project_root: Path,
    variables_for: Mapping[str, Mapping[str, str]],
    command: str | None = None,
) -> BuildContext:
    """Render ``target`` and its stage closure. ``variables_for`` maps recipe name -> its own variables
    (each stage gets its own build environment: a dependency renders the same in every target).

    With ``command`` (one of the target's ``commands``), the context's target is that command's export
    stage instead: the build tree after the command's ``after`` step, the command run on it, and the files
    it ``writes``, exported as 0, 1, ... in their order. Without it the Dockerfile is the same as ever."""
    recipe = graph[target]
    context = BuildContext(target=export_stage_name(recipe), dockerfile="")
    context.add(LIB, resources.files("builder").joinpath("scripts/builder.sh").read_bytes(), "builder library")
    stages = [_stage(graph, r, context, project_root, variables_for[r.name],
                     command if r.name == target else None) for r in graph.closure(target)]
    if command is not None and not recipe.commands[command].interactive:
        context.target = command_stage_name(recipe, command) + "_export"
    if recipe.image is not None:  # what the image's config says is an input too (the Dockerfile does not hold it)
        spec = json.dumps(recipe.image.model_dump(mode="json"), sort_keys=True).encode()
        context.add(IMAGE_SPEC, spec, f"{recipe.path}: image")
    export = {"name": export_stage_name(recipe), "source": stage_name(recipe),
              "outputs": [f"/{name}" for name in recipe.outputs] if recipe.image is None else ["/"]}
    context.dockerfile = _template().render(stages=stages, export=export, lib=LIB)
    return context


def _check(kind: str, data: bytes, rel: str, declared: str) -> None:
    """Run the ``check:`` a files: entry declares on one matched file; its problem names the file and line."""
    try:
        files.CHECKS[kind](data)
    except files.CheckError as exc:
        raise RecipeError(exc.message, where=f"{rel}:{exc.line}" if exc.line else rel,
                          hint=f"check: {kind}, {declared}") from None


def _stage(
    graph: Graph,
    recipe: Recipe,
    context: BuildContext,
    project_root: Path,
    variables: Mapping[str, str],
    command: str | None = None,
) -> dict[str, object]:
    prefix = recipe.name
    copies: list[dict[str, str]] = []
    stages = dict(graph.stage_dependencies(recipe))
    artifacts = {index: taken for index, _, _, taken in graph.artifact_dependencies(recipe)}
    for index, dep in graph.dependencies(recipe):
        if dep.artifact is not None:
            folder = f"{prefix}/artifacts/{index}"
            for name in artifacts[index]:
                context.files[f"{folder}/{name}"] = ContextFile(digest="", origin=f"out/{name}", artifact=name)
            copies.append({"context": folder, "source": "", "from": "", "to": dep.to})
        else:
            source = stage_name(stages[index]) if dep.stage is not None else dep.target
            copies.append({"context": "", "source": source, "from": dep.from_, "to": dep.to})

    for index, src in enumerate(recipe.sources):
        context.files[f"{prefix}/sources/{src.destination}"] = ContextFile(
            digest=src.sha256, origin=redact(src.url), fetch=(recipe.name, index))

    has_files = False
    for index, spec in enumerate(recipe.files):
        where = recipe.where("files", index, "src")
        matches = files.match(project_root, spec.src)
        is_glob = files.is_glob(spec.src)
        if not matches and not is_glob:
            what = files.why_not_a_file(project_root / spec.src)
            raise RecipeError(f"files.{index}.src: {spec.src!r} {what}" if what else
                              f"files.{index}.src: no such file {spec.src!r} in the project", where=where)
        context.patterns[spec.src] = matches
        into_dir = spec.dest.endswith("/") or is_glob
        if not into_dir and len(matches) != 1:
            raise RecipeError(f"files.{index}: {spec.src!r} matches {len(matches)} files; end dest with '/'",
                              where=recipe.where("files", index))
        for rel in matches:
            outside = files.link_out(project_root, project_root / rel)  # a link may point anywhere
            if outside is not None:
                raise RecipeError(f"files.{index}: {rel!r} is a link out of the project (to {outside}); builds "
                                  "take project files only", where=where)
            try:
                data = files.read_project_file(project_root, project_root / rel, rel, limit=files.MAX_FILE_BYTES)
            except RecipeError as exc:
                raise RecipeError(f"files.{index}: {exc.where}: {exc.message}", where=where) from None
            if rel.endswith(".patch") and not data:  # patch(1) would apply it silently
                raise RecipeError(f"files.{index}: {rel!r} is an empty patch", where=where)
            if spec.check is not None:
                _check(spec.check, data, rel, recipe.where("files", index, "check"))
            dest = f"{spec.dest.rstrip('/')}/{rel.rsplit('/', 1)[-1]}" if into_dir else spec.dest
            if f"{prefix}/files/{dest}" in context.project_files:
                other = context.project_files[f"{prefix}/files/{dest}"]
                raise RecipeError(f"files.{index}: {rel!r} and {other!r} would both be /pkg/{dest}",
                                  where=recipe.where("files", index))
            context.add(f"{prefix}/files/{dest}", data, rel)
            context.project_files[f"{prefix}/files/{dest}"] = rel
            has_files = True

    env = {**build_environment(variables), **recipe.env}
    env_script = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
    context.add(f"{prefix}/env/env.sh", env_script.encode(), f"{recipe.where()} env")

    secrets = _secrets(recipe, context, project_root)
    runs = []
    ends: dict[str, int] = {}  # a named step -> how many RUNs there are up to its end
    number = 0
    for step_index, step in enumerate(recipe.steps):
        for phase, script in step.phases():
            name = f"{number:02d}-{phase}"
            number += 1
            runs.append(_run(context, recipe, f"{prefix}/steps/{name}", name, phase,
                             f"steps.{step_index}", script, recipe.where("steps", step_index, phase), secrets))
        if step.name:
            ends[step.name] = len(runs)

    segments: list[dict[str, object]] = [{"name": f"{stage_name(recipe)}_build", "runs": runs}]
    command_spec: dict[str, object] | None = None
    if command is not None:
        wanted = recipe.commands[command]
        split = ends[wanted.after]
        start = f"{stage_name(recipe)}_after_{wanted.after}"
        segments = [{"name": start, "runs": runs[:split]},
                    {"name": f"{stage_name(recipe)}_build", "runs": runs[split:]}]
        command_spec = {
            "name": command,
            "stage": command_stage_name(recipe, command),
            "start": start,
            "run": _run(context, recipe, f"{prefix}/commands/{command}", command, command, f"commands.{command}",
                        wanted.run, recipe.where("commands", command, "run")),
            "writes": list(wanted.writes),
            "interactive": wanted.interactive,
        }
        if wanted.interactive:  # BuildKit builds the tree it starts from; the engine runs it on a terminal
            context.target = start
    return {
        "name": stage_name(recipe),
        "recipe": recipe.name,
        "scratch": recipe.variant == "scratch",
        "base": variables["IMAGER" if recipe.variant == "imager" else "TOOLCHAIN"],
        "copies": copies,
        "has_sources": bool(recipe.sources),
        "has_files": has_files,
        "prefix": prefix,
        "segments": segments,
        "command": command_spec,
        "finalize": [{"from": f.from_, "to": f.to} for f in recipe.finalize],
    }


MAX_SECRET_BYTES = 1 << 20


def secret_input(secret_id: str) -> str:
    """The input name of a secret file (its sha256, never its bytes, is an input)."""
    return f"secret {secret_id}"


def _secrets(recipe: Recipe, context: BuildContext, project_root: Path) -> dict[str, str]:
    """The recipe's secrets that name a file: id -> the file's sha256 (the file itself is never read into
    the context; BuildKit mounts it). A file that is missing, not a regular file or absurdly large is an
    error naming the recipe's key."""
    found: dict[str, str] = {}
    for index, secret in enumerate(recipe.secrets):
        if not secret.file:
            continue
        where = recipe.where("secrets", index, "file")
        named = f"{secret.variable}={secret.file}" if secret.variable else f"secrets.{index}.file: {secret.file}"
        path = Path(secret.file).expanduser()
        path = path if path.is_absolute() else project_root / path
        try:
            info = path.stat()  # a link is followed (a Kubernetes secret mount is one): what it leads to is checked
            if not stat.S_ISREG(info.st_mode):
                raise RecipeError(f"{named} is not a regular file", where=where)
            if info.st_size > MAX_SECRET_BYTES:
                raise RecipeError(f"{named} is {info.st_size} bytes; a secret is a key, at most {MAX_SECRET_BYTES} "
                                  "bytes", where=where)
            data = path.read_bytes()
        except OSError as exc:
            raise RecipeError(f"{named}: cannot read it ({exc.strerror})", where=where) from None
        if secret.check == "private-key":
            _check_key(secret, named, data, project_root, where)
        digest = hashlib.sha256(data).hexdigest()
        if secret.id in context.secrets and context.secrets[secret.id] != path:
            raise RecipeError(f"secrets.{index}.id: {secret.id!r} names another file in another recipe",
                              where=recipe.where("secrets", index, "id"))
        context.secrets[secret.id] = path
        context.secret_digests[secret.id] = found[secret.id] = digest
    return found


def _check_key(secret: Secret, named: str, data: bytes, project_root: Path, where: str) -> None:
    """A ``check: private-key`` secret, on the host: a private key, and the certificate's when one is named."""
    from builder.model import keys  # cryptography, only when a plan is rendered with a key

    certificate = None
    if secret.certificate:
        certificate = files.read_project_file(project_root, project_root / secret.certificate, secret.certificate,
                                              limit=MAX_SECRET_BYTES)
    try:
        keys.check_pair(data, certificate, secret.certificate)
    except keys.KeyProblem as exc:
        raise RecipeError(f"{named}: {exc.message}", where=where) from None


def _run(context: BuildContext, recipe: Recipe, step_dir: str, name: str, phase: str, key: str, script: str,
         where: str, secrets: Mapping[str, str] | None = None) -> dict[str, str]:
    """One RUN: its script (the recipe's text after the environment and the library) in its own context
    directory, so each RUN mounts only its own script and editing a later step keeps earlier layers cached.
    A secret is mounted read-only at /run/secrets/ID; the script names its sha256 (BuildKit's cache key
    does not include a secret's content: this does, so a new key reruns the step)."""
    secrets = secrets or {}
    body = (
        "set -eu\n"
        "(set -o pipefail) 2>/dev/null && set -o pipefail\n"
        ". /.builder/env/env.sh\n"
        f". /.builder/{LIB}\n"
        "umask 022\n"
        "cd /build\n"
        + "".join(f"# secret {sid}: sha256 {digest}\n" for sid, digest in sorted(secrets.items()))
        + f"echo '==> {recipe.name}: {phase} ({key})'\n"
        f"{script.rstrip()}\n"
    )
    context.add(f"{step_dir}/{name}.sh", body.encode(), where)
    mounts = "".join(f" --mount=type=secret,id={sid},target=/run/secrets/{sid}" for sid in sorted(secrets))
    return {"dir": step_dir, "argv": json.dumps([recipe.shell, f"/.builder/step/{name}.sh"]), "mounts": mounts}
