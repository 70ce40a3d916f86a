"""The `builder` command: build, doctor, graph, validate, toolchain, boot, why."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from builder.core import run
from builder.core.errors import BuildError

if TYPE_CHECKING:
    pass

F = TypeVar("F", bound=Callable[..., Any])


def friendly(func: F) -> F:
    """BuildErrors become one line on stderr and exit status 1 (or the error's own ``exit_status``: 2 for a
    damaged doit database, as doit says it); tracebacks are for bugs."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BuildError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(getattr(exc, "exit_status", 1))

    return wrapper  # type: ignore[return-value]


class Interruptible(click.Group):
    """The `builder` command group: Ctrl-C (SIGINT) and SIGTERM end any command - while it parses, loads
    recipes or waits for a build - with one line and status 130 or 143, after every ``finally`` has run (the
    build client stopped, temporary directories removed). click alone would say "Aborted!" with status 1,
    and SIGTERM would orphan the build client."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        previous = run.handle_signals()
        kwargs["standalone_mode"] = False  # usage errors come here, to be said in one line like every other
        try:
            status = super().main(*args, **kwargs)
        except run.Interrupted as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(exc.exit_status)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "builder"
            click.echo(f"error: {command}: {exc.format_message()} (see '{command} --help')", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        finally:
            run.restore_signals(previous)  # when run inside another program (tests), give its handlers back
        sys.exit(status if isinstance(status, int) else 0)


def _words(pairs: tuple[str, ...], platform_spec: str | None = None, **settings: str | None) -> dict[str, str]:
    """``-v NAME=value`` words, with what options set (--platform; a setting given no value is left out)."""
    from builder.model.settings import pairs as parse_pairs

    words = parse_pairs(pairs)
    if platform_spec is not None:
        words["PLATFORM"] = platform_spec
    words.update({name: value for name, value in settings.items() if value})
    return words


def _project(pairs: tuple[str, ...], platform_spec: str | None = None, **settings: str | None) -> Any:
    """The project around the current directory, with settings from options and ``-v NAME=value`` words."""
    from builder.resolve.project import Project, find_root

    project = Project.load(find_root(), _words(pairs, platform_spec, **settings))
    project.check_words()
    return project


@click.group(cls=Interruptible)
@click.version_option(package_name="builder")
def main() -> None:
    """Build Linux kernels, initramfs and boot images from recipes, in BuildKit."""


@main.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--platform", "platform_spec", default=None, help="e.g. linux/amd64,linux/arm64 (default: host)")
@click.option("--backend", default=None, type=click.Choice(["auto", "buildx", "engine"]), help="how to reach BuildKit")
@click.option("--builder", "builder_name", default=None, help="a named buildx builder")
@click.option("--dry-run", is_flag=True, help="print the exact build commands without running them")
@click.option("--no-cache", is_flag=True, help="build without the BuildKit cache")
@click.option("-v", "--var", "pairs", multiple=True, metavar="NAME=value", help="a template variable or setting")
@friendly
def build(targets: tuple[str, ...], platform_spec: str | None, backend: str | None, builder_name: str | None,
          dry_run: bool, no_cache: bool, pairs: tuple[str, ...]) -> None:
    """Build TARGETS (recipe names, e.g. kernel initramfs) through doit, so tracking is shared with `doit`:
    the same checks, memo, messages and exit statuses (0 built, 1 a task failed, 2 the command line or the
    project is wrong)."""
    from builder.cli.doitglue import USAGE_STATUS, Session
    from builder.resolve.project import find_root

    try:
        words = _words(pairs, platform_spec, BACKEND=backend, BUILDER=builder_name,
                       DRY_RUN="1" if dry_run else None, NO_CACHE="1" if no_cache else None)
        session = Session(find_root(), words, task_words=targets, tool="builder build")
    except BuildError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(USAGE_STATUS)
    try:
        status = session.run()
    finally:
        session.lock.release()  # at exit anyway; here too when called inside another program (tests)
    sys.exit(status)


def _run_command(recipe: str, command: str, platform_spec: str | None, check: bool, pairs: tuple[str, ...]) -> None:
    from builder.build.executor import run_command
    from builder.cli.doitglue import RunLock

    project = _project(pairs, platform_spec)
    RunLock(project.locations).acquire()
    plans = [project.command_plan(recipe, command, platform) for platform in project.settings.platforms]
    for plan in plans:
        run_command(plan, project, check=check)


@main.command("run")
@click.argument("recipe")
@click.argument("command")
@click.option("--platform", "platform_spec", default=None, help="e.g. linux/amd64,linux/arm64 (default: host)")
@click.option("--check", is_flag=True, help="write nothing; fail when a project file differs from the result")
@click.option("-v", "--var", "pairs", multiple=True, metavar="NAME=value", help="a template variable or setting")
@friendly
def run_recipe_command(recipe: str, command: str, platform_spec: str | None, check: bool,
                       pairs: tuple[str, ...]) -> None:
    """Run COMMAND of RECIPE (its `commands:`), writing its results back into the project; the same as
    `doit RECIPE-COMMAND`."""
    _run_command(recipe, command, platform_spec, check, pairs)


@main.command("kernel-config")
@click.argument("action", type=click.Choice(["olddefconfig", "menuconfig", "check"]))
@click.option("--platform", "platform_spec", default=None, help="e.g. linux/amd64,linux/arm64 (default: host)")
@click.option("-v", "--var", "pairs", multiple=True, metavar="NAME=value", help="a template variable or setting")
@friendly
def kernel_config(action: str, platform_spec: str | None, pairs: tuple[str, ...]) -> None:
    """olddefconfig: normalize kernel-configs/config-ARCH (make olddefconfig on the patched source) and write
    it back. menuconfig: make menuconfig on it, in this terminal; written back when saved. check: fail,
    naming the file and the first differing lines, when one is not normalized."""
    command = "olddefconfig" if action == "check" else action
    _run_command("kernel-build", command, platform_spec, action == "check", pairs)


@main.command()
@click.option("-v", "--var", "pairs", multiple=True, metavar="NAME=value")
@click.option("--platform", "platform_spec", default=None)
@friendly
def validate(pairs: tuple[str, ...], platform_spec: str | None) -> None:
    """Parse and check every recipe for every platform (or the given ones)."""
    from builder.core.platforms import PLATFORMS

    project = _project(pairs, platform_spec or ",".join(PLATFORMS))
    for platform in project.settings.platforms:
        graph = project.graph(platform)
        for recipe in graph.exported():
            _ = project.plan(recipe.name, platform).context  # rendering checks files and globs too
        click.echo(f"{platform.docker}: {len(graph.recipes)} recipes OK ({', '.join(sorted(graph.recipes))})")


@main.command()
@click.option("--platform", "platform_spec", default=None)
@click.option("--dot", is_flag=True, help="Graphviz output")
@click.option("-v", "--var", "pairs", multiple=True, metavar="NAME=value")
@friendly
def graph(platform_spec: str | None, dot: bool, pairs: tuple[str, ...]) -> None:
    """Show the recipe dependency graph."""
    project = _project(pairs, platform_spec)
    g = project.graph(project.settings.platforms[0])
    if dot:
        click.echo(g.dot())
        return
    for name in sorted(g.recipes):
        recipe = g.recipes[name]
        deps = [d.stage or (f"artifact {d.artifact}" if d.artifact else f"image {d.image}")
                for d in recipe.dependencies]
        outs = ", ".join(f"out/{o}" for o in recipe.outputs)
        click.echo(f"{name}" + (f" <- {', '.join(deps)}" if deps else "") + (f"  => {outs}" if outs else ""))


@main.command()
@friendly
def doctor() -> None:
    """Check the machine: engine, BuildKit, toolchain image, QEMU - each with its fix."""
    from builder.host import engine
    from builder.host.engine import EngineError
    from builder.host.services import Services
    from builder.model.aptsources import AptSources
    from builder.model.variables import DEFAULTS

    problems = 0
    services = Services()

    def report(ok: bool, what: str, fix: str) -> None:
        nonlocal problems
        problems += not ok
        click.echo(f"[{'ok' if ok else 'FAIL'}] {what}" + ("" if ok else f"\n       fix: {fix}"))

    # Each check has its own deadline (engine.answer_seconds()); an engine that timed out once is not asked
    # again, so a stuck engine costs one deadline, and each check still says what it found.
    try:
        report(True, f"Docker engine: {services.engine.server_version()} at {services.engine.host}", "")
    except BuildError as exc:
        report(False, f"Docker engine: {exc.message}", exc.hint or engine.engine_hint())
    try:
        kit = services.buildkits.select()
        report(True, f"BuildKit (BACKEND=auto): {kit.kind} via {kit.docker}", "")
    except EngineError as exc:
        report(False, f"BuildKit: {exc.message}", exc.hint or engine.engine_hint())
    except BuildError as exc:
        report(False, f"BuildKit: {exc.message}", "./setup.sh installs docker-buildx (and docker.io)")
    for name in ("buildx", "engine"):  # what BACKEND=... can choose here; one of them is enough
        try:
            chosen = services.buildkits.select(name)
            click.echo(f"[ok] BACKEND={name}: {chosen.kind} via {chosen.docker}")
        except BuildError as exc:
            click.echo(f"[--] BACKEND={name}: not available here ({exc.message})")
    from builder.core.locations import Locations
    from builder.resolve.identity import Identities

    for variable, what in (("TOOLCHAIN", "toolchain"), ("IMAGER", "imager")):
        ref = DEFAULTS[variable]
        try:
            identity = Identities(Locations.of(Path.cwd()).out, services).image(ref, where=variable)
            report(True, f"{what} image {ref}: {identity}", "")
        except BuildError as exc:
            fix = "builder toolchain ensure" + (" --imager" if variable == "IMAGER" else "")
            report(False, f"{what} image {ref}: {exc.message}", exc.hint or fix)
    mirror = AptSources.read().mirror(DEFAULTS["DEBIAN_SUITE"])
    report(mirror is not None, f"Debian mirror from apt sources: {mirror or 'none'}",
           "add a bookworm source to /etc/apt/sources.list.d/ or set DEBIAN_MIRROR=URL")
    for binary, package in (("qemu-system-x86_64", "qemu-system-x86"), ("qemu-system-aarch64", "qemu-system-arm"),
                            ("mmdebstrap", "mmdebstrap"), ("qemu-img", "qemu-utils")):
        found = shutil.which(binary)
        report(found is not None, f"{binary}: {found or 'absent'}", f"apt-get install {package}")
    from builder.core.platforms import PLATFORMS

    for platform in PLATFORMS.values():  # what builder boot and the tests boot media with
        for path in (platform.uefi_code, platform.uefi_vars):
            report(Path(path).is_file(), f"UEFI firmware for {platform.arch}: {path}",
                   f"apt-get install {platform.uefi_package}")
    sys.exit(1 if problems else 0)


@main.group()
def toolchain() -> None:
    """The toolchain image (mmdebstrap -> docker import)."""


@toolchain.command("ensure")
@click.option("--imager", is_flag=True, help="the image boot media are assembled in (IMAGER), not the toolchain")
@click.option("--ref", default=None, help="image reference (default: the TOOLCHAIN or IMAGER variable's default)")
@click.option("--mirror", default=None, help="Debian mirror URL (default: from apt sources)")
@click.option("--suite", default=None, help="Debian suite to bootstrap (default: the DEBIAN_SUITE variable's default)")
@click.option("--force", is_flag=True, help="re-create even when present")
@friendly
def toolchain_ensure(imager: bool, ref: str | None, mirror: str | None, suite: str | None, force: bool) -> None:
    """Create the toolchain (or imager) image when it is absent or made from another package list."""
    from builder.build import toolchain as tc
    from builder.host.engine import Engine
    from builder.model.variables import DEFAULTS

    kind = tc.IMAGER if imager else tc.TOOLCHAIN
    image = tc.ensure(Engine(), ref or DEFAULTS[kind.variable], suite=suite or DEFAULTS["DEBIAN_SUITE"], mirror=mirror,
                      force=force, kind=kind)
    click.echo(image)


@toolchain.command("packages")
@click.option("--ref", default=None)
@friendly
def toolchain_packages(ref: str | None) -> None:
    """Print the toolchain's exact package list (name=version)."""
    from builder.build import toolchain as tc
    from builder.host.engine import Engine
    from builder.model.variables import DEFAULTS

    click.echo(tc.packages(Engine(), ref or DEFAULTS["TOOLCHAIN"]), nl=False)


