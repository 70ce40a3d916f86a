"""The `builder` command: mistakes are one `error:` line, never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from builder.cli.commands import main
from builder.resolve.project import Project

MakeProject = Callable[..., Project]

GOOD = {
    "recipes/a/pkg.yaml": "name: a\nvariant: scratch\nfinalize:\n  - from: /\noutputs:\n  - a-{{ ARCH }}\n",
    "recipes/b/pkg.yaml": "name: b\nvariant: scratch\ndependencies:\n  - stage: a\nfinalize:\n  - from: /\n",
}


@pytest.fixture
def project_dir(make_project: MakeProject, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """project_dir(files): a tmp project with those files, as the current directory."""

    def make(files: dict[str, str]) -> Path:
        root = make_project(files).root
        monkeypatch.chdir(root)
        return root

    return make


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def assert_one_error_line(result: Result, status: int = 1) -> str:
    assert result.exit_code == status, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_validate_a_malformed_recipe_prints_one_error_line_with_file_and_line(
    project_dir: Callable[..., Path],
) -> None:
    project_dir({**GOOD, "recipes/c/pkg.yaml": "name: c\nsteps: [\n  build: make\n"})
    line = assert_one_error_line(invoke("validate"))
    assert line.startswith("error: recipes/c/pkg.yaml:")
    assert "malformed YAML" in line


def test_validate_an_unknown_key_names_the_file_line_and_key(project_dir: Callable[..., Path]) -> None:
    project_dir({**GOOD, "recipes/c/pkg.yaml": "name: c\nvariant: scratch\ncolour: red\n"})
    line = assert_one_error_line(invoke("validate"))
    assert line.startswith("error: recipes/c/pkg.yaml:3: unknown key 'colour'")


def test_validate_a_good_project_reports_each_platform(project_dir: Callable[..., Path]) -> None:
    project_dir(GOOD)
    result = invoke("validate")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["linux/amd64: 2 recipes OK (a, b)", "linux/arm64: 2 recipes OK (a, b)"]


def test_validate_checks_project_files_too(project_dir: Callable[..., Path]) -> None:
    project_dir({**GOOD, "recipes/c/pkg.yaml": "name: c\nfiles:\n  - src: configs/x-{{ ARCH }}\n    dest: x\n"
                                               "finalize:\n  - from: /\noutputs:\n  - c\n"})
    line = assert_one_error_line(invoke("validate", "--platform", "arm64"))
    assert line == "error: recipes/c/pkg.yaml:3: files.0.src: no such file 'configs/x-arm64' in the project"


def test_an_unknown_platform_is_one_error_line(project_dir: Callable[..., Path]) -> None:
    project_dir(GOOD)
    assert "unknown platform 'sparc'" in assert_one_error_line(invoke("validate", "--platform", "sparc"))


def test_a_variable_without_a_value_is_one_error_line(project_dir: Callable[..., Path]) -> None:
    project_dir(GOOD)
    assert "expected NAME=value, not 'TOOLCHAIN'" in assert_one_error_line(invoke("validate", "-v", "TOOLCHAIN"))


def test_outside_a_project_the_error_says_what_a_project_looks_like(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert "expected a directory with recipes/ and dodo.py" in assert_one_error_line(invoke("validate"))


def test_graph_shows_each_recipe_with_its_dependencies_and_outputs(project_dir: Callable[..., Path]) -> None:
    project_dir(GOOD)
    result = invoke("graph", "--platform", "linux/arm64")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["a  => out/a-arm64", "b <- a"]


def test_diffsigs_names_each_input_that_differs_between_two_signatures(tmp_path: Path) -> None:
    import json

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"inputs": {"Dockerfile": "1", "kernel/files/config": "2", "toolchain t": "p:3"}}))
    b.write_text(json.dumps({"inputs": {"Dockerfile": "1", "kernel/files/config": "9", "image x": "4"}}))
    result = invoke("diffsigs", str(a), str(b))
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "new input: image x", "changed: kernel/files/config  2 -> 9", "input removed: toolchain t"]
    assert invoke("diffsigs", str(a), str(a)).output == "same inputs (3)\n"


def test_diffsigs_of_a_file_that_is_no_signature_is_one_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert assert_one_error_line(invoke("diffsigs", str(bad), str(bad))) == (
        f"error: {bad}: not an input signature (expected JSON with an 'inputs' mapping)")


def test_a_misspelled_variable_names_the_closest_known_one(project_dir: Callable[..., Path]) -> None:
    project_dir(GOOD)
    assert assert_one_error_line(invoke("graph", "-v", "PLATFROM=linux/arm64")) == (
        "error: command line: unknown variable PLATFROM=linux/arm64 (did you mean PLATFORM?)")


def test_a_variable_nothing_uses_is_an_error(project_dir: Callable[..., Path]) -> None:
    project_dir(GOOD)
    assert assert_one_error_line(invoke("validate", "-v", "ZZZ=1")) == (
        "error: command line: unknown variable ZZZ=1 (no recipe, vars.yaml or setting uses it)")


def test_variables_a_recipe_uses_or_a_vars_file_defines_are_known(project_dir: Callable[..., Path]) -> None:
    project_dir({**GOOD, "recipes/a/vars.yaml": "EDITION: x\n",
                 "recipes/c/pkg.yaml": "name: c\nvariant: scratch\ndescription: '{{ GREETING | default(1) }}'\n"})
    for word in ("EDITION=y", "GREETING=hi", "TOOLCHAIN=t:1", "NO_CACHE=1"):
        assert invoke("validate", "-v", word).exit_code == 0, word


# --- builder build: what it takes, said in its own words ---

AMD64_RUN = ("--platform", "linux/amd64")  # whatever this machine is
TARGETS = {
    "recipes/s/pkg.yaml": "name: s\nvariant: scratch\nfinalize:\n  - from: /\n",
    "recipes/k/pkg.yaml": ("name: k\nvariant: scratch\ndependencies:\n  - stage: s\nfinalize:\n  - from: /\n"
                           "outputs:\n  - k-{{ ARCH }}\n"),
    "recipes/fw/pkg.yaml": ("name: fw\nvariant: scratch\nplatforms: [linux/arm64]\nfinalize:\n  - from: /\n"
                            "outputs:\n  - fw.bin\n"),
}


# builder build and doit take one path: the same message (each with its own way to ask), and status 2
BUILD_CASES = [
    (["nosuch"], "error: command line: unknown task 'nosuch' (known tasks: k)"),
    (["k:arm64"], "error: unknown target 'k:arm64'; known targets: k, k:amd64 (this run builds linux/amd64; for "
                  "arm64: TOOL k PLATFORM_WORDlinux/arm64)"),
    (["k:riscv64"], "error: unknown target 'k:riscv64'; known targets: k, k:amd64 (there is no platform riscv64; "
                    "the platforms are linux/amd64, linux/arm64)"),
    (["fw"], "error: recipe fw is not built for linux/amd64 (its platforms: linux/arm64) (TOOL fw "
             "PLATFORM_WORDlinux/arm64)"),
    (["s"], "error: recipe s has no outputs; nothing to build - it is a stage for k (TOOL k)"),
    (["k", "PLATFROM=linux/amd64"], "error: command line: unknown variable PLATFROM=linux/amd64 (did you mean "
                                    "PLATFORM?)"),
    (["k", "NO_CACHE=perhaps"], "error: NO_CACHE: 'perhaps' is not a flag; expected 1 or 0 (yes/no, true/false)"),
    (["k", "OUT_DIR=."], "error: OUT_DIR: PROJECT holds the project; a publish replaces out/ whole (a directory of "
                         "its own, e.g. OUT_DIR=out or OUT_DIR=/tmp/out)"),
]


@pytest.mark.parametrize(("words", "expect"), BUILD_CASES)
def test_builder_build_and_doit_refuse_a_bad_command_line_alike(project_dir: Callable[..., Path], words: list[str],
                                                                expect: str) -> None:
    root = project_dir(TARGETS)
    shutil.copy(Path(__file__).resolve().parents[2] / "dodo.py", root / "dodo.py")
    expect = expect.replace("PROJECT", str(root))
    targets = [w for w in words if "=" not in w]
    pairs = [arg for w in words if "=" in w for arg in ("-v", w)]
    built = invoke("build", *targets, *AMD64_RUN, *pairs)
    assert assert_one_error_line(built, status=2) == expect.replace("TOOL", "builder build").replace(
        "PLATFORM_WORD", "--platform ")
    environ = {k: v for k, v in os.environ.items() if k != "PLATFORM"}
    environ["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # this checkout's builder
    done = subprocess.run([sys.executable, "-m", "doit", *words, "PLATFORM=linux/amd64"], cwd=root, text=True,
                          capture_output=True, timeout=120, env=environ)
    assert (done.returncode, done.stderr.strip()) == (2, expect.replace("TOOL", "doit").replace(
        "PLATFORM_WORD", "PLATFORM="))
