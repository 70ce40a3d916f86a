"""recipes/kernel-build/kconfig-drift on a small Kconfig tree: every kind of drift is named with where it was
asked, what it depends on, and the value Kconfig chose; the fragment's problem comes first. A symbol whose
dependencies hold but whose prompt is hidden is named with the condition that hid it and the default it took.
Each test runs under every awk found (mawk is the toolchain's, gawk a developer's)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "recipes" / "kernel-build" / "kconfig-drift"
AWKS = [name for name in ("mawk", "gawk") if shutil.which(name)] or ["awk"]

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

config EXTRAS
\tbool "extras"

config FOO
\tbool "foo"

config BAR
\tbool "bar"

menu "extras"
\tvisible if EXTRAS  # hides the prompts inside, drivers/Kconfig's too
\tdepends on A
source "drivers/Kconfig"
endmenu

config F
\tbool "f, if FOO" if FOO
\tdepends on A
\thelp
\t  depends on nothing: help text is not Kconfig,
\t  if indented like this, nor is
\t  endmenu

config G
\tbool
\tdefault y if BAR

comment "G is a comment's neighbour, not its symbol"
\tdepends on BAR

config H
\tbool
\tdefault BAR if FOO
\tdefault y

config CC_THING
\tbool "cc thing"
\tdepends on $(cc-option,-mfoo)

config TWICE
\tbool "twice"
\tdepends on FOO

source "arch/x86/Kconfig"
"""


def at(line: str) -> str:
    """Where ``line`` of the test tree's Kconfig is, as the report names it."""
    return f"Kconfig:{KCONFIG.splitlines().index(line) + 1}"


@pytest.fixture(params=AWKS)
def tree(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    awk = shutil.which(request.param)
    assert awk is not None
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "awk").symlink_to(awk)  # first on PATH: the awk the script runs
    root = tmp_path / "linux"
    (root / "arch" / "x86").mkdir(parents=True)
    (root / "arch" / "arm64").mkdir(parents=True)
    (root / "drivers").mkdir()
    (root / "Kconfig").write_text(KCONFIG)
    (root / "drivers" / "Kconfig").write_text('config E\n\tbool "e"\n\tdepends on PCI # a comment\n')
    (root / "arch" / "x86" / "Kconfig").write_text('config X86\n\tdef_bool y\nconfig TWICE\n\tbool "here too"\n'
                                                 '\tdepends on BAR\n')
    (root / "arch" / "arm64" / "Kconfig").write_text('config ARM64_ONLY\n\tbool "arm64 only"\n')
    (root / "arch" / "Kconfig").write_text('config HAVE_THING\n\tbool\n')  # sourced by nothing: read alone
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
                            "PATH": f"{tree.parent / 'bin'}:/usr/bin:/bin"}, check=False)
    assert result.returncode in (0, 1), result.stderr
    summary = (work / "kconfig-drift.summary").read_text() if result.returncode else ""
    report = (work / "kconfig-drift.txt").read_text() if result.returncode else ""
    return result.returncode, summary.strip(), report


def flavor(tree: Path, asked: str, got: str) -> tuple[int, str, str]:
    """``asked`` as a flavor merged on ``got`` (the base is not checked)."""
    return drift(tree, ("normalized", got), ("frag", asked), normalized=False, got=got)


def line_of(report: str, text: str) -> str:
    return next(line for line in report.splitlines() if line.strip().startswith(text))


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
    unmet = line_of(report, "CONFIG_B=m")
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
    assert code == 1  # D is in menu "things", which depends on PCI: off now
    assert summary == ("1 dependency unmet; first: CONFIG_D=y (flavors/x.config:1  depends on (PCI)  [PCI=n]): "
                       "dependency unmet")


def test_a_menus_visible_if_hides_the_prompts_of_the_files_it_sources(tree: Path) -> None:
    code, summary, report = flavor(tree, "CONFIG_E=y\n", got="CONFIG_A=y\nCONFIG_PCI=y\nCONFIG_X86=y\n")
    assert code == 1
    menu = at('menu "extras"')
    hid = f'frag:1  menu "extras" ({menu}) visible if EXTRAS  [EXTRAS=n]; default: n (no default line)'
    assert summary == f"1 hidden (default used); first: CONFIG_E=y ({hid}): hidden (default used)", summary
    assert "## hidden (no prompt visible: Kconfig used its default)" in report
    assert line_of(report, "CONFIG_E=y").endswith(hid)
    # the menu's own depends on holds for drivers/Kconfig too: that is a dependency, named alone
    code, summary, report = flavor(tree, "CONFIG_E=y\n", got="CONFIG_PCI=y\nCONFIG_X86=y\n")
    assert "1 dependency unmet" in summary
    assert line_of(report, "CONFIG_E=y").endswith("frag:1  depends on (A)  [A=n]")
    # all visible and its dependencies hold: Kconfig chose otherwise for another reason
    _, summary, _ = flavor(tree, "CONFIG_E=y\n", got="CONFIG_A=y\nCONFIG_PCI=y\nCONFIG_EXTRAS=y\nCONFIG_X86=y\n")
    assert summary == "1 value changed; first: CONFIG_E=y -> not set (frag:1): value changed"