@main.command()
@click.argument("target", default=None, required=False, metavar="[ARCH | IMAGE]")
@click.option("--timeout", default=None, type=int, help="seconds before QEMU is stopped (default 300; media 600)")
@click.option("--flavor", default="", metavar="NAME", help="boot the flavored build (out/vmlinuz-ARCH-NAME ...)")
@click.option("--firmware", type=click.Choice(["bios", "uefi", "u-boot"]), default=None,
              help="media: boot through SeaBIOS, UEFI (OVMF, AAVMF) or the overlay's U-Boot beside the image; "
                   "default: U-Boot when there is one, else bios on amd64, uefi on arm64")
@click.option("--as", "medium", type=click.Choice(["cdrom", "disk"]), default=None,
              help="media: attach the image as a CD or a disk (default: an .iso as a CD, the rest as disks)")
@click.option("--platform", "platform_spec", default=None, help="media: the architecture (default: from the name)")
@friendly
def boot(target: str | None, timeout: int | None, flavor: str, firmware: str | None, medium: str | None,
         platform_spec: str | None) -> None:
    """Boot out/vmlinuz-ARCH + out/initramfs-ARCH.xz, or a built ISO or disk image (out/metal-amd64.iso,
    out/metal-amd64.raw.zst, ...), in QEMU (TCG) and wait for the boot marker."""
    from builder.core.locations import Locations
    from builder.core.platforms import by_any_name, host_platform, parse_platforms
    from builder.host import qemu
    from builder.model.settings import Settings
    from builder.resolve.project import find_root

    places = Locations.of(find_root())
    logs = places.logs
    if target and ("/" in target.strip("/") and not target.startswith("linux/") or "." in target):
        image = Path(target)
        platform = parse_platforms(platform_spec)[0] if platform_spec else next(
            (p for word in image.name.replace(".", "-").split("-") if (p := by_any_name(word))), None)
        if platform is None:
            raise BuildError(f"{image.name}: which architecture? its name says neither amd64 nor arm64",
                             hint="give --platform linux/amd64 or linux/arm64")
        default = "u-boot" if qemu.uboot_beside(image).is_file() else "bios" if platform.arch == "amd64" else "uefi"
        firmware = firmware or default
        result = qemu.boot_media(platform, image, firmware=firmware,
                                 cdrom=None if medium is None else medium == "cdrom", timeout=timeout or 600,
                                 console=logs / f"boot-{image.name}-{firmware}.log")
        click.echo(f"booted {image.name} ({firmware}): release={result.release} machine={result.machine}"
                   + "".join(f" {k}={v}" for k, v in result.fields.items() if k != "cmdline")
                   + f" in {result.seconds:.1f}s")
        click.echo(f"cmdline: {result.fields.get('cmdline', '')}")
        return
    if firmware or medium:
        raise BuildError("--firmware and --as are for boot media (builder boot out/metal-amd64.iso)")
    platform = parse_platforms(target)[0] if target else host_platform()
    name = platform.arch + (f"-{Settings.parse({'FLAVOR': flavor}).flavor}" if flavor else "")
    out = places.out
    result = qemu.boot(platform, out / f"vmlinuz-{name}", out / f"initramfs-{name}.xz", timeout=timeout or 300,
                       console=logs / f"boot-{name}.log")
    click.echo(f"booted: release={result.release} machine={result.machine} in {result.seconds:.1f}s")


