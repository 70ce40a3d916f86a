"""Boot media: a profile (profile.py) for one platform becomes a recipe, ``image-NAME``, built like any
other: in BuildKit, in the IMAGER image, --network=none, unprivileged, its output moved into out/ with
SHA256SUMS and the manifest. It takes the kernel and the initramfs as *artifacts* (the bytes in out/),
so an ISO holds exactly out/vmlinuz-ARCH.

One builder per output kind (KIWI's shape), all in one module, builder/scripts/media.py, which runs inside
the IMAGER image: ``command(job)`` is its command line for one job, and the step carries the module in full
(so the module is a build input like the rest of the script) and runs it.
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Job:
    """One profile on one platform: what a kind's builder needs."""

    profile: Profile
    platform: Platform
    output: str  # the file in out/
    cmdline: str
    meta: dict[int, bytes]
    flavor_suffix: str
    kernel: str  # the kernel recipe's output the medium boots (vmlinuz-ARCH[-FLAVOR])
    initramfs: str  # the initramfs recipe's (initramfs-ARCH[-FLAVOR].xz)

    @property
    def arch(self) -> str:
        return self.platform.arch


def _taken(recipe: str, prefix: str, outputs: Mapping[str, list[str]], profile: Profile) -> str:
    """The output of ``recipe`` whose name starts with ``prefix``: what an image takes from it."""
    found = [name for name in outputs.get(recipe, []) if name.startswith(prefix)]
    if not found:
        raise RecipeError(f"the image takes out/{prefix}* from recipe {recipe!r}, which has no such output "
                          f"({', '.join(outputs.get(recipe, [])) or 'no recipe or no outputs'})", where=profile.path)
    return found[0]


MODULE = "/tmp/media.py"  # where the step writes the media module before running it
OVERLAY_FILES = "overlay"  # where an overlay's project files are under /pkg


def _medium(job: Job) -> list[str]:
    """The arguments every medium takes: its name, arch, command line and the files it boots."""
    return ["--name", job.output.split(".", 1)[0], "--arch", job.arch, "--cmdline", job.cmdline,
            "--kernel", f"/artifacts/{job.kernel}", "--initramfs", f"/artifacts/{job.initramfs}"]


def _iso(job: Job) -> list[str]:
    return ["iso", *_medium(job)]


def _disk(job: Job) -> list[str]:
    args = ["disk", *_medium(job), "--size-mib", str(job.profile.disk_mib), "--bootloader", job.profile.bootloader,
            "--format", job.profile.output.format or "raw", *_assets(job)]
    if job.meta:
        args += ["--meta-base64", base64.b64encode(meta.encode(job.meta)).decode()]
    return args


def _assets(job: Job) -> list[str]:
    """An overlay's assets: efi/ ones into the EFI partition, firmware/ ones published into /out."""
    overlay = job.profile.applied
    if overlay is None:
        return []
    firmware = {asset.to: name for asset, name in job.profile.firmware(job.arch, job.flavor_suffix)}
    args = []
    for index, asset in enumerate(overlay.assets):
        source = f"/pkg/{OVERLAY_FILES}/{asset.file}" if asset.file else str(asset.imager)
        what = f"{overlay.path}: assets.{index}" + (" (imager: a file of the IMAGER image)" if asset.imager else "")
        to = asset.to if asset.to.startswith("efi/") else f"/out/{firmware[asset.to]}"
        args += ["--asset", source, to, what]
    return args


def _kernel(job: Job) -> list[str]:
    return ["file", "--source", f"/artifacts/{job.kernel}"]


def _initramfs(job: Job) -> list[str]:
    return ["file", "--source", f"/artifacts/{job.initramfs}"]


def _cmdline(job: Job) -> list[str]:
    return ["cmdline", "--cmdline", job.cmdline]


def command(job: Job) -> list[str]:
    """The media module's command line that makes ``job``'s output at /out/NAME."""
    compression = "none" if job.profile.output.kind == "initramfs" else job.profile.output.compression  # xz already
    return [*ASSEMBLY[job.profile.output.kind](job), "--compression", compression, "--out", f"/out/{job.output}"]


ASSEMBLY: dict[str, Callable[[Job], list[str]]] = {
    "iso": _iso, "disk": _disk, "kernel": _kernel, "initramfs": _initramfs, "cmdline": _cmdline,
}
NEEDS = {  # the artifacts each kind takes: kernel, initramfs
    "iso": ("kernel", "initramfs"), "disk": ("kernel", "initramfs"), "kernel": ("kernel",),
    "initramfs": ("initramfs",), "cmdline": (),
}
END = "BUILDER_MEDIA_PY"


def module() -> str:
    """The media module's source (builder/scripts/media.py), which every image step carries in full."""
    return resources.files("builder").joinpath("scripts/media.py").read_text()


def script(job: Job) -> str:
    """The step: write the media module, run it with the imager's python3 (isolated from PYTHON* settings)."""
    text = module()
    assert f"\n{END}\n" not in f"\n{text}\n", "the media module contains its own here-document end"
    return (f"cat >{MODULE} <<'{END}'\n{text.rstrip()}\n{END}\n"
            f"python3 -I {MODULE} {shlex.join(command(job))}\n")


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
    outputs (the kernel's vmlinuz-* and the initramfs's initramfs-* are what a medium boots)."""
    suffix = variables.get("FLAVOR_SUFFIX", "")
    values = meta_values(profile, command_line_meta)
    kind = profile.output.kind
    needs = NEEDS[kind]
    job = Job(profile, platform, profile.output_name(platform.arch, suffix),
              kernel_cmdline(profile, platform, variables.get("EXTRA_KERNEL_ARGS", ""), values), values, suffix,
              _taken(KERNEL_RECIPE, "vmlinuz-", outputs, profile) if "kernel" in needs else "",
              _taken(INITRAMFS_RECIPE, "initramfs-", outputs, profile) if "initramfs" in needs else "")
    dependencies = []
    if "kernel" in needs:
        dependencies.append({"artifact": KERNEL_RECIPE, "outputs": [job.kernel], "to": "/artifacts/"})
    if "initramfs" in needs:
        dependencies.append({"artifact": INITRAMFS_RECIPE, "outputs": [job.initramfs], "to": "/artifacts/"})
    files = [{"src": profile.path, "dest": "profile.yaml"}]
    if profile.applied is not None:  # the overlay and its files are inputs of this image
        overlay = profile.applied
        files.append({"src": overlay.path, "dest": f"{OVERLAY_FILES}.yaml"})
        files += [{"src": f"{overlay.directory}/{a.file}", "dest": f"{OVERLAY_FILES}/{a.file}"}
                  for a in overlay.assets if a.file]
    recipe = Recipe.model_validate({
        "name": RECIPE_PREFIX + profile.name,
        "description": f"{profile.path}: {profile.output_name('ARCH')} ({kind}"
                       + (f", {profile.output.format or 'raw'}" if kind == "disk" else "") + ")",
        "variant": "imager",
        "shell": "/bin/bash",
        "platforms": [f"linux/{arch}" for arch in profile.arch],
        "dependencies": dependencies,
        "files": files,
        "steps": [{"install": script(job)}],
        "finalize": [{"from": "/out/", "to": "/"}],
        "outputs": [job.output, *(name for _, name in profile.firmware(platform.arch, suffix))],
    })
    recipe._path = Path(profile.path)
    return recipe
