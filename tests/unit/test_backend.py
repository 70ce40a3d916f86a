"""The BuildKit command for every output kind and option, on both paths, and the clear refusals."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from builder.core.errors import BuildError
from builder.host import backend
from builder.host.backend import BuildKit, BuildOutput, BuildRequest
from builder.host.engine import Engine

CTX = Path("/p/.builder/tmp/ctx")
BUILDX = BuildKit("/usr/bin/docker", buildx=True, driver="docker")
CONTAINER = BuildKit("/usr/bin/docker", buildx=True, driver="docker-container", builder="ci")
ENGINE = BuildKit("/usr/bin/docker", buildx=False)


def request(output: BuildOutput, **options: object) -> BuildRequest:
    return BuildRequest(context=CTX, target="r-kernel_export", platform="linux/arm64", output=output,
                        **options)  # type: ignore[arg-type]


LOCAL = BuildOutput("local", dest=Path("/p/export"))
TAIL = ["--file", f"{CTX}/Dockerfile", str(CTX)]


def test_a_local_export_with_buildx_is_one_buildx_build_without_network() -> None:
    assert BUILDX.commands(request(LOCAL)) == [[
        "/usr/bin/docker", "buildx", "build", "--network=none", "--progress=plain", "--platform", "linux/arm64",
        "--target", "r-kernel_export", "--output", "type=local,dest=/p/export", *TAIL]]
    assert BUILDX.environment() == {}


def test_the_engine_path_is_docker_build_with_buildkit_switched_on() -> None:
    assert ENGINE.commands(request(LOCAL)) == [[
        "/usr/bin/docker", "build", "--network=none", "--progress=plain", "--platform", "linux/arm64",
        "--target", "r-kernel_export", "--output", "type=local,dest=/p/export", *TAIL]]
    assert ENGINE.environment() == {"DOCKER_BUILDKIT": "1"}
    assert ENGINE.shell_command(request(LOCAL)).startswith("DOCKER_BUILDKIT=1 /usr/bin/docker build ")


@pytest.mark.parametrize("kit", [BUILDX, ENGINE, CONTAINER], ids=["buildx", "engine", "container"])
def test_no_cache_and_secrets_reach_every_path(kit: BuildKit) -> None:
    (argv,) = kit.commands(request(LOCAL, no_cache=True, secrets=(("signing-key", Path("/k/key.pem")),)))
    assert "--no-cache" in argv
    assert argv[argv.index("--secret") + 1] == "id=signing-key,src=/k/key.pem"


@pytest.mark.parametrize("kit", [BUILDX, ENGINE], ids=["buildx", "engine"])
def test_option_values_are_one_csv_record_whatever_the_path_holds(kit: BuildKit) -> None:
    odd = Path('/home/a,b/my "p"/export')
    (argv,) = kit.commands(request(BuildOutput("local", dest=odd), secrets=(("k", Path("/k,1/key.pem")),)))
    assert argv[argv.index("--output") + 1] == 'type=local,"dest=/home/a,b/my ""p""/export"'
    assert argv[argv.index("--secret") + 1] == 'id=k,"src=/k,1/key.pem"'
    (record,) = csv.reader([argv[argv.index("--output") + 1]])
    assert record == ["type=local", f"dest={odd}"]


def test_a_tar_export_is_one_file() -> None:
    (argv,) = BUILDX.commands(request(BuildOutput("tar", dest=Path("/p/rootfs.tar"))))
    assert argv[argv.index("--output") + 1] == "type=tar,dest=/p/rootfs.tar"


def test_an_oci_layout_needs_a_builder_with_an_oci_exporter() -> None:
    oci = request(BuildOutput("oci", dest=Path("/p/image.oci.tar")))
    (argv,) = CONTAINER.commands(oci)
    assert argv[3:5] == ["--builder", "ci"]
    assert argv[argv.index("--output") + 1] == "type=oci,dest=/p/image.oci.tar"
    for kit in (BUILDX, ENGINE):
        with pytest.raises(BuildError, match=r"cannot export an OCI image layout \(its BuildKit has no OCI exporter\)"):
            kit.commands(oci)


def test_an_image_goes_into_the_engine() -> None:
    image = request(BuildOutput("image", ref="example.invalid/kernel:1"))
    (argv,) = BUILDX.commands(image)
    assert argv[argv.index("--tag") + 1] == "example.invalid/kernel:1" and "--load" in argv
    (argv,) = ENGINE.commands(image)
    assert argv[argv.index("--tag") + 1] == "example.invalid/kernel:1" and "--output" not in argv


def test_a_push_is_one_buildx_build_or_an_engine_build_then_a_push() -> None:
    push = request(BuildOutput("push", ref="127.0.0.1:5005/kernel:1"))
    (argv,) = BUILDX.commands(push)
    assert "--push" in argv
    build, then = ENGINE.commands(push)
    assert build[build.index("--tag") + 1] == "127.0.0.1:5005/kernel:1" and "--push" not in build
    assert then == ["/usr/bin/docker", "push", "127.0.0.1:5005/kernel:1"]


def test_cache_export_needs_a_builder_that_can_export_one() -> None:
    registry = request(LOCAL, cache_to="type=registry,ref=127.0.0.1:5005/cache,mode=max",
                       cache_from="type=registry,ref=127.0.0.1:5005/cache")
    (argv,) = CONTAINER.commands(registry)
    assert argv[argv.index("--cache-to") + 1] == "type=registry,ref=127.0.0.1:5005/cache,mode=max"
    assert argv[argv.index("--cache-from") + 1] == "type=registry,ref=127.0.0.1:5005/cache"
    for kit in (BUILDX, ENGINE):
        with pytest.raises(BuildError, match="cannot export a build cache"):
            kit.commands(registry)
    (argv,) = BUILDX.commands(request(LOCAL, cache_to="type=inline"))
    assert argv[argv.index("--cache-to") + 1] == "type=inline"


def test_the_engine_path_imports_a_cache_only_from_an_image() -> None:
    (argv,) = ENGINE.commands(request(LOCAL, cache_from="type=registry,ref=127.0.0.1:5005/cache"))
    assert argv[argv.index("--cache-from") + 1] == "127.0.0.1:5005/cache"
    with pytest.raises(BuildError, match="cannot import a build cache"):
        ENGINE.commands(request(LOCAL, cache_from="type=local,src=/c"))


def test_an_output_without_its_place_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="needs dest"):
        BuildOutput("local")
    with pytest.raises(ValueError, match="needs ref"):
        BuildOutput("push")


# --- choosing the path ---

@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    """Probe answers by command line (None: the command fails); one client, /usr/bin/docker."""
    answers: dict[str, str | None] = {}
    monkeypatch.setattr(backend, "_clients", lambda: ["/usr/bin/docker"])
    monkeypatch.setattr(backend.BuildKits, "_output", lambda self, argv: answers.get(" ".join(argv[1:])))
    return answers


def select(*args: str) -> BuildKit:
    """A fresh invocation's choice (nothing remembered from another test)."""
    return backend.BuildKits(Engine()).select(*args)


