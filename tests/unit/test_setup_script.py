"""setup.sh and the README's two commands: what CI runs is what the README says."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    """The commands of the README's "Two commands" block, without their comments."""
    section = ROOT.joinpath("README.md").read_text().split("## Two commands", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README.md: no ```sh block under '## Two commands'"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    commands = readme_commands()
    assert commands == ["./setup.sh && doit kernel initramfs", "./setup.sh && .venv/bin/python -m pytest"]
    ci = [line for line in ROOT.joinpath(".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == commands[1]


def test_the_tests_run_under_the_projects_venv_not_a_python3_from_path() -> None:
    """The test command names .venv's interpreter: Debian's python3 has no pytest (and may not get one)."""
    assert ".venv/bin/python -m pytest" in readme_commands()[1]
    assert ROOT.joinpath(".gitignore").read_text().splitlines().count("/.venv/") == 1


def test_setup_sh_parses() -> None:
    done = subprocess.run(["bash", "-n", str(ROOT / "setup.sh")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
