"""Boot media: a profile (profile.py) for one platform becomes a recipe, ``image-NAME``, built like any
other: in BuildKit, in the IMAGER image, --network=none, unprivileged, its output moved into out/ with
SHA256SUMS and the manifest. It takes the kernel and the initramfs as *artifacts* (the bytes in out/),
so an ISO holds exactly out/vmlinuz-ARCH.

Every medium is made by one module, builder/scripts/media.py, through the imager's interface: a profile
table (``table``: the profiles as plain data) and a command line (``imager PROFILE --arch ...
--extra-kernel-arg ... --meta ...``). An image step carries the module and its profile's table entry in
full (both are build inputs like the rest of the script) and runs that command line; the imager image
carries the same module and the table of every profile, so it makes the same bytes.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

from builder.core.errors import RecipeError
from builder.core.platforms import Platform
from builder.model import meta
from builder.model.profile import Profile, check_kernel_args
from builder.model.recipe import Recipe
from builder.scripts import media

RECIPE_PREFIX = "image-"  # profile metal -> recipe and doit task image-metal (Talos: make image-metal)
KERNEL_RECIPE, INITRAMFS_RECIPE = "kernel", "initramfs"
NEEDS = {  # the artifacts each kind takes: kernel, initramfs
    "iso": ("kernel", "initramfs"), "disk": ("kernel", "initramfs"), "kernel": ("kernel",),
    "initramfs": ("initramfs",), "cmdline": (),
}
MODULE, TABLE = "/tmp/media.py", "/tmp/media.json"  # where an image step writes the module and its table
FILES = "/pkg"  # where an image step's project files are (overlays/NAME/FILE)
END = "BUILDER_MEDIA"


def _taken(recipe: str, prefix: str, outputs: Mapping[str, list[str]], profile: Profile) -> str:
    """The output of ``recipe`` whose name starts with ``prefix``: what an image takes from it."""
    found = [name for name in outputs.get(recipe, []) if name.startswith(prefix)]
    if not found:
        raise RecipeError(f"the image takes out/{prefix}* from recipe {recipe!r}, which has no such output "
                          f"({', '.join(outputs.get(recipe, [])) or 'no recipe or no outputs'})", where=profile.path)
    return found[0]


def overlay_file(profile: Profile, file: str) -> str:
    """Where an overlay's project file is among the media module's files (an image step's /pkg, the imager
    image's /usr/lib/builder)."""
    return f"overlays/{profile.overlay}/{file}"


def table_entry(profile: Profile, flavor_suffix: str = "") -> dict[str, object]:
    """``profile`` as the media module's table holds it (media.Entry): plain data, every name decided."""
    kind = profile.output.kind
    entry: dict[str, object] = {
        "name": profile.name, "platform": profile.platform, "kind": kind, "arch": list(profile.arch),
        "outputs": {arch: profile.output_name(arch, flavor_suffix) for arch in profile.arch},
        "compression": profile.output.compression,
    }
    if kind == "disk":
        entry.update(format=profile.output.format or "raw", size_mib=profile.disk_mib, bootloader=profile.bootloader)
    extra = [*(profile.applied.extra_kernel_args if profile.applied else []), *profile.customization.extra_kernel_args]
    if extra:
        entry["extra_kernel_args"] = extra
    if profile.customization.meta:
        entry["meta"] = {meta.key_name(k): v for k, v in sorted(profile.customization.meta.items())}
    if profile.applied is not None:
        entry["overlay"] = profile.overlay
        assets: list[dict[str, object]] = []
        for index, asset in enumerate(profile.applied.assets):
            item: dict[str, object] = {
                "source": overlay_file(profile, asset.file) if asset.file else str(asset.imager),
                "what": f"{profile.applied.path}: assets.{index}"
                        + (" (imager: a file of the IMAGER image)" if asset.imager else "")}
            where, _, rest = asset.to.partition("/")
            if where == "efi":
                item["efi"] = rest
            else:
                item["out"] = {arch: profile.firmware_name(asset, arch, flavor_suffix) for arch in profile.arch}
            assets.append(item)
        entry["assets"] = assets
    return entry


def table(profiles: Iterable[Profile], flavor_suffix: str = "") -> dict[str, object]:
    """The media module's profile table: what the imager image carries for every profile."""
    return {"profiles": [table_entry(profile, flavor_suffix) for profile in profiles]}


def module() -> str:
    """The media module's source (builder/scripts/media.py), which every image step carries in full."""
    return resources.files("builder").joinpath("scripts/media.py").read_text()


def command(profile: Profile, arch: str, kernel: str, initramfs: str, extra: Iterable[str],
            command_line_meta: Mapping[int, str]) -> list[str]:
    """The imager command line that makes ``profile``'s output for ``arch`` in an image step."""
    args = [profile.name, "--arch", arch, "--table", TABLE, "--files", FILES, "--output", "/out"]
    if kernel:
        args += ["--kernel", f"/artifacts/{kernel}"]
    if initramfs:
        args += ["--initramfs", f"/artifacts/{initramfs}"]
    for word in extra:
        args += ["--extra-kernel-arg", word]
    for key, value in sorted(command_line_meta.items()):
        args += ["--meta", f"{meta.key_name(key)}={value}"]
    return args


def script(entry: Mapping[str, object], args: list[str]) -> str:
    """The step: write the module and the table entry, run the module with the imager's python3 (isolated
    from PYTHON* settings)."""
    return _written(MODULE, TABLE, {"profiles": [entry]}) + f"python3 -I {MODULE} {shlex.join(args)}\n"


def _written(module_path: str, table_path: str, table: Mapping[str, object]) -> str:
    """Shell that writes the media module and ``table`` at those paths, each as a quoted here-document."""
    text, document = module().rstrip(), json.dumps(table, indent=1, sort_keys=True)
    for part in (text, document):
        if f"\n{END}\n" in f"\n{part}\n":
            raise RecipeError(f"the media module or its table holds a line {END}, which ends the step's here-document")
    return f"cat >{module_path} <<'{END}'\n{text}\n{END}\ncat >{table_path} <<'{END}'\n{document}\n{END}\n"


def meta_values(profile: Profile, command_line: Mapping[int, str]) -> dict[int, bytes]:
    """The profile's META with the command line's META= values over it."""
    merged = {**profile.customization.meta, **command_line}
    return {key: value.encode() for key, value in sorted(merged.items())}


def kernel_cmdline(profile: Profile, platform: Platform, extra: str, values: Mapping[int, bytes]) -> str:
    """The command line the medium boots the kernel with (the media module's kernel_cmdline): the profile's
    overlay's and its own extra arguments, then EXTRA_KERNEL_ARGS; an ISO carries META."""
    overlay_args = profile.applied.extra_kernel_args if profile.applied else []
    try:
        words = check_kernel_args(extra.split())
    except ValueError as exc:
        raise RecipeError(f"EXTRA_KERNEL_ARGS: {exc}", where="command line") from None
    try:
        return media.kernel_cmdline(platform.arch, profile.platform,
                                    [*overlay_args, *profile.customization.extra_kernel_args, *words],
                                    values if profile.output.kind == "iso" else None)
    except media.MediaError as exc:
        raise RecipeError(str(exc), where=profile.path) from None


def image_recipe(profile: Profile, platform: Platform, variables: Mapping[str, str],
                 command_line_meta: Mapping[int, str], outputs: Mapping[str, list[str]]) -> Recipe:
    """The recipe that makes ``profile``'s output for ``platform``; ``outputs``: the project's recipes'
    outputs (the kernel's vmlinuz-* and the initramfs's initramfs-* are what a medium boots). The command
    line is checked here, on the host, with the rules the module applies."""
    suffix = variables.get("FLAVOR_SUFFIX", "")
    extra = variables.get("EXTRA_KERNEL_ARGS", "")
    kernel_cmdline(profile, platform, extra, meta_values(profile, command_line_meta))  # a RecipeError now
    kind = profile.output.kind
    needs = NEEDS[kind]
    kernel = _taken(KERNEL_RECIPE, "vmlinuz-", outputs, profile) if "kernel" in needs else ""
    initramfs = _taken(INITRAMFS_RECIPE, "initramfs-", outputs, profile) if "initramfs" in needs else ""
    dependencies = []
    if kernel:
        dependencies.append({"artifact": KERNEL_RECIPE, "outputs": [kernel], "to": "/artifacts/"})
    if initramfs:
        dependencies.append({"artifact": INITRAMFS_RECIPE, "outputs": [initramfs], "to": "/artifacts/"})
    files = [{"src": profile.path, "dest": "profile.yaml"}]
    if profile.applied is not None:  # the overlay and its files are inputs of this image
        overlay = profile.applied
        files.append({"src": overlay.path, "dest": overlay_file(profile, "overlay.yaml")})
        files += [{"src": f"{overlay.directory}/{a.file}", "dest": overlay_file(profile, a.file)}
                  for a in overlay.assets if a.file]
    args = command(profile, platform.arch, kernel, initramfs, extra.split(), command_line_meta)
    recipe = Recipe.model_validate({
        "name": RECIPE_PREFIX + profile.name,
        "description": f"{profile.path}: {profile.output_name('ARCH')} ({kind}"
                       + (f", {profile.output.format or 'raw'}" if kind == "disk" else "") + ")",
        "variant": "imager",
        "shell": "/bin/bash",
        "platforms": [f"linux/{arch}" for arch in profile.arch],
        "dependencies": dependencies,
        "files": files,
        "steps": [{"install": script(table_entry(profile, suffix), args)}],
        "finalize": [{"from": "/out/", "to": "/"}],
        "outputs": [profile.output_name(platform.arch, suffix),
                    *(name for _, name in profile.firmware(platform.arch, suffix))],
    })
    recipe._path = Path(profile.path)
    return recipe


IMAGER_RECIPE = "imager"
IMAGER_ROOT = "/usr/lib/builder"  # the module, its table and the overlays' files, in the imager image
ASSETS_ROOT = "/usr/install"  # the boot assets: ARCH/vmlinuz, ARCH/initramfs.xz (Talos's layout)


INSTALLER_RECIPE = "installer"


def installer_profiles(profiles: list[Profile]) -> list[Profile]:
    """What the installer image carries: the raw disk profiles (it writes the disk layout onto a file)."""
    return [p for p in profiles if p.output.kind == "disk" and (p.output.format or "raw") == "raw"]


def imager_recipe(profiles: list[Profile], platform: Platform, variables: Mapping[str, str],
                  outputs: Mapping[str, list[str]], reference: str, name: str = IMAGER_RECIPE,
                  host: Platform | None = None) -> Recipe:
    """The imager image for ``platform`` (Talos's make imager): the IMAGER image with the media module, the
    table of every profile and this platform's kernel and initramfs, run as ``docker run --rm -v DIR:/out
    IMAGE iso|disk|PROFILE --arch ... --extra-kernel-arg ... --meta ...``. Its media are doit's, byte for byte:
    the same module, the same table entries, the same assets. The installer image (``name`` installer) is the
    same with the raw disk profiles only, run as ``IMAGE install --disk FILE --size ...``."""
    suffix = variables.get("FLAVOR_SUFFIX", "")
    arch = platform.arch
    kernel = _taken(KERNEL_RECIPE, "vmlinuz-", outputs, profiles[0]) if profiles else ""
    initramfs = _taken(INITRAMFS_RECIPE, "initramfs-", outputs, profiles[0]) if profiles else ""
    mine = [p for p in profiles if arch in p.arch]
    entries = []
    for profile in mine:  # the arches the image has assets for: another arch is one clear error in the imager
        entry = table_entry(profile, suffix)
        entry["arch"] = [arch]
        entry["outputs"] = {arch: entry["outputs"][arch]}  # type: ignore[index]
        for asset in entry.get("assets", []):  # type: ignore[attr-defined]
            if "out" in asset:
                asset["out"] = {arch: asset["out"][arch]}
        entries.append(entry)
    files, overlays = [], sorted({p.overlay for p in mine if p.applied is not None and p.overlay})
    for profile in mine:
        if profile.applied is not None and profile.overlay in overlays:
            overlays.remove(profile.overlay)
            files += [{"src": f"{profile.applied.directory}/{a.file}", "dest": overlay_file(profile, a.file)}
                      for a in profile.applied.assets if a.file]
    lib, assets = f"/out{IMAGER_ROOT}", f"/out{ASSETS_ROOT}/{arch}"
    script = (f"install -d -m 0755 {lib} {assets}\n"
              + _written(f"{lib}/media.py", f"{lib}/media.json", {"profiles": entries}) +
              f"install -m 0644 /artifacts/{kernel} {assets}/vmlinuz\n"
              f"install -m 0644 /artifacts/{initramfs} {assets}/initramfs.xz\n"
              f"if [ -d /pkg/overlays ]; then cp -R /pkg/overlays {lib}/; fi\n"
              f"chmod -R u=rwX,go=rX /out\n")
    what = "imager" if name == IMAGER_RECIPE else "installer"
    recipe = Recipe.model_validate({
        "name": name,
        # the IMAGER image holds the build machine's programs: an image on it is the build machine's arch's
        # (asking for another arch is one line before any build: docs/release-pipeline.md)
        "platforms": [(host or platform).docker],
        "description": f"the {what} image: IMAGER, the media module, {len(mine)} profile{'s' * (len(mine) != 1)} "
                       "and the boot assets",
        "variant": "imager",
        "shell": "/bin/bash",
        "dependencies": [{"artifact": KERNEL_RECIPE, "outputs": [kernel], "to": "/artifacts/"},
                         {"artifact": INITRAMFS_RECIPE, "outputs": [initramfs], "to": "/artifacts/"}],
        "files": files,
        "steps": [{"install": script}],
        "finalize": [{"from": "/out/", "to": "/"}],
        "outputs": [f"{name}-{arch}{suffix}.tar"],
        "image": {"base": "IMAGER", "name": reference, "entrypoint": ["python3", "-I", f"{IMAGER_ROOT}/media.py"],
                  "workdir": "/"},
    })
    recipe._path = Path(profiles[0].path if profiles else "profiles")
    return recipe