@main.group("meta")
def meta_group() -> None:
    """META of a built raw disk image (its META partition; format in builder/model/meta.py)."""


def _shown(value: bytes) -> str:
    text = value.decode("utf-8", "backslashreplace")
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


@meta_group.command("read")
@click.argument("image", type=click.Path(path_type=Path))
@click.argument("key", required=False)
@friendly
def meta_read(image: Path, key: str | None) -> None:
    """Print every META value as 'KEY: VALUE' (newlines as \\n), or one KEY's value exactly as stored."""
    from builder.model import meta

    values = meta.read(image)
    if values is meta.BLANK:
        raise BuildError(f"{image} has no META: its META partition is blank",
                         hint="the image was made without META values; builder meta write IMAGE 0x0a=... adds some")
    assert values is not None
    if not values:
        raise BuildError(f"{image} has no META values: its META holds none",
                         hint="builder meta write IMAGE 0x0a=... adds some")
    if key is not None:
        number = meta.parse_key(key)
        if number not in values:
            raise BuildError(f"{image} has no META {meta.key_name(number)}")
        sys.stdout.buffer.write(values[number])
        return
    for number, value in sorted(values.items()):
        click.echo(f"{meta.key_name(number)}: {_shown(value)}")


@meta_group.command("write")
@click.argument("image", type=click.Path(path_type=Path))
@click.argument("pairs", nargs=-1, metavar="KEY=VALUE...")
@click.option("--delete", "deleted", multiple=True, metavar="KEY", help="remove KEY")
@friendly
def meta_write(image: Path, pairs: tuple[str, ...], deleted: tuple[str, ...]) -> None:
    """Set (KEY=VALUE, e.g. 0x0a=...) or remove META values of a raw disk image; the others stay."""
    from builder.core.locations import Locations
    from builder.model import meta
    from builder.resolve.project import find_root

    try:
        out = Locations.of(find_root()).out
    except BuildError:
        out = None
    if out is not None and image.resolve().is_relative_to(out.resolve()):
        raise BuildError(f"{image} is in out/, which changes only with its checksums (a build); "
                         "edit a copy (zstd -d / xz -d it elsewhere)")
    values = meta.read(image) or {}
    for word in pairs:
        key, sep, value = word.partition("=")
        if not sep:
            raise BuildError(f"expected KEY=VALUE (0x0a=...), not {word!r}")
        values[meta.parse_key(key)] = value.encode()
    for key in deleted:
        values.pop(meta.parse_key(key), None)
    meta.write(image, values)
    click.echo(f"{image}: META {', '.join(meta.key_name(k) for k in sorted(values)) or 'empty'}")


