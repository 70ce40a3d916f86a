"""setup.sh's awk and builder/model/variables.py (python-debian) read the host's apt sources alike: for each file,
the mirror setup.sh would add trixie's docker-buildx from is the one builder takes for the toolchain."""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from builder.model.aptsources import AptSources

from .test_variables import DEB822, TRIXIE_DEB822

SETUP = Path(__file__).resolve().parents[2] / "setup.sh"
SCRIPTS = dict(re.findall(r"^(LIST_AWK|DEB822_AWK)='(.*?)'$", SETUP.read_text(), re.MULTILINE | re.DOTALL))

FOLDED = """\
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
enabled: No

TYPES: deb
# a comment between fields
URIS: http://mirror.example/debian/
SUITES: bookworm-updates
 bookworm
COMPONENTS: contrib
 main
"""

ONE_LINE = """\
deb-src http://src-only.example/debian bookworm main
# deb http://commented.example/debian bookworm main
deb cdrom:[Debian 12]/ bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://mirror.example/debian/ bookworm main contrib
deb http://updates.example/debian bookworm-updates non-free
"""


def _awk(file: Path, suite: str) -> str | None:
    script = SCRIPTS["DEB822_AWK" if file.suffix == ".sources" else "LIST_AWK"]
    done = subprocess.run(["awk", "-v", f"suite={suite}", script, str(file)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() or None


def test_setup_sh_holds_both_scripts() -> None:
    assert set(SCRIPTS) == {"LIST_AWK", "DEB822_AWK"}


M, SEC = "http://mirror.example/debian", "http://mirror.example/debian-security"


# suite -> (setup.sh's awk, builder's AptSources.mirror): the same entry, except that only builder falls back from a
# release suite with no entry of its own to another release's archive (a Debian 13 host asked for bookworm)
@pytest.mark.parametrize("name, text, expected", [
    ("debian.sources", DEB822, {"bookworm": (M, M), "bookworm-updates": (M, M), "trixie": (None, M),
                                "trixie-security": (None, None)}),
    ("debian.sources", TRIXIE_DEB822, {"bookworm": (None, M), "bookworm-updates": (None, None), "trixie": (M, M),
                                       "trixie-security": (SEC, SEC)}),
    ("folded.sources", FOLDED, {"bookworm": (M, M), "bookworm-updates": (M, M), "trixie": (None, M),
                                "trixie-security": (None, None)}),
    ("sources.list", ONE_LINE, {"bookworm": (M, M), "bookworm-updates": (None, None), "trixie": (None, M),
                                "trixie-security": (None, None)}),
], ids=["deb822", "trixie-deb822", "folded-deb822", "one-line"])
def test_awk_and_python_debian_find_the_same_mirror(tmp_path: Path, name: str, text: str,
                                                   expected: dict[str, tuple[str | None, str | None]]) -> None:
    file = tmp_path / name
    file.write_text(textwrap.dedent(text))
    assert {suite: (_awk(file, suite), AptSources.read((file,)).mirror(suite)) for suite in expected} == expected
