""""Why did this rebuild?": input by input, against what the last build stored."""

from __future__ import annotations

from collections.abc import Callable

from builder.cli.why import Explanation, explain
from builder.core.platforms import AMD64
from builder.resolve.project import Project

from .test_render import FILES

MakeProject = Callable[..., Project]


def stored(project: Project, name: str = "b") -> dict[str, object]:
    plan = project.plan(name, AMD64)
    inputs = plan.inputs(project.identities)
    return {"digest": plan.digest(inputs), "inputs": inputs, "outputs": {}}


def test_a_task_never_built_says_so(make_project: MakeProject, fake_engine: dict[str, str | None]) -> None:
    project = make_project(FILES)
    verdict = explain(project.plan("b", AMD64), project, {})
    assert verdict == Explanation("b:amd64", False, ["never built here"])


def test_nothing_changed_is_up_to_date(make_project: MakeProject, fake_engine: dict[str, str | None]) -> None:
    project = make_project(FILES)
    assert explain(project.plan("b", AMD64), project, stored(project)) == Explanation("b:amd64", True, [])


def test_a_changed_project_file_is_named_by_its_project_path(make_project: MakeProject,
                                                             fake_engine: dict[str, str | None]) -> None:
    before = stored(make_project(FILES))
    project = make_project({"configs/config-amd64": "CONFIG_AMD64=m\n"})
    verdict = explain(project.plan("b", AMD64), project, before)
    assert not verdict.up_to_date
    (reason,) = verdict.reasons
    assert reason.startswith("changed: a/files/config (configs/config-amd64)  ")


def test_new_and_removed_inputs_are_named(make_project: MakeProject, fake_engine: dict[str, str | None]) -> None:
    before = stored(make_project(FILES))
    project = make_project({"patches/01-a.patch": "a\n"})
    assert "new input: a/files/patches/01-a.patch (patches/01-a.patch)" in explain(
        project.plan("b", AMD64), project, before).reasons
    gone = dict(before, inputs={**before["inputs"], "old/input": "x"})  # type: ignore[dict-item]
    assert "input removed: old/input" in explain(project.plan("b", AMD64), project, gone).reasons


def test_a_missing_or_edited_output_is_a_reason(make_project: MakeProject, fake_engine: dict[str, str | None]) -> None:
    project = make_project(FILES)
    project.out_dir.mkdir()
    (project.out_dir / "b-amd64.bin").write_bytes(b"edited")
    values = dict(stored(project), outputs={"b-amd64.bin": "0" * 64, "gone.bin": "1" * 64})
    assert explain(project.plan("b", AMD64), project, values).reasons == [
        "output modified since it was built: out/b-amd64.bin", "output missing: out/gone.bin"]


def test_a_task_whose_upstream_rebuilds_first_says_so(make_project: MakeProject,
                                                      fake_engine: dict[str, str | None]) -> None:
    from .test_render import ARTIFACTS

    project = make_project(ARTIFACTS)
    upstream = {"k:amd64": Explanation("k:amd64", False, ["never built here"])}
    verdict = explain(project.plan("i", AMD64), project, stored(project, "i"), upstream)
    assert verdict.reasons == ["k:amd64 would rebuild first, and its outputs are inputs here (if their bytes change)"]


def test_an_engine_that_cannot_answer_is_a_reason_not_a_crash(make_project: MakeProject,
                                                              fake_engine: dict[str, str | None]) -> None:
    before = stored(make_project(FILES))
    fake_engine["builder-toolchain:bookworm"] = None
    project = make_project(FILES)
    verdict = explain(project.plan("b", AMD64), project, before)
    assert verdict.reasons == ["cannot check: image builder-toolchain:bookworm (TOOLCHAIN) is not in the Docker "
                               "engine (run ./setup.sh or 'builder toolchain ensure')"]


def test_a_new_version_of_an_out_of_tree_module_names_its_source(make_project: MakeProject,
                                                                 fake_engine: dict[str, str | None]) -> None:
    from .test_module_kind import FILES as MODULE_FILES

    source = ("sources:\n  - url: http://example.invalid/hello-{v}.tar.gz\n    destination: hello.tar.gz\n"
              "    sha256: {d}\n    sha512: {e}\n")
    first = MODULE_FILES["recipes/hello/pkg.yaml"].replace("sources: []\n", source.format(v=1, d="a" * 64, e="b" * 128))
    project = make_project({**MODULE_FILES, "recipes/hello/pkg.yaml": first})
    before = stored(project, "modules")
    second = first.replace("hello-1.tar.gz", "hello-2.tar.gz").replace("a" * 64, "c" * 64)
    project = make_project({"recipes/hello/pkg.yaml": second})
    verdict = explain(project.plan("modules", AMD64), project, before)
    assert not verdict.up_to_date
    assert any(reason.startswith("changed: hello/sources/hello.tar.gz (http://example.invalid/hello-2.tar.gz)")
               for reason in verdict.reasons), verdict.reasons
