"""Boot media: a profile (profile.py) for one platform becomes a recipe, ``image-NAME``, built like any
other: in BuildKit, in the IMAGER image, --network=none, unprivileged, its output moved into out/ with
SHA256SUMS and the manifest. It takes the kernel and the initramfs as *artifacts* (the bytes in out/),
so an ISO holds exactly out/vmlinuz-ARCH.

One builder per output kind (KIWI's shape), behind one small interface: ``script(job)`` returns the bash
that makes ``/out/NAME`` with the helpers of builder/scripts/images.sh, which the step carries in full
(so the helpers are build inputs like the rest of the script).
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
from builder.model.profile import MAX_CMDLINE, Profile, check_kernel_args
from builder.model.recipe import Recipe

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


def _iso(job: Job) -> str:
    return f"image_iso {job.arch} /tmp/image.iso\n" + _finish(job, "/tmp/image.iso")


def _disk(job: Job) -> str:
    fmt = job.profile.output.format or "raw"
    lines = [*_assets(job), f"image_disk {job.arch} /tmp/image.raw {job.profile.disk_mib} {job.profile.bootloader}"]
    if job.meta:
        copy = base64.b64encode(meta.encode(job.meta)).decode()
        lines.append(f"image_meta_write /tmp/image.raw {shlex.quote(copy)}")
    if fmt == "qcow2":
        lines.append("image_qcow2 /tmp/image.raw /tmp/image.qcow2 && rm /tmp/image.raw")
    elif fmt == "vhd":
        lines.append("image_vhd /tmp/image.raw /tmp/image.vhd && rm /tmp/image.raw")
    return "\n".join(lines) + "\n" + _finish(job, f"/tmp/image.{fmt}")


OVERLAY_FILES = "overlay"  # where an overlay's project files are under /pkg


def _assets(job: Job) -> list[str]:
    """An overlay's assets: efi/ ones staged for the EFI partition, firmware/ ones put into /out."""
    overlay = job.profile.applied
    if overlay is None:
        return []
    firmware = {asset.to: name for asset, name in job.profile.firmware(job.arch, job.flavor_suffix)}
    lines = []
    for index, asset in enumerate(overlay.assets):
        source = f"/pkg/{OVERLAY_FILES}/{asset.file}" if asset.file else str(asset.imager)
        what = f"{overlay.path}: assets.{index}" + (" (imager: a file of the IMAGER image)" if asset.imager else "")
        where, _, rest = asset.to.partition("/")
        dest = f"/tmp/overlay-efi/{rest}" if where == "efi" else f"/out/{firmware[asset.to]}"
        lines.append(f"image_asset {shlex.quote(source)} {shlex.quote(dest)} {shlex.quote(what)}")
    return lines


def _kernel(job: Job) -> str:
    return _finish(job, '"$IMAGE_KERNEL"', copy=True)


def _initramfs(job: Job) -> str:
    return _finish(job, '"$IMAGE_INITRAMFS"', copy=True)


def _cmdline(job: Job) -> str:
    return 'printf \'%s\\n\' "$IMAGE_CMDLINE" >/tmp/cmdline\n' + _finish(job, "/tmp/cmdline")


def _finish(job: Job, made: str, *, copy: bool = False) -> str:
    """Compress ``made`` as the profile says and put it at /out/NAME."""
    compression = job.profile.output.compression
    if job.profile.output.kind == "initramfs":
        compression = "none"  # already xz
    move = "cp" if copy else "mv"
    suffix = {"none": "", "xz": ".xz", "zstd": ".zst"}[compression]
    return (f"mkdir -p /out\n{move} {made} /out/{job.output}.tmp\n"
            f"image_compress /out/{job.output}.tmp {compression}\n"
            f"mv /out/{job.output}.tmp{suffix} /out/{job.output}\n")


ASSEMBLY: dict[str, Callable[[Job], str]] = {
    "iso": _iso, "disk": _disk, "kernel": _kernel, "initramfs": _initramfs, "cmdline": _cmdline,
}
NEEDS = {  # the artifacts each kind takes: kernel, initramfs
    "iso": ("kernel", "initramfs"), "disk": ("kernel", "initramfs"), "kernel": ("kernel",),
    "initramfs": ("initramfs",), "cmdline": (),
}


def library() -> str:
    return resources.files("builder").joinpath("scripts/images.sh").read_text()


def meta_values(profile: Profile, command_line: Mapping[int, str]) -> dict[int, bytes]:
    """The profile's META with the command line's META= values over it."""
    merged = {**profile.customization.meta, **command_line}
    return {key: value.encode() for key, value in sorted(merged.items())}


def kernel_cmdline(profile: Profile, platform: Platform, extra: str, values: Mapping[int, bytes]) -> str:
    """The command line the medium boots the kernel with: the console (screen, then the serial port, which
    becomes /dev/console), module signature enforcement, the platform, the profile's extra arguments, then
    EXTRA_KERNEL_ARGS; an ISO carries META as INSTALLER_META_BASE64."""
    overlay_args = profile.applied.extra_kernel_args if profile.applied else []
    words = ["console=tty0", f"console={platform.console}", "module.sig_enforce=1",
             f"builder.platform={profile.platform}", *overlay_args, *profile.customization.extra_kernel_args]
    try:
        words += check_kernel_args(extra.split())
    except ValueError as exc:
        raise RecipeError(f"EXTRA_KERNEL_ARGS: {exc}", where="command line") from None
    if profile.output.kind == "iso" and values:
        words.append(meta.cmdline_word(values))
    text = " ".join(words)
    if len(text) >= MAX_CMDLINE:
        what = " (META travels on an ISO's command line)" if profile.output.kind == "iso" and values else ""
        raise RecipeError(f"the kernel command line would be {len(text)} bytes; the kernel takes at most "
                          f"{MAX_CMDLINE - 1}{what}", where=profile.path)
    return text


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
        "env": {"IMAGE_NAME": job.output.split(".", 1)[0], "IMAGE_ARCH": job.arch, "IMAGE_CMDLINE": job.cmdline,
                "IMAGE_KERNEL": f"/artifacts/{job.kernel}", "IMAGE_INITRAMFS": f"/artifacts/{job.initramfs}"},
        "steps": [{"install": library() + "\n" + ASSEMBLY[kind](job)}],
        "finalize": [{"from": "/out/", "to": "/"}],
        "outputs": [job.output, *(name for _, name in profile.firmware(platform.arch, suffix))],
    })
    recipe._path = Path(profile.path)
    return recipe
