"""Boot media profiles (profiles/NAME.yaml): what one output is, parsed and validated once into typed
objects, like recipes. Imager's shape (Talos): a profile names the platform, the output kind and its
format, the boot loader and the customization; images.py turns one into a build.

    platform: metal              # the name in the output: metal-amd64.iso
    arch: [amd64, arm64]         # default: both; PLATFORM= on the command line picks among them
    output:
      kind: disk                 # iso | disk | kernel | initramfs | cmdline
      format: raw                # disks: raw | qcow2 | vhd
      compression: zstd          # none | xz | zstd
      size: 1GiB                 # disks: whole MiB, at least MIN_DISK_MIB
    bootloader: grub             # grub: BIOS + UEFI on amd64, UEFI on arm64
    customization:
      extraKernelArgs: [console=ttyS1]
      meta: {0x0a: "..."}        # written into the disk's META partition (builder/model/meta.py)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from builder.core.errors import RecipeError
from builder.model import files, meta, yamlfile

PROFILES_DIR = "profiles"
EXTENSIONS = {"xz": ".xz", "zstd": ".zst", "none": ""}
# Which firmware each boot loader serves, per architecture (what the tests boot).
BOOTLOADERS: dict[str, dict[str, tuple[str, ...]]] = {
    "grub": {"amd64": ("bios", "uefi"), "arm64": ("uefi",)},
    "u-boot": {"arm64": ("u-boot",)},  # extlinux.conf on the EFI partition; U-Boot itself from an overlay
}
OVERLAYS_DIR = "overlays"
OVERLAY_FILE = "overlay.yaml"
# The disk layout (builder/scripts/media.py, docs/boot-media.md): 1 MiB for the GPT and alignment, EFI
# 100 MiB, BIOS boot 1 MiB, META 1 MiB, and the backup GPT in the last MiB.
LAYOUT_MIB = {"gpt": 1, "EFI": 100, "BIOS": 1, "META": 1, "backup gpt": 1}
MIN_DISK_MIB = sum(LAYOUT_MIB.values())
MAX_DISK_MIB = 2 * 1024 * 1024  # 2 TiB: a larger image is a typo, and would fill the disk before failing
UNITS = {"": 1, "m": 1, "mi": 1, "mib": 1, "g": 1024, "gi": 1024, "gib": 1024, "t": 1024 * 1024,
         "ti": 1024 * 1024, "tib": 1024 * 1024}
SIZE = re.compile(r"^\s*([0-9]{1,9})\s*([a-zA-Z]*)\s*$")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def parse_size(value: Any) -> int:
    """A disk size in MiB: a number (MiB) or text with a unit (512MiB, 2GiB, 1T)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected a size such as 2GiB or 512MiB, not {value!r}")
    match = SIZE.match(str(value))
    if not match or match.group(2).lower() not in UNITS:
        raise ValueError(f"expected a size such as 2GiB or 512MiB (units MiB, GiB, TiB), not {value!r}")
    mib = int(match.group(1)) * UNITS[match.group(2).lower()]
    if mib > MAX_DISK_MIB:
        raise ValueError(f"{value} is more than {MAX_DISK_MIB // (1024 * 1024)} TiB")
    if mib < MIN_DISK_MIB:
        parts = ", ".join(f"{name} {size}" for name, size in LAYOUT_MIB.items())
        raise ValueError(f"{value} is too small: the disk layout needs at least {MIN_DISK_MIB} MiB ({parts})")
    return mib


def check_kernel_args(words: list[str]) -> list[str]:
    """Kernel command-line words: printable, no quotes the boot loaders' parsers would take (the media
    module's rule, which the IMAGER image applies to its --extra-kernel-arg too)."""
    from builder.scripts import media  # where it is used: model is on a no-op's path

    try:
        return media.check_kernel_args(words)
    except media.MediaError as exc:
        raise ValueError(str(exc)) from None


class ProfileOutput(_Model):
    kind: Literal["iso", "disk", "kernel", "initramfs", "cmdline"]
    format: Literal["raw", "qcow2", "vhd"] | None = None
    compression: Literal["none", "xz", "zstd"] = "none"
    size: int | None = None  # MiB, disks only

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return v if v is None else parse_size(v)

    @model_validator(mode="after")
    def _consistent(self) -> ProfileOutput:
        if self.kind != "disk":
            if self.format is not None:
                raise ValueError(f"format: only a disk has a format, not an output of kind {self.kind}")
            if self.size is not None:
                raise ValueError(f"size: only a disk has a size, not an output of kind {self.kind}")
        if self.kind in ("kernel", "cmdline") and self.compression != "none":
            raise ValueError(f"compression: an output of kind {self.kind} is not compressed")
        return self