@main.command()
@click.argument("targets", nargs=-1)
@click.option("--platform", "platform_spec", default=None, help="default: host platform")
@click.option("-v", "--var", "pairs", multiple=True, metavar="NAME=value")
@friendly
def why(targets: tuple[str, ...], platform_spec: str | None, pairs: tuple[str, ...]) -> None:
    """Say, input by input, why each task would rebuild (or that it is up to date)."""
    from builder.cli.why import Explanation, explain, stored_values

    project = _project(pairs, platform_spec)
    verdicts: dict[str, Explanation] = {}
    for platform in project.settings.platforms:
        graph = project.graph(platform)
        names = targets or tuple(r.name for r in graph.exported())
        ordered = [r.name for name in names for r in graph.order(name) if r.outputs and r.builds_for(platform)]
        for name in dict.fromkeys(ordered):  # upstream tasks first, each once
            plan = project.plan(name, platform)
            verdict = explain(plan, project, stored_values(project.locations.dep_file, plan.label), verdicts)
            verdicts[plan.label] = verdict
            if targets and name not in targets:
                continue
            click.echo(f"{verdict.label}: {'up to date' if verdict.up_to_date else 'would rebuild'}")
            for reason in verdict.reasons:
                click.echo(f"    {reason}")


@main.command()
@click.argument("first", type=click.Path(path_type=Path))
@click.argument("second", type=click.Path(path_type=Path))
@friendly
def diffsigs(first: Path, second: Path) -> None:
    """Compare two input signatures (out/.inputs/TASK.json), e.g. from two machines: which inputs differ.

    Exit status 0 when they are the same, 1 when they differ (BitBake's bitbake-diffsigs, for builder)."""
    import json

    def inputs(path: Path) -> dict[str, str]:
        if not path.is_file():
            raise BuildError("does not exist" if not path.exists() else "is not a file", where=str(path),
                             hint="input signatures are out/.inputs/TASK.json")
        try:
            data = json.loads(path.read_text())
            return dict(data["inputs"])
        except (OSError, ValueError, KeyError, TypeError):
            raise BuildError("not an input signature (expected JSON with an 'inputs' mapping)",
                             where=str(path)) from None

    from builder.cli.why import differences

    lines = differences(inputs(first), inputs(second))
    click.echo("\n".join(lines) if lines else f"same inputs ({len(inputs(first))})")
    sys.exit(1 if lines else 0)


