"""Carries out a plan: fetch and verify what the build takes, run BuildKit, install the outputs into out/
and record them (SHA256SUMS, manifest.json, the input signature). Below the tasks, above the backend
(BuildKit), the sources (downloads) and outputs (out/'s transaction), which do the I/O it asks for."""

from __future__ import annotations

import difflib
import json
import shlex
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from builder.build.ociimage import default_tag
from builder.core.errors import BuildError
from builder.core.locations import Locations
from builder.core.log import say
from builder.host import backend, hashindex, outputs
from builder.host.backend import BuildOutput, BuildRequest
from builder.resolve.plan import TOOLCHAIN_INPUT, Plan, Workspace


def dry_run(plan: Plan, workspace: Workspace) -> str:
    """The exact build command, with the rendered context written (sources left out) for a look."""
    settings = workspace.settings
    kit = workspace.services.buildkits.select(settings.backend, settings.builder)
    work = workspace.locations.dry_run / plan.slug
    shutil.rmtree(work, ignore_errors=True)
    plan.context.write(work / "context", host_files={})
    command = kit.shell_command(plan.request(work / "context", work / "export"))
    taken = [plan.graph[r].sources[i].destination for (r, i) in plan.context.fetches()]
    taken += [f"out/{a}" for a in plan.context.artifacts()]
    note = f"  # fetched and verified first: {', '.join(taken)}" if taken else ""
    return command + note


def _host_files(plan: Plan, workspace: Workspace, inputs: dict[str, str]) -> dict[str, Path]:
    """Context path -> verified host file, for every source and published artifact the build takes
    (``inputs``: the plan's inputs, where an artifact not in out/SHA256SUMS is "absent")."""
    project = workspace
    found: dict[str, Path] = {}
    for path, item in plan.context.files.items():  # sources first: a wrong digest is the first thing said
        if item.fetch is not None:
            recipe_name, index = item.fetch
            found[path] = project.cache.fetch(plan.graph[recipe_name], index)
    for path, item in plan.context.files.items():
        if item.artifact is not None:
            file = project.out_dir / item.artifact
            if inputs[path] == "absent" or not file.is_file():
                raise BuildError(f"{plan.label} takes out/{item.artifact}, which has not been built",
                                 hint=f"build {', '.join(plan.upstream)} first (doit does it for you)")
            found[path] = file
    return found


def _tmp_root(locations: Locations) -> Path:
    """The builds' scratch directory; what a killed run left there is removed when the next one takes the
    run lock (doitglue.RunLock)."""
    root = locations.tmp
    root.mkdir(parents=True, exist_ok=True)
    return root


def _build(plan: Plan, workspace: Workspace, inputs: dict[str, str], host_files: dict[str, Path],
           work: Path) -> Path:
    """Run the plan's BuildKit build in ``work``; the export directory, holding exactly the plan's outputs."""
    project = workspace
    settings = project.settings
    kit = workspace.services.buildkits.select(settings.backend, settings.builder)
    plan.context.write(work / "context", host_files)
    for path, item in plan.context.files.items():  # an artifact must be the bytes its digest names
        if item.artifact is not None and hashindex.sha256_file(work / "context" / path) != inputs[path]:
            raise BuildError(f"out/{item.artifact} does not match its sha256 in out/SHA256SUMS (changed since it "
                             f"was built)", hint=f"rebuild it: doit -a {' '.join(plan.upstream)}")
    export = work / "export"
    export.mkdir()
    log = project.locations.logs / f"{plan.slug}.log"
    say(f"    {plan.label}: building with {kit.kind}; log: {project.locations.shown(log)}")
    backend.build(kit, plan.request(work / "context", export), log_path=log, label=plan.label,
                  report_dir=project.locations.reports / plan.slug)
    if plan.recipe.image is not None:  # the exported tree becomes the OCI archive, the one output
        from builder.build import ociimage

        (export / IMAGE_DETAILS).write_text(json.dumps(ociimage.assemble(plan, workspace, inputs, export)))
        outputs.check_export(export, [*plan.outputs, IMAGE_DETAILS], label=plan.label)
        return export
    outputs.check_export(export, plan.outputs, label=plan.label)
    if settings.push:
        _push(plan, workspace, kit, work / "context")
    return export