def test_auto_prefers_buildx_and_reads_the_builders_driver(machine: dict[str, str | None]) -> None:
    machine["buildx version"] = "github.com/docker/buildx 0.13.1"
    machine["buildx inspect"] = "Name:   default\nDriver: docker\n"
    assert select() == BuildKit("/usr/bin/docker", buildx=True, driver="docker")


def test_auto_falls_back_to_the_engine_with_an_old_client(machine: dict[str, str | None]) -> None:
    machine["--version"] = "Docker version 20.10.24+dfsg1, build 297e128"
    assert select() == BuildKit("/usr/bin/docker", buildx=False)


def test_the_engine_path_is_refused_with_a_client_that_would_refuse_it(machine: dict[str, str | None]) -> None:
    machine["--version"] = "Docker version 26.1.5+dfsg1, build a72d7cd"
    with pytest.raises(BuildError, match="BACKEND=engine needs a docker client older than 23"):
        select("engine")
    with pytest.raises(BuildError, match="no way to run BuildKit"):
        select("auto")


def test_buildx_asked_for_but_absent_is_a_clear_error(machine: dict[str, str | None]) -> None:
    machine["--version"] = "Docker version 20.10.24+dfsg1, build 297e128"
    with pytest.raises(BuildError, match="BACKEND=buildx, but no docker client here has the buildx plugin"):
        select("buildx")


def test_a_named_builder_must_exist(machine: dict[str, str | None]) -> None:
    machine["buildx version"] = "github.com/docker/buildx 0.13.1"
    with pytest.raises(BuildError, match="buildx has no builder named 'nope'"):
        select("buildx", "nope")
    machine["buildx inspect ci"] = "Name: ci\nDriver: docker-container\n"
    assert select("buildx", "ci").driver == "docker-container"


# --- reports: what a failing step hands over (builder_report) lands in a file the error names ---

def test_a_failing_steps_report_is_written_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    script = ("echo '#7 0.1 ##builder-report:drift.txt## Kconfig drift: 1 not in this kernel'; "
              "echo '#7 0.1 ##builder-report:drift.txt## ## not in this kernel'; "
              "echo '#7 0.2 ##builder-error## config drifts'; "
              # buildx's error summary repeats the failing step's last lines: not a second copy of the report
              "echo '------'; echo ' > [k 7/9] RUN make:'; "
              "echo '0.1 ##builder-report:drift.txt## ## not in this kernel'; "
              "echo '0.2 ##builder-error## config drifts'; echo '------'; exit 1")
    reports = tmp_path / ".builder" / "reports" / "k-amd64"
    (reports / "stale.txt").parent.mkdir(parents=True)
    (reports / "stale.txt").write_text("from an earlier build")
    kit = BuildKit("docker", buildx=True)
    monkeypatch.setattr(BuildKit, "commands", lambda self, request: [["sh", "-c", script]])
    request = BuildRequest(context=tmp_path, target="t", platform="linux/amd64",
                           output=BuildOutput("local", dest=tmp_path / "x"))
    with pytest.raises(BuildError) as caught:
        backend.build(kit, request, log_path=tmp_path / ".builder" / "logs" / "k-amd64.log", label="k:amd64",
                      report_dir=reports)
    assert str(caught.value) == "k:amd64: config drifts (report: .builder/reports/k-amd64/drift.txt)"
    assert (reports / "drift.txt").read_text() == "Kconfig drift: 1 not in this kernel\n## not in this kernel\n"
    assert not (reports / "stale.txt").exists()