@main.command("check-signatures")
@click.argument("release", type=click.Path(path_type=Path))
@click.argument("rebuilt", type=click.Path(path_type=Path))
@click.option("--cert", type=click.Path(path_type=Path), required=True,
              help="the public certificate the release's modules are signed for (MODULE_SIGNING_CERT)")
@friendly
def check_signatures(release: Path, rebuilt: Path, cert: Path) -> None:
    """Check a MODULE_SIGNING=release build against a rebuild made with the certificate alone: every artifact
    in RELEASE's SHA256SUMS equals REBUILT's, except modules (in the modules tar and the initramfs) that carry
    an appended signature valid for the certificate. Exit status 0 when so, 1 at the first other difference."""
    from builder.build import signatures

    try:
        verdicts = signatures.check(release, rebuilt, cert)
    except signatures.Mismatch as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    for verdict in verdicts:
        click.echo(verdict.line())


@main.command("verify-image")
@click.argument("reference")
@click.option("--key", type=click.Path(path_type=Path), required=True,
              help="the PEM public key of IMAGE_SIGNING_KEY (what cosign verify --key takes)")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="seconds the registry may take to answer one request")
@friendly
def verify_image(reference: str, key: Path, timeout: float) -> None:
    """Check the cosign signature of REFERENCE (REGISTRY/NAME:TAG, @sha256:DIGEST, or TAG@DIGEST: then the
    tag must still name that digest), and of every manifest of an index. One line per signed digest; exit
    status 1 with one line for a missing or wrong signature, or a tag that moved."""
    from builder.host import cosign, registry
    from builder.host.services import Services

    public = cosign.load_public_key(key)
    ref = registry.Reference.parse(reference, "REFERENCE")
    session, where = Services().registries, "REFERENCE"
    repository = f"{ref.registry}/{ref.repository}"
    digest = ref.digest
    if ref.tag:
        now = registry.descriptor(registry.Reference.parse(f"{repository}:{ref.tag}", where), seconds=timeout,
                                  where=where, session=session)
        if now is None:
            raise BuildError(f"{repository}:{ref.tag} does not exist", where=where)
        if digest and now["digest"] != digest:
            raise cosign.Unverified(f"{repository}:{ref.tag} moved: it names {now['digest']}, not {digest}",
                                    where=where)
        digest = str(now["digest"])
    assert digest is not None

    def verify(digest: str) -> None:
        signature = registry.Reference.parse(f"{repository}:{cosign.signature_tag(digest)}", where)
        found = registry.manifest(signature, seconds=timeout, where=where, session=session)
        if found is None:
            raise cosign.Unverified(f"{repository}@{digest} is not signed (no {cosign.signature_tag(digest)})",
                                    where=where)
        cosign.check(public, repository, digest, found[1],
                     lambda blob: registry.blob(signature, blob, seconds=timeout, where=where, session=session))
        click.echo(f"{repository}@{digest}: signed, the key verifies it")

    pinned = registry.manifest(registry.Reference.parse(f"{repository}@{digest}", where), seconds=timeout,
                               where=where, session=session)
    if pinned is None:
        raise BuildError(f"{repository}@{digest} does not exist", where=where)
    verify(digest)
    if pinned is not None and "index" in pinned[0]:
        import json

        for entry in json.loads(pinned[1]).get("manifests", []):
            verify(str(entry["digest"]))