def _push(plan: Plan, workspace: Workspace, kit: backend.BuildKit, context: Path) -> None:
    """PUSH=1: the recipe's output tree (what dependents build on) as an image, REGISTRY/USERNAME/NAME:TAG-ARCH,
    then the index NAME:TAG over every arch pushed under that tag, so PKG_NAME=…:TAG serves each platform.

    BuildKit exports the tree; the image is made here (builder.host.oci: the same bytes for the same tree) and pushed
    by builder.host.registry, every request within REGISTRY_TIMEOUT, so a failure names the registry and the cause."""
    from builder.core.platforms import PLATFORMS
    from builder.host import oci, registry
    from builder.resolve.render import stage_name

    project, settings = workspace, workspace.settings
    seconds, session = settings.registry_timeout, project.services.registries
    tag = (settings.tag or default_tag(project.root)) + (f"-{plan.flavor}" if plan.flavor else "")
    name = f"{settings.registry}/{settings.username}/{plan.recipe.name}"
    mine = registry.Reference.parse(f"{name}:{tag}-{plan.platform.arch}", "PUSH")
    log = project.locations.logs / f"{plan.slug}-push.log"
    say(f"    {plan.label}: pushing {mine}")
    tree = context.parent / "image-tree.tar"
    backend.build(kit, BuildRequest(context=context, target=stage_name(plan.recipe), platform=plan.platform.docker,
                                    output=BuildOutput("tar", dest=tree), no_cache=False),
                  log_path=log, label=plan.label)
    epoch = int(plan.variables["SOURCE_DATE_EPOCH"])
    layer, diff_id = oci.layer(tree, epoch)
    config = oci.config(plan.platform.arch, epoch, [diff_id], f"builder: recipe {plan.recipe.name}")
    manifest = oci.manifest(config, [layer])
    for blob in (layer, config):
        registry.push_blob(mine, blob.digest, blob.data, seconds=seconds, where="PUSH", session=session)
    registry.push_manifest(mine, manifest.media_type, manifest.data, seconds=seconds, where="PUSH", session=session)
    entries = []
    for platform in PLATFORMS.values():
        found = registry.descriptor(registry.Reference.parse(f"{name}:{tag}-{platform.arch}", "PUSH"),
                                    seconds=seconds, where="PUSH", session=session)
        if found is not None and found["mediaType"] in registry.IMAGE_TYPES:  # not pushed for that arch (yet)
            entries.append({**found, "platform": {"architecture": platform.arch, "os": "linux"}})
    index = oci.index(entries)
    registry.push_manifest(registry.Reference.parse(f"{name}:{tag}", "PUSH"), index.media_type, index.data,
                           seconds=seconds, where="PUSH", session=session)
    arches = ", ".join(str(e["platform"]["architecture"]) for e in entries)  # type: ignore[index]
    say(f"    {plan.label}: pushed {name}:{tag} ({arches}) {index.digest}")


IMAGE_DETAILS = ".image.json"  # what an image recipe's export says of its archive, for the manifest


def _work_dir(plan: Plan) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{plan.slug}-", dir=_tmp_root(plan.locations)))