def test_a_prompts_if_that_is_off_hides_it_and_help_text_is_not_read_as_kconfig(tree: Path) -> None:
    code, summary, report = flavor(tree, "CONFIG_F=y\n", got="CONFIG_A=y\nCONFIG_X86=y\n")
    assert code == 1
    assert "1 hidden (default used)" in summary, summary
    prompt = at('\tbool "f, if FOO" if FOO')  # an "if" in the prompt text is text
    assert line_of(report, "CONFIG_F=y").endswith(
        f"frag:1  prompt if FOO ({prompt})  [FOO=n]; default: n (no default line)")
    code, summary, report = flavor(tree, "CONFIG_F=y\n", got="CONFIG_FOO=y\nCONFIG_X86=y\n")
    assert line_of(report, "CONFIG_F=y").endswith("frag:1  depends on (A)  [A=n]")  # not (nothing), from the help


def test_a_symbol_without_a_prompt_names_the_default_it_took(tree: Path) -> None:
    code, summary, report = flavor(tree, "CONFIG_G=y\nCONFIG_H=y\n", got="CONFIG_FOO=y\nCONFIG_X86=y\n")
    assert code == 1
    assert summary.startswith(f"2 hidden (default used); first: CONFIG_G=y (frag:1  no prompt ({at('config G')}); "
                              "default: n (default y if BAR  [BAR=n] does not hold)): hidden (default used)"), summary
    assert line_of(report, "CONFIG_H=y").endswith(
        f"frag:2  no prompt ({at('config H')}); default: n (default BAR if FOO  [BAR=n FOO=y])")


def test_a_dependency_that_cannot_be_evaluated_says_so(tree: Path) -> None:
    _, summary, report = flavor(tree, "CONFIG_CC_THING=y\n", got="CONFIG_X86=y\n")
    assert "1 dependency unmet" in summary
    assert line_of(report, "CONFIG_CC_THING=y").endswith(
        "frag:1  depends on ($(cc-option,-mfoo))  (condition not evaluated)")


def test_a_symbol_defined_twice_is_off_only_when_each_definitions_dependencies_are(tree: Path) -> None:
    _, summary, report = flavor(tree, "CONFIG_TWICE=y\n", got="CONFIG_X86=y\n")
    assert "1 dependency unmet" in summary
    assert line_of(report, "CONFIG_TWICE=y").endswith("frag:1  depends on (FOO) || (BAR)  [FOO=n BAR=n]")
    _, summary, _ = flavor(tree, "CONFIG_TWICE=y\n", got="CONFIG_BAR=y\nCONFIG_X86=y\n")
    assert summary == "1 value changed; first: CONFIG_TWICE=y -> not set (frag:1): value changed"


def test_each_section_is_in_the_report_once(tree: Path) -> None:
    code, summary, report = drift(
        tree, ("config", "CONFIG_A=y\nCONFIG_PCI=y\nCONFIG_X86=y\n"),
        ("frag", "CONFIG_NOPE=y\nCONFIG_F=y\nCONFIG_G=y\nCONFIG_PCI=m\nCONFIG_A=m\n"),
        ("frag2", "CONFIG_B=m\nCONFIG_E=y\nCONFIG_CC_THING=y\n"),
        got="CONFIG_A=y\nCONFIG_X86=y\nCONFIG_HAVE_THING=y\nCONFIG_B=m\n")
    assert code == 1
    assert summary.startswith("1 not in this kernel, 2 dependency unmet, 2 hidden (default used), 2 value changed, "
                              "1 overridden by a fragment, 1 added by olddefconfig; first: "), summary
    headers = [line for line in report.splitlines() if line.startswith("## ")]
    assert len(headers) == len(set(headers)) == 6, report
    assert [header.split(" (")[0] for header in headers] == [
        "## not in this kernel", "## dependency unmet", "## hidden", "## value changed", "## overridden by a fragment",
        "## added by olddefconfig"]
    assert report.count("CONFIG_F=y") == 1 and report.count("CONFIG_NOPE=y") == 1


VALUES = 'CONFIG_M=m\nCONFIG_Y=y\nCONFIG_NUM=4\nCONFIG_HEXV=0x10\nCONFIG_STR="fast"\nCONFIG_X86=y\n'


@pytest.mark.parametrize(("condition", "holds"), [
    ("Y", True), ("M", True), ("!M", True), ("M = y", False), ("M=m && Y", True), ("!Y", False),
    ("UNSET || Y", True), ("!(Y || M)", False), ("UNSET && $(cc-option,-mfoo)", False),
    ("Y || $(cc-option,-mfoo)", True), ("Y && $(cc-option,-mfoo)", None), ("Y &&", None),
    ("NUM >= 3", True), ("NUM < 3", False), ("HEXV = 0x10", True), ('STR = "fast"', True),
    ('STR != "fast"', False), ("(Y && !UNSET) || M != m", True),
])
def test_conditions_are_evaluated_with_the_config_values(tree: Path, condition: str, holds: bool | None) -> None:
    """n=0 m=1 y=2; && the least, || the most, ! 2-x; absent is n; what is not evaluated is said."""
    (tree / "Kconfig").write_text('config M\n\ttristate "m"\nconfig Y\n\tbool "y"\nconfig NUM\n\tint "num"\n'
                                  'config HEXV\n\thex "hexv"\nconfig STR\n\tstring "str"\nconfig UNSET\n\tbool "u"\n'
                                  f'config P\n\tbool "p" if {condition}\nsource "arch/x86/Kconfig"\n')
    code, _, report = flavor(tree, "CONFIG_P=y\n", got=VALUES)
    assert code == 1
    line = line_of(report, "CONFIG_P=y")
    if holds is None:
        assert f"frag:1  prompt if {condition} (Kconfig:14)" in line, line
        assert line.endswith(": condition not evaluated") and "## value changed" in report, line
    elif holds:
        assert line.endswith("CONFIG_P=y -> not set                        frag:1"), line
    else:
        assert f"frag:1  prompt if {condition} (Kconfig:14)" in line and "## hidden" in report, line
