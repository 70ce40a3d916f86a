"""The plan memo: a no-op run gets the same answer as the full plan without parsing a recipe."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.core.platforms import AMD64
from builder.host import hashindex
from builder.host.hashindex import sha256_file
from builder.host.outputs import inputs_digest
from builder.model.aptsources import AptSources
from builder.resolve.project import Project
from builder.schedule import memo, tasks

from .test_render import FILES

MakeProject = Callable[..., Project]


def test_the_memo_check_gives_the_full_plans_inputs(make_project: MakeProject,
                                                     fake_engine: dict[str, str | None]) -> None:
    project = make_project(FILES)
    plan = project.plan("b", AMD64)
    check = memo.check_of(plan)
    assert memo.inputs_now(project.root, check, project.identities) == plan.inputs(project.identities)


def test_a_changed_project_file_is_seen_without_the_full_plan(make_project: MakeProject,
                                                              fake_engine: dict[str, str | None]) -> None:
    project = make_project(FILES)
    check = memo.check_of(project.plan("b", AMD64))
    before = inputs_digest(memo.inputs_now(project.root, check, project.identities) or {})
    (project.root / "configs/config-amd64").write_text("CONFIG_AMD64=m\n")
    after = memo.inputs_now(project.root, check, project.identities)
    assert after is not None and inputs_digest(after) != before
    fresh = make_project()
    assert after == fresh.plan("b", AMD64).inputs(fresh.identities)


def test_a_pattern_matching_other_files_needs_the_full_plan(make_project: MakeProject,
                                                            fake_engine: dict[str, str | None]) -> None:
    project = make_project(FILES)
    check = memo.check_of(project.plan("b", AMD64))
    (project.root / "patches").mkdir()
    (project.root / "patches/0001-new.patch").write_text("new\n")
    assert memo.inputs_now(project.root, check, project.identities) is None


def test_the_key_covers_recipes_words_and_the_epoch(tmp_path: Path, write_tree: Callable[..., Path]) -> None:
    write_tree(tmp_path, {"recipes/a/pkg.yaml": "name: a\n", "kernel-configs/x": "1\n"})
    none = AptSources()
    first = memo.key(tmp_path, {}, none, {})
    assert memo.key(tmp_path, {}, none, {}) == first
    assert memo.key(tmp_path, {"PLATFORM": "linux/arm64"}, none, {}) != first
    assert memo.key(tmp_path, {}, none, {"SOURCE_DATE_EPOCH": "1"}) != first
    assert memo.key(tmp_path, {}, AptSources.of("http://other.example/debian"), {}) != first  # DEBIAN_MIRROR's default
    (tmp_path / "kernel-configs/x").write_text("2\n")  # a project file: checked per task, not in the key
    assert memo.key(tmp_path, {}, none, {}) == first
    (tmp_path / "recipes/a/pkg.yaml").write_text("name: a\ndescription: x\n")
    assert memo.key(tmp_path, {}, none, {}) != first


SETTING_WORDS = [
    {}, {"REGISTRY_TIMEOUT": "7"}, {"FETCH_TIMEOUT": "9", "FETCH_STALL_TIMEOUT": "3"}, {"NO_CACHE": "1"},
    {"OUT_DIR": "elsewhere"}, {"STATE_DIR": "state"}, {"BACKEND": "engine"}, {"CACHE_FROM": "type=local,src=/c"},
]


@pytest.mark.parametrize("words", SETTING_WORDS)
def test_a_memo_hit_gives_the_tasks_a_miss_gives_for_every_setting(make_project: MakeProject,
                                                                   fake_engine: dict[str, str | None],
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   words: dict[str, str]) -> None:
    from builder.cli.doitglue import Session

    from .test_tasks import FILES as TASK_FILES

    root = make_project(TASK_FILES).root
    words = {"PLATFORM": "linux/amd64,linux/arm64", **words}
    miss = Session(root, words, command="list", environ={})
    full = miss.tasks()
    assert miss._project is not None  # the memo was empty: the full plan

    def no_parsing(*args: object, **kwargs: object) -> None:
        raise AssertionError("a memo hit parsed the recipes")

    monkeypatch.setattr(Project, "graph", no_parsing)
    hit = Session(root, words, command="list", environ={})
    again = hit.tasks()
    assert hit._project is None
    keys = ("basename", "name", "doc", "task_dep", "targets", "meta", "verbosity", "clean")
    assert [{k: t.get(k) for k in keys} for t in again] == [{k: t.get(k) for k in keys} for t in full]
    checks = [t["uptodate"][0] for t in again if t.get("uptodate")]  # type: ignore[index]
    assert checks and all(isinstance(c, tasks.UpToDate) for c in checks)
    fulls = [t["uptodate"][0] for t in full if t.get("uptodate")]  # type: ignore[index]
    for memo_check, full_check in zip(checks, fulls, strict=True):  # the same inputs, places and deadlines
        assert memo_check.check == full_check.check
        assert memo_check.locations == full_check.locations
        assert memo_check.identities.registry_seconds == full_check.identities.registry_seconds
        assert memo_check.identities.out_dir == full_check.identities.out_dir
    actions = [[(f.__name__, args[1:-1]) for f, args in t.get("actions", [])] for t in again]  # type: ignore[attr-defined]
    assert actions == [[(f.__name__, args[1:-1]) for f, args in t.get("actions", [])]  # type: ignore[attr-defined]
                       for t in full]  # the same actions; only whether the plans are rendered yet differs


def test_a_memo_tasks_check_reads_an_output_once_then_trusts_its_stat(make_project: MakeProject,
                                                                      fake_engine: dict[str, str | None],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from .test_tasks import FILES as TASK_FILES

    project = make_project(TASK_FILES)
    plan = project.plan("app", AMD64)
    project.out_dir.mkdir()
    out = project.out_dir / "app-amd64"
    out.write_bytes(b"app")
    os.utime(out, ns=(1_700_000_000 * 10**9,) * 2)  # built long enough ago not to be racy
    values = {"digest": plan.digest(plan.inputs(project.identities)), "outputs": {"app-amd64": sha256_file(out)}}
    from builder.cli.doitglue import Session

    Session(project.root, {}, command="list", environ={}).tasks()
    again = Session(project.root, {}, command="list", environ={}).tasks()
    (check,) = [t["uptodate"][0] for t in again if (t["basename"], t["name"]) == ("app", "amd64")]  # type: ignore[index]
    assert isinstance(check, tasks.UpToDate)
    read = hashindex.read
    reads: list[str] = []
    monkeypatch.setattr(hashindex, "read", lambda path: reads.append(str(path)) or read(path))
    assert [check(None, values) for _ in range(3)] == [True, True, True]
    assert [r for r in reads if r.startswith(str(project.out_dir))] == [str(out)]  # project files: read each time
    out.write_bytes(b"APP")
    assert check(None, values) is False


def test_a_memo_hit_that_must_build_shares_its_identities_and_stat_record_with_the_project(
        make_project: MakeProject, fake_engine: dict[str, str | None]) -> None:
    from builder.cli.doitglue import Session

    from .test_tasks import FILES as TASK_FILES

    root = make_project(TASK_FILES).root
    Session(root, {}, command="list", environ={}).tasks()  # a full plan: the memo is written
    hit = Session(root, {}, command="list", environ={})
    tasks_ = hit.tasks()
    assert hit._project is None
    check = next(t["uptodate"][0] for t in tasks_ if t.get("uptodate"))  # type: ignore[index]
    project = hit.project()  # what a task that must build loads
    assert project.identities is check.identities and project.hashes is check.hashes  # asked once per session