def execute(plan: Plan, workspace: Workspace) -> dict[str, object]:
    """Build, install the outputs into out/ atomically, and return what doit stores as values."""
    project = workspace
    _check_image_platform(plan)
    outputs.check(project.out_dir, plan.outputs)  # out/ unusable or its checksum files damaged: say so first
    inputs = plan.inputs(project.identities)  # engine and toolchain checked before any work
    digest = plan.digest(inputs)
    project.services.buildkits.select(project.settings.backend, project.settings.builder)  # no BuildKit: said first
    host_files = _host_files(plan, workspace, inputs)  # sources fetched and verified before any scratch dir
    work = _work_dir(plan)
    try:
        export = _build(plan, workspace, inputs, host_files, work)
        digests = outputs.publish(project.out_dir, outputs.Change(
            add={name: export / name for name in plan.outputs},
            details={
                "task": plan.label,
                "platform": plan.platform.docker,
                "inputs_sha256": digest,
                "source_date_epoch": int(plan.variables["SOURCE_DATE_EPOCH"]),
                "toolchain": {k.removeprefix(TOOLCHAIN_INPUT + " "): v for k, v in inputs.items()
                              if k.startswith(TOOLCHAIN_INPUT + " ")},
                **_reproducibility(plan),
            },
            signatures={plan.slug: {"task": plan.label, "digest": digest, "inputs": inputs}},
            per_artifact=_per_artifact(plan, export),
        ), lock_dir=project.locations.state, hashes=project.hashes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = sum((project.out_dir / name).stat().st_size for name in digests)  # the export held these only
    say(f"    {plan.label}: exported {len(digests)} file(s), {size} bytes")
    for name, sha in digests.items():
        say(f"    {plan.label}: out/{name}  sha256:{sha[:16]}…")
    return {"digest": digest, "outputs": digests, "inputs": inputs}


def _check_image_platform(plan: Plan) -> None:
    """An image on IMAGER or TOOLCHAIN holds that build image's programs, which are the build machine's: for
    another architecture it is refused, before its build."""
    from builder.core.platforms import host_platform

    spec, host = plan.recipe.image, host_platform()
    if spec is not None and spec.base != "scratch" and plan.platform.arch != host.arch:
        raise BuildError(f"{plan.label}: an image on {spec.base} for {plan.platform.docker} would hold {host.arch} "
                         f"programs: {spec.base} is bootstrapped for the build machine only (not yet for "
                         f"{plan.platform.arch})", where=plan.recipe.where("image"),
                         hint=f"build it with PLATFORM={host.docker}")


def _reproducibility(plan: Plan) -> dict[str, object]:
    """Whether a rebuild gives the same bytes: not when a recipe it takes, by any edge, says why not."""
    reasons = [f"{r.name}: {r.unreproducible}" for r in plan.graph.order(plan.recipe.name) if r.unreproducible]
    return {"reproducible": False, "unreproducible": reasons} if reasons else {"reproducible": True}


def _per_artifact(plan: Plan, export: Path) -> dict[str, dict[str, object]]:
    """Manifest details of single artifacts: the modules a modules tar holds, with where each comes from."""
    from builder.build import kmodules

    found: dict[str, dict[str, object]] = {}
    if (export / IMAGE_DETAILS).is_file():  # an image recipe's archive: its manifest, config and layers
        (name,) = plan.outputs
        return {name: json.loads((export / IMAGE_DETAILS).read_text())}
    for name in plan.outputs:
        if name.endswith(".tar"):
            modules = kmodules.inventory(plan, export / name)
            if modules:
                found[name] = {"modules": modules}
    return found


def run_command(plan: Plan, workspace: Workspace, *, check: bool = False) -> list[str]:
    """Run a recipe command (``plan.command``) and write what it produces back into the project; with
    ``check``, write nothing and fail when a project file differs from it. Returns one line per file."""
    project = workspace
    targets = {name: _project_file(project.root, rel, plan) for name, rel in plan.writes.items()}
    interactive = plan.recipe.commands[plan.command or ""].interactive
    if interactive and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise BuildError(f"{plan.label} is interactive: run it in a terminal")
    inputs = plan.inputs(project.identities)
    host_files = _host_files(plan, workspace, inputs)
    work = _work_dir(plan)
    said = []
    try:
        made = _interactive(plan, workspace, inputs, host_files, work) if interactive else \
            _build(plan, workspace, inputs, host_files, work)
        for name, target in targets.items():
            rel = plan.writes[name]
            if not (made / name).exists():  # an interactive command the user left without saving
                said.append(f"{rel}: not saved, nothing written back ({plan.label})")
                continue
            new = (made / name).read_bytes()
            old = target.read_bytes() if target.is_file() else None
            if old == new:
                said.append(f"{rel}: unchanged ({plan.label})")
            elif check:
                raise BuildError(f"{rel} differs from what {plan.label} makes of it: {_first_changes(old, new)}",
                                 hint=f"write it back: doit {plan.task} PLATFORM={plan.platform.docker}")
            else:
                outputs.atomic_write(target, new)
                said.append(f"{rel}: written back by {plan.label} ({_first_changes(old, new)})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for line in said:
        say(f"    {line}")
    return said


def _interactive(plan: Plan, workspace: Workspace, inputs: dict[str, str], host_files: dict[str, Path],
                 work: Path) -> Path:
    """An interactive command: BuildKit builds the tree it starts from as an image in the engine, which runs
    the command's script in a container on this terminal (no network, the script and its environment
    mounted as in a build step); the files it ``writes`` that exist afterwards are copied out. The image
    is removed after. A user's session has no deadline; the build before it has BuildKit's."""
    import subprocess

    project = workspace
    kit = project.services.buildkits.select(project.settings.backend, project.settings.builder)
    context = work / "context"
    plan.context.write(context, host_files)
    ref = f"builder-command-{plan.slug}:latest"
    log = project.locations.logs / f"{plan.slug}.log"
    say(f"    {plan.label}: building what it starts from with {kit.kind}; log: {project.locations.shown(log)}")
    request = replace(plan.request(context, work / "unused"), output=BuildOutput("image", ref=ref))
    backend.build(kit, request, log_path=log, label=plan.label, report_dir=project.locations.reports / plan.slug)
    made = work / "written"
    made.mkdir()
    command, recipe = plan.recipe.commands[plan.command or ""], plan.recipe
    copies = "".join(f"if [ -e {shlex.quote(inside)} ]; then cp {shlex.quote(inside)} /.builder/out/{index}; fi; "
                     for index, inside in enumerate(command.writes))
    script = f"{shlex.quote(recipe.shell)} /.builder/step/{plan.command}.sh && {{ {copies}}}"
    steps = context / recipe.name / "commands" / (plan.command or "")
    mounts = [(steps, "/.builder/step", True), (context / recipe.name / "env", "/.builder/env", True),
              (context / "lib", "/.builder/lib", True), (made, "/.builder/out", False)]
    argv = [kit.docker, "run", "--rm", "-it", "--network=none"]
    for source, target, readonly in mounts:  # --mount, not -v: a ':' or ',' in the project's path is a path
        flags = {"readonly": "true"} if readonly else {}
        argv += ["--mount", backend.csv_option(type="bind", src=source, dst=target, **flags)]
    argv += [ref, "/bin/sh", "-c", script]
    try:
        done = subprocess.run(argv, check=False)
    finally:
        subprocess.run([kit.docker, "image", "rm", "-f", ref], capture_output=True, check=False, timeout=120)
    if done.returncode != 0:
        raise BuildError(f"{plan.label}: the command ended with exit status {done.returncode}; nothing written back")
    return made


def _project_file(root: Path, rel: str, plan: Plan) -> Path:
    """Where a command writes ``rel``: a file inside the project, never through a link out of it."""
    target = root / rel
    if not target.resolve().is_relative_to(root.resolve()):
        raise BuildError(f"{plan.label} writes {rel}, which resolves outside the project",
                         where=plan.recipe.where("commands", plan.command, "writes"))
    if target.is_dir():
        raise BuildError(f"{plan.label} writes {rel}, which is a directory",
                         where=plan.recipe.where("commands", plan.command, "writes"))
    return target


def _first_changes(old: bytes | None, new: bytes) -> str:
    """How many lines change, and the first few, as a person reads a diff."""
    if old is None:
        return "a new file"
    before = old.decode(errors="replace").splitlines()
    after = new.decode(errors="replace").splitlines()
    changed = [line for line in difflib.unified_diff(before, after, lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    first = "; ".join(changed[:4])
    return f"{len(changed)} line(s) change, first: {first}" if changed else "line endings or bytes change"
