"""Integration cases as data (bldr's testdata, ours): tests/cases/<name>/ holds a small recipe tree and a
case.yaml of steps with their expectations. Each case runs in a scratch copy, once per BuildKit path.

A step is one of:
  doit: [words]        run doit in the case's project      builder: [words]  run the builder command
  remove: path         delete a file of the project        write: {path: text}  (over)write files
and, after doit/builder: exit (default 0), ran / skipped (task labels), output / not_output (regex over
all output), error (regex over the one-line error), files ({path: regex over its text}), out_listing
(every file under out/, sorted).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ROOT, Result, builder, doit

pytestmark = [pytest.mark.build]
CASES = Path(__file__).resolve().parents[1] / "cases"
STEP_KEYS = {"doit", "builder", "remove", "write", "exit", "ran", "skipped", "output", "not_output", "error",
             "files", "out_listing"}


def cases() -> list[Any]:
    return [pytest.param(path, id=path.name) for path in sorted(CASES.iterdir()) if (path / "case.yaml").is_file()]


def check(step: dict[str, Any], result: Result, project: Path, backend: str) -> None:
    where = f"step {step}: "
    assert "Traceback" not in result.text, where + result.text[-3000:]
    assert result.code == step.get("exit", 0), where + result.text[-3000:]
    for task in step.get("ran", []):
        assert result.ran(task), where + f"{task} did not run\n" + result.stdout
    for task in step.get("skipped", []):
        assert result.skipped(task), where + f"{task} was not up to date\n" + result.stdout
    if "output" in step:
        assert re.search(step["output"], result.text), where + result.text[-3000:]
    if "not_output" in step:
        assert not re.search(step["not_output"], result.text), where + result.text[-3000:]
    if "error" in step:
        assert re.search(step["error"], result.last_line()), where + result.last_line()
    for rel, pattern in (step.get("files") or {}).items():
        assert re.search(pattern, (project / rel).read_text()), where + f"{rel}:\n{(project / rel).read_text()}"
    if "out_listing" in step:
        out = project / "out"
        listing = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
        assert listing == sorted(step["out_listing"]), where + str(listing)


@pytest.mark.parametrize("case", cases())
def test_case(case: Path, backend: str, tmp_path: Path) -> None:
    spec = yaml.safe_load((case / "case.yaml").read_text())
    project = tmp_path / case.name
    shutil.copytree(case, project, ignore=shutil.ignore_patterns("case.yaml"))
    shutil.copy(ROOT / "dodo.py", project / "dodo.py")
    env = {"BACKEND": backend}
    for step in spec["steps"]:
        unknown = set(step) - STEP_KEYS
        assert not unknown, f"{case.name}/case.yaml: unknown step keys {unknown}"
        if "remove" in step:
            (project / step["remove"]).unlink()
        elif "write" in step:
            for rel, text in step["write"].items():
                (project / rel).write_text(text)
        elif "doit" in step:
            check(step, doit(project, *step["doit"], f"BACKEND={backend}", timeout=900), project, backend)
        elif "builder" in step:
            check(step, builder(project, *step["builder"], env=env), project, backend)