class Customization(_Model):
    extra_kernel_args: list[str] = Field(default=[], alias="extraKernelArgs")
    meta: dict[int, str] = {}

    @field_validator("extra_kernel_args")
    @classmethod
    def _args(cls, v: list[str]) -> list[str]:
        return check_kernel_args(v)

    @field_validator("meta", mode="before")
    @classmethod
    def _meta(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        result: dict[int, str] = {}
        for key, value in v.items():
            try:
                number = meta.parse_key(key)
            except meta.MetaError as exc:
                raise ValueError(exc.message) from None
            if not isinstance(value, str):
                raise ValueError(f"META {meta.key_name(number)}: expected a string value (quote it), not {value!r}")
            if number in result:
                raise ValueError(f"META {meta.key_name(number)} is given twice")
            result[number] = value
        try:
            meta.encode({k: x.encode() for k, x in result.items()})
        except meta.MetaError as exc:
            raise ValueError(exc.message) from None
        return result


class _Loaded(_Model):
    """A model loaded from one project file: its name, the file (relative to the project), and the line of
    each key, for errors that name them."""

    _name: str = PrivateAttr(default="")
    _path: str = PrivateAttr(default="")
    _lines: dict[Any, int] = PrivateAttr(default_factory=dict)

    @property
    def name(self) -> str:
        return self._name

    @property
    def path(self) -> str:
        """The file, relative to the project root (profiles/metal.yaml)."""
        return self._path

    def where(self, *key: Any) -> str:
        line = yamlfile.line_of(self._lines, tuple(key))
        return f"{self._path}:{line}" if line else self._path


class Profile(_Loaded):
    platform: str = Field(pattern=NAME.pattern)
    arch: list[Literal["amd64", "arm64"]] = ["amd64", "arm64"]
    output: ProfileOutput
    bootloader: Literal["grub", "u-boot"] = "grub"
    customization: Customization = Customization()
    overlay: str | None = Field(default=None, pattern=NAME.pattern)

    _overlay: Overlay | None = PrivateAttr(default=None)

    @field_validator("arch", mode="before")
    @classmethod
    def _arch(cls, v: Any) -> Any:
        v = [v] if isinstance(v, str) else v
        if isinstance(v, list):
            if not v:
                raise ValueError("an empty list would build this profile for no architecture; leave 'arch' out")
            for index, item in enumerate(v):
                if item in v[:index]:
                    raise ValueError(f"{item!r} is listed twice")
        return v

    @model_validator(mode="after")
    def _supported(self) -> Profile:
        for arch in self.arch:
            if arch not in BOOTLOADERS[self.bootloader]:
                have = ", ".join(BOOTLOADERS[self.bootloader])
                raise ValueError(f"bootloader: {self.bootloader} does not boot {arch} (it boots {have}); "
                                 "limit the profile with arch:")
        if self.bootloader == "u-boot" and self.output.kind == "iso":
            raise ValueError("bootloader: u-boot boots disks (extlinux.conf); an ISO boots with grub")
        return self

    def firmware(self, arch: str, flavor_suffix: str = "") -> list[tuple[Asset, str]]:
        """The overlay's firmware assets and their files in out/, published beside the image."""
        if self._overlay is None:
            return []
        return [(asset, self.firmware_name(asset, arch, flavor_suffix)) for asset in self._overlay.assets
                if asset.to.startswith("firmware/")]

    def output_name(self, arch: str, flavor_suffix: str = "") -> str:
        """The file in out/: Talos's names (metal-amd64.iso, metal-amd64.raw.zst, cmdline-metal-amd64)."""
        base = self.base_name(arch, flavor_suffix)
        out = self.output
        if out.kind == "iso":
            name = f"{base}.iso"
        elif out.kind == "disk":
            name = f"{base}.{out.format or 'raw'}"
        elif out.kind == "initramfs":
            name = f"initramfs-{base}.xz"
            return name  # already compressed; compression none only
        else:
            name = f"{out.kind}-{base}"
        return name + EXTENSIONS[out.compression]

    def base_name(self, arch: str, flavor_suffix: str = "") -> str:
        """metal-amd64; with an overlay metal-arm64-qemu-uboot; with a flavor ...-debug."""
        return f"{self.platform}-{arch}" + (f"-{self.overlay}" if self.overlay else "") + flavor_suffix

    def firmware_name(self, asset: Asset, arch: str, flavor_suffix: str = "") -> str:
        """A firmware asset's file in out/: metal-arm64-qemu-uboot-u-boot.bin."""
        return f"{self.base_name(arch, flavor_suffix)}-{PurePosixPath(asset.to).name}"

    @property
    def applied(self) -> Overlay | None:
        """The overlay this profile applies, loaded."""
        return self._overlay

    @property
    def disk_mib(self) -> int:
        return self.output.size or 1024


class Asset(_Model):
    """A board file an overlay brings: a file of the overlay's directory (``file``) or of the IMAGER image
    (``imager``, e.g. Debian's U-Boot build), put ``to`` efi/PATH (into the EFI partition) or firmware/NAME
    (published beside the image: what the machine boots first, e.g. QEMU's -bios)."""

    file: str | None = None
    imager: str | None = None
    to: str

    @field_validator("file")
    @classmethod
    def _file(cls, v: str | None) -> str | None:
        if v is not None and (PurePosixPath(v).is_absolute() or ".." in PurePosixPath(v).parts or not v.strip()):
            raise ValueError(f"a file of the overlay's directory, by a relative path without '..', not {v!r}")
        return v

    @field_validator("imager")
    @classmethod
    def _imager(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or ".." in PurePosixPath(v).parts):
            raise ValueError(f"an absolute path in the IMAGER image without '..', not {v!r}")
        return v

    @field_validator("to")
    @classmethod
    def _to(cls, v: str) -> str:
        where, _, rest = v.partition("/")
        path = PurePosixPath(rest)
        if where not in ("efi", "firmware") or not rest or ".." in path.parts or path.is_absolute():
            raise ValueError(f"expected efi/PATH (into the EFI partition) or firmware/NAME (beside the image), "
                             f"not {v!r}")
        if where == "firmware" and len(path.parts) != 1:
            raise ValueError(f"firmware/NAME is one file name, not {v!r}")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> Asset:
        if (self.file is None) == (self.imager is None):
            raise ValueError("an asset names exactly one of 'file' (in the overlay) or 'imager' (in the IMAGER image)")
        return self


class Overlay(_Loaded):
    """overlays/NAME/overlay.yaml: what a board needs (seed section 12): its files, its boot loader, extra
    kernel arguments, and a profile fragment (defaults the profile's own keys override)."""

    description: str = ""
    arch: list[Literal["amd64", "arm64"]] = ["amd64", "arm64"]
    bootloader: Literal["grub", "u-boot"] | None = None
    extra_kernel_args: list[str] = Field(default=[], alias="extraKernelArgs")
    assets: list[Asset] = []
    profile: dict[str, Any] = {}

    @field_validator("extra_kernel_args")
    @classmethod
    def _args(cls, v: list[str]) -> list[str]:
        return check_kernel_args(v)

    @field_validator("profile")
    @classmethod
    def _fragment(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in ("overlay", "arch", "platform"):
            if key in v:
                raise ValueError(f"{key}: a profile fragment may not set it (the profile does)")
        return v

    @property
    def directory(self) -> str:
        return str(PurePosixPath(self._path).parent)


OVERLAY_MODELS: dict[tuple[str, ...], type[BaseModel]] = {(): Overlay}


def load_overlay(root: Path, name: str) -> Overlay:
    """overlays/NAME/overlay.yaml, validated, with every ``file`` asset present in the project."""
    from builder.model.recipe import explain

    display = f"{OVERLAYS_DIR}/{name}/{OVERLAY_FILE}"
    path = root / display
    if not path.exists() and not path.is_symlink():
        there = sorted(p.parent.name for p in (root / OVERLAYS_DIR).glob(f"*/{OVERLAY_FILE}"))
        raise RecipeError(f"no overlay {name!r} ({display})", hint=f"overlays: {', '.join(there) or 'none'}")
    data, lines = yamlfile.load(yamlfile.read_text(path, display, root), display)
    if not isinstance(data, dict):
        raise RecipeError("an overlay must be a YAML mapping", where=f"{display}:1")
    try:
        overlay = Overlay.model_validate(data)
    except ValidationError as exc:
        raise explain(exc, lines, display, OVERLAY_MODELS) from None
    overlay._name, overlay._path, overlay._lines = name, display, lines
    for index, asset in enumerate(overlay.assets):
        if asset.file is None:
            continue
        target = root / overlay.directory / asset.file
        outside = files.link_out(root, target)
        if outside is not None:
            raise RecipeError(f"assets.{index}.file: {overlay.directory}/{asset.file} is a link out of the project "
                              f"(to {outside}); builder reads project files only",
                              where=overlay.where("assets", index, "file"))
        if not target.is_file():
            what = files.why_not_a_file(target) or "does not exist"
            raise RecipeError(f"assets.{index}.file: {overlay.directory}/{asset.file} {what}",
                              where=overlay.where("assets", index, "file"))
    return overlay


def _merged(fragment: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` over ``fragment``, mappings merged key by key."""
    result = dict(fragment)
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merged(result[key], value)
        else:
            result[key] = value
    return result


def load_profile(path: Path, display: str, root: Path | None = None) -> Profile:
    """One profile file, validated, with its overlay applied (its profile fragment as defaults, its boot
    loader); every problem a RecipeError naming the file and line."""
    from builder.model.recipe import explain  # the recipe loader's error wording, shared

    text = yamlfile.read_text(path, display, root)
    data, lines = yamlfile.load(text, display)
    if not isinstance(data, dict):
        raise RecipeError("a profile must be a YAML mapping", where=f"{display}:1")
    overlay = None
    if isinstance(data.get("overlay"), str) and root is not None and NAME.match(data["overlay"]):
        try:
            overlay = load_overlay(root, data["overlay"])
        except RecipeError as exc:
            if exc.where is None:  # the overlay does not exist: the profile's line names it
                exc.where = f"{display}:{yamlfile.line_of(lines, ('overlay',))}"
            raise
        arches = data.get("arch", overlay.arch)
        for arch in [arches] if isinstance(arches, str) else arches if isinstance(arches, list) else []:
            if arch not in overlay.arch:
                raise RecipeError(f"overlay {overlay.name} serves {', '.join(overlay.arch)}, not {arch}",
                                  where=f"{display}:{yamlfile.line_of(lines, ('arch',))}")
        data = _merged(overlay.profile, data)
        data.setdefault("arch", list(overlay.arch))  # the overlay's arches are the profile's default
        if overlay.bootloader and "bootloader" not in data:
            data["bootloader"] = overlay.bootloader
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise explain(exc, lines, display, MODELS) from None
    name = path.stem
    if not NAME.match(name):
        raise RecipeError(f"profile name {name!r} (the file name) must be lowercase letters, digits, '-' and '_'",
                          where=display)
    if profile.output.kind == "initramfs" and profile.output.compression not in ("none", "xz"):
        raise RecipeError("output.compression: an initramfs is xz-compressed already",
                          where=f"{display}:{yamlfile.line_of(lines, ('output', 'compression'))}")
    profile._name = name
    profile._path = display
    profile._lines = lines
    if overlay is not None:
        _apply(profile, overlay, lines, display)
    elif profile.bootloader == "u-boot":
        raise RecipeError("bootloader: u-boot needs an overlay that brings U-Boot (overlay: NAME, "
                          "overlays/NAME/overlay.yaml with a firmware/ asset)",
                          where=f"{display}:{yamlfile.line_of(lines, ('bootloader',))}")
    return profile


def _apply(profile: Profile, overlay: Overlay, lines: dict[Any, int], display: str) -> None:
    where = f"{display}:{yamlfile.line_of(lines, ('overlay',))}"
    if profile.bootloader == "u-boot" and not any(a.to.startswith("firmware/") for a in overlay.assets):
        raise RecipeError(f"bootloader u-boot: overlay {overlay.name} brings no firmware/ asset (U-Boot)",
                          where=where)
    if profile.output.kind != "disk" and overlay.assets:
        raise RecipeError(f"overlay {overlay.name} brings board files, which go onto a disk, not an output of "
                          f"kind {profile.output.kind}", where=where)
    profile._overlay = overlay


MODELS: dict[tuple[str, ...], type[BaseModel]] = {
    (): Profile, ("output",): ProfileOutput, ("customization",): Customization,
}


def find_profiles(root: Path) -> list[Path]:
    """profiles/*.yaml under the project ``root``, sorted; a link out of the project or a non-file is an
    error naming it."""
    directory = root / PROFILES_DIR
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("*.yaml")):
        display = path.relative_to(root).as_posix()
        outside = files.link_out(root, path)
        if outside is not None:
            raise RecipeError(f"a link out of the project (to {outside}); builder reads project files only",
                              where=display)
        if not path.is_file():
            raise RecipeError("not a regular file (a profile is a YAML text file)", where=display)
        found.append(path)
    return found


def load_profiles(root: Path) -> list[Profile]:
    profiles = [load_profile(path, path.relative_to(root).as_posix(), root) for path in find_profiles(root)]
    made: dict[str, Profile] = {}
    for profile in profiles:
        for arch in profile.arch:
            for name in (profile.output_name(arch), *(name for _, name in profile.firmware(arch))):
                if name not in made:
                    made[name] = profile
                    continue
                raise RecipeError(f"out/{name} would be made by {made[name].path} too; give one another platform",
                                  where=profile.where("platform"))
    return profiles
