"""Where a project's files go, set in one place: out/ (OUT_DIR), the build state (STATE_DIR, default
.builder/) and doit's database. No other module spells these names.

`Locations.of` is pure (paths only); `check` asks the file system, on the host, before any build.
doit's database describes one out/: the default out/ keeps ``.doit.db`` at the project root (where doit
users expect it), any other OUT_DIR gets its own under the state directory, so a build into a scratch
OUT_DIR (an auditor's rebuild) neither reads nor changes what the default out/ was built from.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from builder.core.errors import BuildError

DEFAULT_OUT = "out"
DEFAULT_STATE = ".builder"
DEP_FILE = ".doit.db"


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


@dataclass(frozen=True)
class Locations:
    root: Path
    out: Path
    state: Path

    @classmethod
    def of(cls, root: Path, out_dir: str | None = None, state_dir: str | None = None) -> Locations:
        """The places of project ``root`` for OUT_DIR / STATE_DIR as given (None: the defaults); a place
        that cannot work (out/ holding the project or its state, state inside out/) is a BuildError."""
        root = Path(os.path.abspath(root))
        out = Path(os.path.abspath(root / (out_dir or DEFAULT_OUT)))
        state = Path(os.path.abspath(root / (state_dir or DEFAULT_STATE)))
        if _inside(root, out):
            raise BuildError(f"{out} holds the project; a publish replaces out/ whole",
                             where="OUT_DIR", hint="a directory of its own, e.g. OUT_DIR=out or OUT_DIR=/tmp/out")
        if _inside(out, state):
            raise BuildError(f"{out} is inside the build state {state}", where="OUT_DIR",
                             hint="artifacts and build state are kept apart: a directory outside STATE_DIR")
        if _inside(state, out):
            raise BuildError(f"{state} is inside out/ ({out}); out/ holds only artifacts", where="STATE_DIR",
                             hint="a directory outside OUT_DIR")
        if _inside(root / "recipes", state) or _inside(state, root / "recipes"):
            raise BuildError(f"{state} overlaps the project's recipes/", where="STATE_DIR",
                             hint="a directory of its own, e.g. the default .builder")
        return cls(root, out, state)

    @property
    def default_out(self) -> bool:
        return self.out == self.root / DEFAULT_OUT

    @property
    def dep_file(self) -> Path:
        """doit's database for this out/."""
        if self.default_out:
            return self.root / DEP_FILE
        return self.state / "outs" / hashlib.sha256(os.fsencode(self.out)).hexdigest()[:16] / DEP_FILE

    @property
    def dry_run(self) -> Path:
        """A dry run's scratch space: its database (it remembers nothing from one dry run to the next) and
        the contexts it renders."""
        return self.state / "dry-run"

    @property
    def run_lock(self) -> Path:
        return self.state / "run.lock"

    @property
    def tmp(self) -> Path:
        """Scratch space of running builds (contexts, exports): what a killed run left is removed under the
        run lock."""
        return self.state / "tmp"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def reports(self) -> Path:
        return self.state / "reports"

    @property
    def memo(self) -> Path:
        return self.state / "plan-memo.json"

    def shown(self, path: Path | str) -> str:
        """A path as the user knows it: relative to the project when inside it."""
        text = os.fsdecode(path)
        try:
            return str(Path(text).relative_to(self.root))
        except ValueError:
            return text

    def check(self) -> None:
        """On the host, before any build: the state directory is a directory, or absent. (out/ has its
        own, fuller check: outputs.check_out_dir.)"""
        if (self.state.exists() or self.state.is_symlink()) and not self.state.is_dir():
            raise BuildError(f"{self.shown(self.state)} is not a directory; it holds build state (logs, locks, "
                             "the plan memo)", hint="move it aside")
