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
      meta: {0x0a: "..."}        # written into the disk's META partition (builder/meta.py)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from builder import meta, yamlfile
from builder.errors import RecipeError

PROFILES_DIR = "profiles"
ARCHES = ("amd64", "arm64")
KINDS = ("iso", "disk", "kernel", "initramfs", "cmdline")
FORMATS = ("raw", "qcow2", "vhd")
COMPRESSIONS = ("none", "xz", "zstd")
EXTENSIONS = {"xz": ".xz", "zstd": ".zst", "none": ""}
# Which firmware each boot loader serves, per architecture (what the tests boot).
BOOTLOADERS: dict[str, dict[str, tuple[str, ...]]] = {
    "grub": {"amd64": ("bios", "uefi"), "arm64": ("uefi",)},
}
# The disk layout (builder/scripts/images.sh, docs/boot-media.md): 1 MiB for the GPT and alignment, EFI
# 100 MiB, BIOS boot 1 MiB, META 1 MiB, and the backup GPT in the last MiB.
LAYOUT_MIB = {"gpt": 1, "EFI": 100, "BIOS": 1, "META": 1, "backup gpt": 1}
MIN_DISK_MIB = sum(LAYOUT_MIB.values())
MAX_DISK_MIB = 2 * 1024 * 1024  # 2 TiB: a larger image is a typo, and would fill the disk before failing
UNITS = {"": 1, "m": 1, "mi": 1, "mib": 1, "g": 1024, "gi": 1024, "gib": 1024, "t": 1024 * 1024,
         "ti": 1024 * 1024, "tib": 1024 * 1024}
SIZE = re.compile(r"^\s*([0-9]{1,9})\s*([a-zA-Z]*)\s*$")
MAX_CMDLINE = 2048  # COMMAND_LINE_SIZE on x86 and arm64, with its terminating NUL
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
    """Kernel command-line words: printable, no quotes the boot loaders' parsers would take."""
    for word in words:
        bad = next((c for c in word if ord(c) < 32 or ord(c) == 127), None)
        if bad is not None:
            raise ValueError(f"{word!r} has a control character ({bad!r})")
        if not word.strip() or any(c.isspace() for c in word):
            raise ValueError(f"{word!r} is not one word; give each argument on its own")
        if '"' in word:
            raise ValueError(f"{word!r} has a '\"', which the kernel's command-line parser takes as quoting")
    return words


class Output(_Model):
    kind: Literal["iso", "disk", "kernel", "initramfs", "cmdline"]
    format: Literal["raw", "qcow2", "vhd"] | None = None
    compression: Literal["none", "xz", "zstd"] = "none"
    size: int | None = None  # MiB, disks only

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return v if v is None else parse_size(v)

    @model_validator(mode="after")
    def _consistent(self) -> Output:
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


class Profile(_Model):
    platform: str = Field(pattern=NAME.pattern)
    arch: list[Literal["amd64", "arm64"]] = ["amd64", "arm64"]
    output: Output
    bootloader: Literal["grub"] = "grub"
    customization: Customization = Customization()

    _name: str = PrivateAttr(default="")
    _path: str = PrivateAttr(default="")
    _lines: dict[Any, int] = PrivateAttr(default_factory=dict)

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
                raise ValueError(f"bootloader: {self.bootloader} does not boot {arch} (it boots {have})")
        return self

    @property
    def name(self) -> str:
        return self._name

    @property
    def path(self) -> str:
        """The profile file, relative to the project root (profiles/metal.yaml)."""
        return self._path

    def where(self, *key: Any) -> str:
        line = yamlfile.line_of(self._lines, tuple(key))
        return f"{self._path}:{line}" if line else self._path

    def output_name(self, arch: str, flavor_suffix: str = "") -> str:
        """The file in out/: Talos's names (metal-amd64.iso, metal-amd64.raw.zst, cmdline-metal-amd64)."""
        base = f"{self.platform}-{arch}{flavor_suffix}"
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

    @property
    def disk_mib(self) -> int:
        return self.output.size or 1024


def load_profile(path: Path, display: str) -> Profile:
    """One profile file, validated; every problem a RecipeError naming the file and line."""
    from builder.recipe import explain  # the recipe loader's error wording, shared

    text = yamlfile.read_text(path, display)
    data, lines = yamlfile.load(text, display)
    if not isinstance(data, dict):
        raise RecipeError("a profile must be a YAML mapping", where=f"{display}:1")
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
    return profile


MODELS: dict[tuple[str, ...], type[BaseModel]] = {
    (): Profile, ("output",): Output, ("customization",): Customization,
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
        if not path.is_file():
            raise RecipeError("not a regular file (a profile is a YAML text file)", where=display)
        if not path.resolve().is_relative_to(root.resolve()):
            raise RecipeError(f"a link out of the project (to {path.resolve()})", where=display)
        found.append(path)
    return found


def load_profiles(root: Path) -> list[Profile]:
    profiles = [load_profile(path, path.relative_to(root).as_posix()) for path in find_profiles(root)]
    made: dict[str, Profile] = {}
    for profile in profiles:
        for arch in profile.arch:
            name = profile.output_name(arch)
            if name in made:
                raise RecipeError(f"out/{name} would be made by {made[name].path} too; give one another platform",
                                  where=profile.where("platform"))
            made[name] = profile
    return profiles
