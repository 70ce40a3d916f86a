"""recipes/kernel-build/kconfig-drift on a small Kconfig tree: every kind of drift is named with where it was
asked, what it depends on, and the value Kconfig chose; the fragment's problem comes first."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "recipes" / "kernel-build" / "kconfig-drift"

KCONFIG = """\
config A
\tbool "a"

config B
\ttristate "b"
\tdepends on A && \\
\t  PCI

config PCI
\tbool "pci"

if A
config C
\tbool "c"
endif

menu "things"
\tdepends on PCI
config D
\tbool "d"
endmenu

source "arch/x86/Kconfig"
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "linux"
    (root / "arch" / "x86").mkdir(parents=True)
    (root / "arch" / "arm64").mkdir(parents=True)
    (root / "Kconfig").write_text(KCONFIG)
    (root / "arch" / "x86" / "Kconfig").write_text('config X86\n\tdef_bool y\n')
    (root / "arch" / "arm64" / "Kconfig").write_text('config ARM64_ONLY\n\tbool "arm64 only"\n')
    (root / "arch" / "Kconfig").write_text('config HAVE_THING\n\tbool\n')
    return root


def drift(tree: Path, *files: tuple[str, str], normalized: bool = True, got: str) -> tuple[int, str, str]:
    """Run the script in ``tree`` with .config = ``got`` and (label, text) files in merge order."""
    (tree / ".config").write_text(got)
    pairs = []
    for index, (label, text) in enumerate(files):
        path = tree.parent / f"asked-{index}"
        path.write_text(text)
        pairs.append(f"{label}={path}")
    work = tree.parent / "work"
    work.mkdir(exist_ok=True)
    argv = ["bash", str(SCRIPT), *(["--normalized"] if normalized else []), "x86", *pairs]
    result = subprocess.run(argv, cwd=tree, capture_output=True, text=True, env={"KCONFIG_DRIFT_DIR": str(work),
                            "PATH": "/usr/bin:/bin"}, check=False)
    assert result.returncode in (0, 1), result.stderr
    summary = (work / "kconfig-drift.summary").read_text() if result.returncode else ""
    report = (work / "kconfig-drift.txt").read_text() if result.returncode else ""
    return result.returncode, summary.strip(), report


CONFIG = "CONFIG_A=y\nCONFIG_PCI=y\nCONFIG_B=m\nCONFIG_X86=y\n"


def test_a_normalized_config_and_fragments_it_already_holds_are_no_drift(tree: Path) -> None:
    code, _, _ = drift(tree, ("config", CONFIG), ("frag", "CONFIG_B=m\n# CONFIG_C is not set\n"), got=CONFIG)
    assert code == 0


def test_each_kind_is_named_with_where_it_was_asked(tree: Path) -> None:
    code, summary, report = drift(
        tree, ("config", "CONFIG_A=y\n# CONFIG_PCI is not set\nCONFIG_X86=y\n"),
        ("fragments/f.config", "CONFIG_NOPE=y\nCONFIG_B=m\nCONFIG_ARM64_ONLY=y\nCONFIG_A=y\n"),
        got="CONFIG_A=y\nCONFIG_X86=y\nCONFIG_HAVE_THING=y\n")
    assert code == 1
    assert summary.startswith("2 not in this kernel, 1 dependency unmet, 1 added by olddefconfig; first: "
                              "CONFIG_NOPE=y (fragments/f.config:1): not in this kernel"), summary
    assert "CONFIG_NOPE=y" in report and "CONFIG_ARM64_ONLY=y" in report  # another arch's symbol is not here
    unmet = next(line for line in report.splitlines() if line.strip().startswith("CONFIG_B=m"))
    assert "fragments/f.config:2" in unmet
    assert "depends on (A && PCI)  [A=y PCI=n]" in unmet  # a continued line, and what each symbol is now
    assert "## added by olddefconfig" in report and "CONFIG_HAVE_THING=y" in report


def test_an_if_block_is_a_dependency_and_a_changed_value_says_what_kconfig_chose(tree: Path) -> None:
    code, summary, report = drift(tree, ("config", "# CONFIG_A is not set\nCONFIG_PCI=y\nCONFIG_X86=y\n"),
                                  ("frag", "CONFIG_C=y\nCONFIG_PCI=m\n"),
                                  got="CONFIG_PCI=y\nCONFIG_X86=y\n")
    assert code == 1
    assert "CONFIG_C=y" in report and "depends on (A)  [A=n]" in report
    assert "CONFIG_PCI=m -> y" in report
    assert "1 dependency unmet, 1 value changed" in summary


def test_a_committed_line_a_fragment_overrides_is_not_normalized(tree: Path) -> None:
    code, summary, report = drift(tree, ("kernel-configs/config-amd64", "# CONFIG_A is not set\nCONFIG_X86=y\n"),
                                  ("frag", "CONFIG_A=y\n"), got="CONFIG_A=y\nCONFIG_X86=y\n")
    assert code == 1
    assert summary.startswith("1 overridden by a fragment; first: # CONFIG_A is not set -> CONFIG_A=y "
                              "(kernel-configs/config-amd64:1 (fragment: frag:1))"), summary


def test_on_a_flavor_only_what_the_flavor_asks_is_checked(tree: Path) -> None:
    base = "CONFIG_A=y\nCONFIG_PCI=y\nCONFIG_X86=y\n"
    code, _, _ = drift(tree, ("normalized", base), ("flavors/x.config", "CONFIG_B=y\n"), normalized=False,
                       got=base + "CONFIG_B=y\nCONFIG_HAVE_THING=y\n")
    assert code == 0  # what olddefconfig adds for the flavor, and the base, are not the flavor's drift
    code, summary, _ = drift(tree, ("normalized", base), ("flavors/x.config", "CONFIG_D=y\nCONFIG_B=m\n"),
                             normalized=False, got="CONFIG_A=y\nCONFIG_X86=y\nCONFIG_B=m\n")
    assert code == 1
    assert summary == "1 value changed; first: CONFIG_D=y -> not set (flavors/x.config:1): value changed"