@main.group("images")
def images_group() -> None:
    """The images and sources a build takes from outside (what an air-gapped site must mirror)."""


@images_group.command("list")
@click.option("--platform", "platform_spec", default=None, help="default: every platform")
@click.option("-v", "--var", "pairs", multiple=True, metavar="NAME=value")
@friendly
def images_list(platform_spec: str | None, pairs: tuple[str, ...]) -> None:
    """Every image and source the project's builds take, with its digest, one per line (talosctl image
    default, for builder): `image REF IDENTITY WHERE` and `source URL sha256:HEX RECIPE-FILE`. An image the
    engine does not have says so instead of a digest."""
    from builder.core.platforms import PLATFORMS

    project = _project(pairs, platform_spec or ",".join(PLATFORMS))
    images: dict[str, str] = {}
    sources: dict[str, tuple[str, str]] = {}
    for platform in project.settings.platforms:
        graph = project.graph(platform)
        for recipe in graph.exported():
            plan = project.plan(recipe.name, platform)
            for ref, where in plan.images.items():
                images.setdefault(ref, where)
            for member in graph.closure(recipe.name):
                for source in member.sources:
                    sources.setdefault(source.url, (source.sha256, str(member.path)))
    for ref, where in sorted(images.items()):
        try:
            identity = project.identities.image(ref, where=where)
        except BuildError as exc:
            identity = f"absent ({exc.message})"
        click.echo(f"image   {ref}  {identity}  {where}")
    for url, (sha256, path) in sorted(sources.items()):
        click.echo(f"source  {url}  sha256:{sha256}  {path}")
