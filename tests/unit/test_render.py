"""A target rendered into a Dockerfile + build context, and the plan digest that says when to rebuild."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest

from builder.core.errors import BuildError, RecipeError
from builder.core.platforms import AMD64, ARM64, Platform
from builder.resolve.identity import PACKAGES_LABEL, ROOTFS_LABEL
from builder.resolve.plan import Plan
from builder.resolve.project import Project

from .conftest import EPOCH, TOOLCHAIN_ID

MakeProject = Callable[..., Project]

SHA256 = "a" * 64
SHA512 = "b" * 128
TOOLCHAIN = "example.invalid/toolchain:7"

RECIPE_A = """\
name: a
env:
  GREETING: "hello world; it's $HOME"
files:
  - src: configs/config-{{ ARCH }}
    dest: config
  - src: patches/*.patch
    dest: patches/
steps:
  - build: echo a-build
    install:
      - echo a-install-1
      - echo a-install-2
finalize:
  - from: /out/
"""

RECIPE_B = f"""\
name: b
description: b for {{{{ ARCH }}}}
dependencies:
  - stage: a
    to: /dep/
sources:
  - url: "{{{{ DEBIAN_MIRROR }}}}/pool/b.tar"
    destination: b.tar
    sha256: {SHA256}
    sha512: {SHA512}
steps:
  - build: |
      make -C /build B_ARCH={{{{ ARCH }}}}
finalize:
  - from: /out/
outputs:
  - b-{{{{ ARCH }}}}.bin
"""

FILES = {
    "recipes/a/pkg.yaml": RECIPE_A,
    "recipes/b/pkg.yaml": RECIPE_B,
    "configs/config-amd64": "CONFIG_AMD64=y\n",
    "configs/config-arm64": "CONFIG_ARM64=y\n",
}


@pytest.fixture
def project(make_project: MakeProject) -> Project:
    return make_project(FILES, {"TOOLCHAIN": TOOLCHAIN})


def data(plan: Plan, path: str) -> str:
    item = plan.context.files[path]
    assert item.data is not None
    return item.data.decode()


# --- the Dockerfile ---

def test_the_dockerfile_has_no_syntax_directive_so_the_engines_own_frontend_is_used(project: Project) -> None:
    dockerfile = project.plan("b", AMD64).context.dockerfile
    assert not any(re.match(r"#\s*syntax\s*=", line, re.I) for line in dockerfile.splitlines())


def test_every_toolchain_stage_starts_from_the_toolchain_variable(project: Project) -> None:
    dockerfile = project.plan("b", AMD64).context.dockerfile
    assert f"FROM --platform=$BUILDPLATFORM {TOOLCHAIN} AS r-a_build" in dockerfile
    assert f"FROM --platform=$BUILDPLATFORM {TOOLCHAIN} AS r-b_build" in dockerfile


def test_a_vars_file_beside_one_recipe_can_give_it_another_toolchain(make_project: MakeProject) -> None:
    project = make_project({**FILES, "recipes/a/vars.yaml": "TOOLCHAIN: example.invalid/other:1\n"})
    dockerfile = project.plan("b", AMD64).context.dockerfile
    assert "FROM --platform=$BUILDPLATFORM example.invalid/other:1 AS r-a_build" in dockerfile
    assert "FROM --platform=$BUILDPLATFORM builder-toolchain:bookworm AS r-b_build" in dockerfile
    assert list(project.plan("b", AMD64).images) == ["builder-toolchain:bookworm", "example.invalid/other:1"]


def test_stages_come_in_dependency_order_and_the_target_stage_is_exported(project: Project) -> None:
    context = project.plan("b", AMD64).context
    assert context.dockerfile.index("AS r-a_build") < context.dockerfile.index("AS r-b_build")
    assert context.target == "r-b_export"
    assert "FROM scratch AS r-a\n" in context.dockerfile and "FROM scratch AS r-b\n" in context.dockerfile


def test_the_export_stage_holds_only_the_outputs_not_the_stage_dependents_build_on(project: Project) -> None:
    dockerfile = project.plan("b", AMD64).context.dockerfile
    export = dockerfile[dockerfile.index("FROM scratch AS r-b_export"):]
    assert export.strip().splitlines() == ["FROM scratch AS r-b_export", "COPY --from=r-b /b-amd64.bin /"]
    assert "r-a_export" not in dockerfile  # only the target is exported


def test_rendering_a_dependency_leaves_out_the_recipes_that_need_it(project: Project) -> None:
    context = project.plan("a", AMD64).context
    assert "r-b" not in context.dockerfile
    assert not any(path.startswith("b/") for path in context.files)


def test_a_stage_dependency_is_copied_from_that_recipes_final_stage(project: Project) -> None:
    dockerfile = project.plan("b", AMD64).context.dockerfile
    assert "COPY --from=r-a / /dep/" in dockerfile
    assert "COPY --from=r-b_build /out/ /" in dockerfile  # finalize


def test_sources_and_project_files_are_copied_into_the_build(project: Project) -> None:
    dockerfile = project.plan("b", AMD64).context.dockerfile
    assert "COPY b/sources/ /build/" in dockerfile
    assert "COPY a/files/ /pkg/" in dockerfile
    assert "COPY b/files/" not in dockerfile


def test_each_script_runs_with_its_steps_and_the_library_bind_mounted(project: Project) -> None:
    dockerfile = project.plan("b", AMD64).context.dockerfile
    runs = [line for line in dockerfile.splitlines() if line.startswith("RUN ")]
    mounts = ("--mount=type=bind,source={p}/steps/{s},target=/.builder/step "
              "--mount=type=bind,source={p}/env,target=/.builder/env "
              "--mount=type=bind,source=lib,target=/.builder/lib")
    assert runs == [
        f'RUN {mounts.format(p="a", s="00-build")} ["/bin/sh", "/.builder/step/00-build.sh"]',
        f'RUN {mounts.format(p="a", s="01-install")} ["/bin/sh", "/.builder/step/01-install.sh"]',
        f'RUN {mounts.format(p="a", s="02-install")} ["/bin/sh", "/.builder/step/02-install.sh"]',
        f'RUN {mounts.format(p="b", s="00-build")} ["/bin/sh", "/.builder/step/00-build.sh"]',
    ]


def test_a_scratch_recipe_has_no_shell_no_workdir_and_no_toolchain(make_project: MakeProject) -> None:
    project = make_project({
        "recipes/s/pkg.yaml": "name: s\nvariant: scratch\ndependencies:\n  - stage: a\nfinalize:\n  - from: /\n",
        "recipes/a/pkg.yaml": "name: a\nvariant: scratch\nfinalize:\n  - from: /\n",
    })
    plan = project.plan("s", AMD64)
    dockerfile = plan.context.dockerfile
    assert "FROM scratch AS r-s_build" in dockerfile
    assert "WORKDIR" not in dockerfile and "RUN " not in dockerfile
    assert plan.images == {}
    assert not any(key.startswith("toolchain") for key in plan.inputs(project.identities))  # no engine needed


# --- the build context ---

def test_step_scripts_hold_the_recipe_script_after_strict_shell_settings(project: Project) -> None:
    plan = project.plan("b", AMD64)
    assert sorted(p for p in plan.context.files if "/steps/" in p or "/env/" in p) == [
        "a/env/env.sh", "a/steps/00-build/00-build.sh", "a/steps/01-install/01-install.sh",
        "a/steps/02-install/02-install.sh", "b/env/env.sh", "b/steps/00-build/00-build.sh"]
    script = data(plan, "b/steps/00-build/00-build.sh")
    assert script.startswith("set -eu\n")
    assert ". /.builder/env/env.sh\n" in script
    assert ". /.builder/lib/builder.sh\n" in script
    assert "cd /build\n" in script
    assert script.endswith("make -C /build B_ARCH=amd64\n")
    assert data(plan, "a/steps/02-install/02-install.sh").endswith("echo a-install-2\n")


def test_the_builder_library_is_part_of_the_context(project: Project) -> None:
    library = resources.files("builder").joinpath("scripts/builder.sh").read_bytes()
    assert project.plan("b", AMD64).context.files["lib/builder.sh"].data == library


def test_env_sh_exports_the_reproducibility_environment_and_the_recipe_env(project: Project) -> None:
    env_sh = data(project.plan("b", AMD64), "a/env/env.sh")
    assert f"export SOURCE_DATE_EPOCH={EPOCH}\n" in env_sh
    assert "export KBUILD_BUILD_TIMESTAMP='Wed Jan  1 00:00:00 UTC 2025'\n" in env_sh
    assert "export LC_ALL=C\n" in env_sh and "export TZ=UTC\n" in env_sh
    assert "GREETING" in env_sh
    assert "GREETING" not in data(project.plan("b", AMD64), "b/env/env.sh")


def test_env_sh_values_are_shell_quoted_so_the_shell_sees_them_verbatim(project: Project, tmp_path: Path) -> None:
    env_sh = tmp_path / "env.sh"
    env_sh.write_text(data(project.plan("b", AMD64), "a/env/env.sh"))
    out = subprocess.run(["/bin/sh", "-c", '. "$1" && printf "%s|%s" "$GREETING" "$KBUILD_BUILD_TIMESTAMP"',
                          "sh", str(env_sh)], capture_output=True, text=True, check=True, env={"HOME": "/nowhere"})
    assert out.stdout == "hello world; it's $HOME|Wed Jan  1 00:00:00 UTC 2025"


def test_project_files_are_given_under_the_recipes_files_dir_for_the_right_arch(make_project: MakeProject) -> None:
    project = make_project({**FILES, "patches/02-b.patch": "b\n", "patches/01-a.patch": "a\n",
                            "patches/README": "not a patch\n"})
    amd64, arm64 = project.plan("a", AMD64), project.plan("a", ARM64)
    assert data(amd64, "a/files/config") == "CONFIG_AMD64=y\n"
    assert data(arm64, "a/files/config") == "CONFIG_ARM64=y\n"
    assert amd64.origin("a/files/config") == "configs/config-amd64"
    assert sorted(p for p in amd64.context.files if p.startswith("a/files/patches/")) == [
        "a/files/patches/01-a.patch", "a/files/patches/02-b.patch"]


def test_sources_are_in_the_context_by_digest_not_by_content(project: Project) -> None:
    item = project.plan("b", AMD64).context.files["b/sources/b.tar"]
    assert (item.digest, item.data, item.fetch, item.artifact) == (SHA256, None, ("b", 0), None)
    assert item.origin == "http://mirror.example/debian/pool/b.tar"


def test_every_input_can_be_traced_back_to_where_a_user_knows_it_from(project: Project) -> None:
    plan = project.plan("b", AMD64)
    assert plan.origin("b/steps/00-build/00-build.sh") == "recipes/b/pkg.yaml:12"
    assert plan.origin("b/sources/b.tar") == "http://mirror.example/debian/pool/b.tar"
    assert plan.origin("Dockerfile") == "Dockerfile"


def test_a_missing_project_file_is_an_error_naming_the_recipe_file_and_line(make_project: MakeProject) -> None:
    project = make_project({**FILES, "recipes/a/pkg.yaml": RECIPE_A.replace("configs/config-{{ ARCH }}",
                                                                            "configs/missing")})
    with pytest.raises(RecipeError) as info:
        project.plan("a", AMD64).context  # noqa: B018 - rendering is the point
    assert str(info.value) == "recipes/a/pkg.yaml:5: files.0.src: no such file 'configs/missing' in the project"


def test_a_glob_that_matches_nothing_is_fine(project: Project) -> None:
    context = project.plan("a", AMD64).context
    assert not any(p.startswith("a/files/patches") for p in context.files)


def test_a_written_context_holds_every_file_with_sources_taken_from_the_cache(project: Project,
                                                                                tmp_path: Path) -> None:
    payload = tmp_path / "cache" / SHA256
    payload.parent.mkdir()
    payload.write_bytes(b"verified source")
    context = project.plan("b", AMD64).context
    context.write(tmp_path / "ctx", {"b/sources/b.tar": payload})
    assert (tmp_path / "ctx" / "Dockerfile").read_text() == context.dockerfile
    assert (tmp_path / "ctx" / "b/sources/b.tar").read_bytes() == b"verified source"
    assert (tmp_path / "ctx" / "a/files/config").read_text() == "CONFIG_AMD64=y\n"
    assert (tmp_path / "ctx" / "a/steps/00-build/00-build.sh").stat().st_mode & 0o777 == 0o644


# --- the plan digest: what makes a target out of date ---

def digest(project: Project, name: str, platform: Platform) -> str:
    plan = project.plan(name, platform)
    return plan.digest(plan.inputs(project.identities))


def digests(project: Project) -> tuple[str, str]:
    return digest(project, "b", AMD64), digest(project, "b", ARM64)


def test_a_plan_digest_is_stable_and_differs_between_platforms(make_project: MakeProject,
                                                               fake_engine: dict[str, str | None]) -> None:
    first = digests(make_project(FILES))
    assert digests(make_project(FILES)) == first
    assert first[0] != first[1]


def test_the_plan_inputs_name_the_toolchain_by_its_identity(project: Project,
                                                            fake_engine: dict[str, str | None]) -> None:
    inputs = project.plan("b", AMD64).inputs(project.identities)
    assert inputs[f"toolchain {TOOLCHAIN}"] == f"local-id:{TOOLCHAIN_ID}"  # no package lock label: the engine ID
    assert inputs["b/sources/b.tar"] == SHA256
    assert "Dockerfile" in inputs and "a/files/config" in inputs


def test_changing_an_amd64_only_project_file_rebuilds_amd64_but_not_arm64(make_project: MakeProject,
                                                                          fake_engine: dict[str, str | None]) -> None:
    amd64, arm64 = digests(make_project(FILES))
    after = digests(make_project({"configs/config-amd64": "CONFIG_AMD64=m\n"}))
    assert after[0] != amd64
    assert after[1] == arm64


def test_changing_only_where_a_source_is_fetched_from_does_not_rebuild(make_project: MakeProject,
                                                                       fake_engine: dict[str, str | None]) -> None:
    before = digests(make_project(FILES))
    moved = make_project(FILES, {"DEBIAN_MIRROR": "http://other-mirror.example/debian"})
    assert moved.plan("b", AMD64).context.files["b/sources/b.tar"].origin.startswith("http://other-mirror")
    assert digests(moved) == before


def test_changing_a_source_digest_rebuilds(make_project: MakeProject, fake_engine: dict[str, str | None]) -> None:
    before = digests(make_project(FILES))
    after = digests(make_project({"recipes/b/pkg.yaml": RECIPE_B.replace(SHA256, "c" * 64)}))
    assert after[0] != before[0] and after[1] != before[1]


def test_changing_a_step_script_rebuilds(make_project: MakeProject, fake_engine: dict[str, str | None]) -> None:
    before = digests(make_project(FILES))
    after = digests(make_project({"recipes/a/pkg.yaml": RECIPE_A.replace("echo a-build", "echo a-build2")}))
    assert after[0] != before[0] and after[1] != before[1]


def test_a_new_toolchain_image_id_rebuilds(make_project: MakeProject, fake_engine: dict[str, str | None]) -> None:
    before = digests(make_project(FILES))
    fake_engine["builder-toolchain:bookworm"] = "sha256:" + "2" * 64
    assert digests(make_project(FILES))[0] != before[0]


def test_a_toolchain_with_a_package_lock_is_known_by_it_so_a_reimport_rebuilds_nothing(
        make_project: MakeProject, fake_engine: dict[str, str | None]) -> None:
    fake_engine["labels:builder-toolchain:bookworm"] = f"{PACKAGES_LABEL}={'5' * 64}"
    project = make_project(FILES)
    before = digests(project)
    assert project.plan("b", AMD64).inputs(project.identities)["toolchain builder-toolchain:bookworm"] == (
        f"packages:sha256:{'5' * 64}")
    fake_engine["builder-toolchain:bookworm"] = "sha256:" + "2" * 64  # imported again: a new engine ID
    assert digests(make_project(FILES)) == before
    fake_engine["labels:builder-toolchain:bookworm"] = f"{PACKAGES_LABEL}={'6' * 64}"  # other packages
    assert digests(make_project(FILES))[0] != before[0]


def test_a_toolchain_with_a_reproducible_rootfs_is_known_by_its_digest(
        make_project: MakeProject, fake_engine: dict[str, str | None]) -> None:
    fake_engine["labels:builder-toolchain:bookworm"] = f"{ROOTFS_LABEL}={'7' * 64}"
    project = make_project(FILES)
    assert project.plan("b", AMD64).inputs(project.identities)["toolchain builder-toolchain:bookworm"] == (
        f"rootfs:sha256:{'7' * 64}")


def test_a_missing_toolchain_image_is_an_error_saying_how_to_get_it(make_project: MakeProject,
                                                                    fake_engine: dict[str, str | None]) -> None:
    fake_engine[TOOLCHAIN] = None
    with pytest.raises(BuildError) as info:
        project = make_project(FILES, {"TOOLCHAIN": TOOLCHAIN})
        project.plan("b", AMD64).inputs(project.identities)
    assert f"image {TOOLCHAIN} (TOOLCHAIN) is not in the Docker engine" in str(info.value)


# --- the project's own recipes ---

def test_the_shipped_recipes_load_for_both_platforms(no_host_apt: str) -> None:
    project = Project.load(Path(__file__).resolve().parents[2], {}, host=AMD64)
    for platform in (AMD64, ARM64):
        graph = project.graph(platform)
        assert {"busybox", "initramfs", "kernel", "kernel-build", "vpoll"} <= set(graph.recipes)
        assert [r.name for r in graph.closure("initramfs")] == ["busybox", "initramfs"]
        assert graph.upstream_tasks("initramfs") == ["kernel"]  # the modules tar, as a published artifact
        # one build makes the kernel and signs every module: the compile, the external module, the rest
        assert [r.name for r in graph.closure("kernel")] == ["kernel-build", "vpoll", "kernel"]
        assert "initramfs/env/env.sh" in project.plan("initramfs", platform).context.files
    assert project.graph(ARM64)["kernel-build"].env == {"ARCH": "arm64", "CROSS_COMPILE": "aarch64-linux-gnu-"}
    assert project.graph(AMD64)["kernel-build"].env == {"ARCH": "x86", "CROSS_COMPILE": ""}


# --- known bugs ---

def test_recipes_whose_names_differ_only_by_dot_and_dash_get_distinct_stages(make_project: MakeProject) -> None:
    project = make_project({
        "recipes/dot/pkg.yaml": "name: x.y\nvariant: scratch\nfinalize:\n  - from: /a/\n",
        "recipes/dash/pkg.yaml": "name: x-y\nvariant: scratch\nfinalize:\n  - from: /b/\n",
        "recipes/top/pkg.yaml": "name: top\nvariant: scratch\ndependencies:\n  - stage: x.y\n"
                                "  - stage: x-y\nfinalize:\n  - from: /\n",
    })
    dockerfile = project.plan("top", AMD64).context.dockerfile
    stages = re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.M)
    assert len(stages) == len(set(stages)), stages


def test_a_recipe_named_like_another_recipes_build_stage_gets_distinct_stages(make_project: MakeProject) -> None:
    project = make_project({  # k's build stage was "r-k-build", recipe k-build's final stage too
        "recipes/a/pkg.yaml": "name: k-build\nsteps:\n  - build: 'true'\nfinalize:\n  - from: /a/\n",
        "recipes/b/pkg.yaml": "name: k\ndependencies:\n  - stage: k-build\nsteps:\n  - build: 'true'\n"
                              "finalize:\n  - from: /\n",
    })
    dockerfile = project.plan("k", AMD64).context.dockerfile
    stages = re.findall(r"^FROM .* AS (\S+)$", dockerfile, re.M)
    assert len(stages) == len(set(stages)), stages
    assert "COPY --from=r-k-build / /\n" in dockerfile  # k takes k-build's final tree, not its own build stage


def test_a_recipe_whose_only_glob_matches_nothing_copies_no_missing_directory(make_project: MakeProject) -> None:
    project = make_project({"recipes/c/pkg.yaml": "name: c\nfiles:\n  - src: patches/*.patch\n    dest: patches/\n"
                                                  "steps:\n  - build: 'true'\n"})
    context = project.plan("c", AMD64).context
    assert "COPY c/files/ /pkg/" not in context.dockerfile
    assert not any(path.startswith("c/files/") for path in context.files)


def test_a_recipe_env_cannot_override_the_reproducibility_environment(make_project: MakeProject) -> None:
    project = make_project({"recipes/c/pkg.yaml": "name: c\nenv:\n  SOURCE_DATE_EPOCH: '0'\n  TZ: Europe/Paris\n"
                                                  "steps:\n  - build: 'true'\n"})
    with pytest.raises(RecipeError, match=r"recipes/c/pkg\.yaml:3: env\.SOURCE_DATE_EPOCH: SOURCE_DATE_EPOCH is set "
                                          r"by the framework"):
        project.graph(AMD64)


def test_an_env_key_that_is_not_a_shell_variable_name_is_a_recipe_error(make_project: MakeProject) -> None:
    project = make_project({"recipes/c/pkg.yaml": "name: c\nenv:\n  CROSS-COMPILE: x\nsteps:\n  - build: 'true'\n"})
    with pytest.raises(RecipeError, match=r"pkg\.yaml:3: .*invalid environment variable name 'CROSS-COMPILE'"):
        project.graph(AMD64)


def test_a_new_image_id_for_an_image_dependency_rebuilds(make_project: MakeProject,
                                                         fake_engine: dict[str, str | None]) -> None:
    files = {"recipes/c/pkg.yaml": "name: c\ndependencies:\n  - image: example.invalid/tools:1\n"
                                   "    from: /usr/bin/\n    to: /tools/\nsteps:\n  - build: 'true'\n"}
    fake_engine["example.invalid/tools:1"] = "sha256:" + "3" * 64
    before = digest(make_project(files), "c", AMD64)
    fake_engine["example.invalid/tools:1"] = "sha256:" + "4" * 64
    assert digest(make_project(files), "c", AMD64) != before


# --- artifacts and each stage's own environment ---

ARTIFACTS = {
    "recipes/k/pkg.yaml": ("name: k\nvariant: scratch\nfinalize:\n  - from: /\n"
                           "outputs: [k-{{ ARCH }}.bin, m-{{ ARCH }}.tar]\n"),
    "recipes/i/pkg.yaml": ("name: i\ndependencies:\n  - artifact: k\n    outputs: [m-{{ ARCH }}.tar]\n    to: /a/\n"
                           "steps:\n  - build: 'true'\nfinalize:\n  - from: /out/\noutputs: [i-{{ ARCH }}]\n"),
}


def test_an_artifact_is_in_the_context_by_its_sha256_in_out_and_copied_into_the_build(
        make_project: MakeProject, fake_engine: dict[str, str | None]) -> None:
    project = make_project(ARTIFACTS)
    plan = project.plan("i", AMD64)
    item = plan.context.files["i/artifacts/0/m-amd64.tar"]
    assert (item.artifact, item.origin, item.data) == ("m-amd64.tar", "out/m-amd64.tar", None)
    assert "COPY i/artifacts/0/ /a/" in plan.context.dockerfile
    assert "r-k" not in plan.context.dockerfile  # never rendered, so never rebuilt here
    assert plan.upstream == ("k:amd64",)
    assert plan.inputs(project.identities)["i/artifacts/0/m-amd64.tar"] == "absent"
    project.out_dir.mkdir()
    (project.out_dir / "SHA256SUMS").write_text(f"{'7' * 64}  m-amd64.tar\n{'8' * 64}  k-amd64.bin\n")
    before = plan.digest(plan.inputs(project.identities))
    assert plan.inputs(project.identities)["i/artifacts/0/m-amd64.tar"] == "7" * 64
    (project.out_dir / "SHA256SUMS").write_text(f"{'7' * 64}  m-amd64.tar\n{'9' * 64}  k-amd64.bin\n")
    assert plan.digest(plan.inputs(project.identities)) == before  # an output it does not take changed
    (project.out_dir / "SHA256SUMS").write_text(f"{'6' * 64}  m-amd64.tar\n")
    assert plan.digest(plan.inputs(project.identities)) != before


def test_each_stage_gets_the_build_environment_of_its_own_recipe(make_project: MakeProject) -> None:
    project = make_project({**FILES, "recipes/a/vars.yaml": "SOURCE_DATE_EPOCH: 1000\n"})
    plan = project.plan("b", AMD64)
    assert "export SOURCE_DATE_EPOCH=1000\n" in data(plan, "a/env/env.sh")
    assert f"export SOURCE_DATE_EPOCH={EPOCH}\n" in data(plan, "b/env/env.sh")
    assert data(plan, "a/env/env.sh") == data(project.plan("a", AMD64), "a/env/env.sh")  # the same in every target


def test_two_project_files_with_one_destination_are_refused(make_project: MakeProject) -> None:
    project = make_project({**FILES, "recipes/a/pkg.yaml": RECIPE_A.replace(
        "  - src: patches/*.patch\n    dest: patches/\n",
        "  - src: patches/*.patch\n    dest: patches/\n  - src: more/*.patch\n    dest: patches/\n"),
        "patches/01.patch": "a\n", "more/01.patch": "b\n"})
    with pytest.raises(RecipeError, match=r"pkg\.yaml:\d+: files\.2: 'more/01\.patch' and 'patches/01\.patch' "
                                          r"would both be /pkg/patches/01\.patch"):
        project.plan("a", AMD64).context  # noqa: B018


def test_a_project_file_that_links_outside_the_project_is_refused(make_project: MakeProject, tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "shadow"
    secret.parent.mkdir()
    secret.write_text("root:secret\n")
    project = make_project(FILES)
    (project.root / "patches").mkdir()
    (project.root / "patches" / "01-evil.patch").symlink_to(secret)
    with pytest.raises(RecipeError) as info:
        project.plan("a", AMD64).context  # noqa: B018
    assert str(info.value) == (f"recipes/a/pkg.yaml:7: files.1: 'patches/01-evil.patch' is a link out of the "
                               f"project (to {secret}); builds take project files only")


def test_a_link_inside_the_project_is_fine(make_project: MakeProject) -> None:
    project = make_project({**FILES, "shared/01-a.patch": "a\n"})
    (project.root / "patches").mkdir()
    (project.root / "patches" / "01-a.patch").symlink_to(project.root / "shared" / "01-a.patch")
    assert data(project.plan("a", AMD64), "a/files/patches/01-a.patch") == "a\n"


def test_an_empty_patch_is_refused_before_any_build(make_project: MakeProject) -> None:
    project = make_project({**FILES, "patches/01-empty.patch": ""})
    with pytest.raises(RecipeError, match=r"^recipes/a/pkg\.yaml:7: files\.1: 'patches/01-empty\.patch' is an "
                                          r"empty patch$"):
        project.plan("a", AMD64).context  # noqa: B018
