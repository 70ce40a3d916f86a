"""The command line, parsed once: settings are typed, everything else is a template variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.core.errors import BuildError
from builder.core.platforms import AMD64, ARM64
from builder.model.settings import FetchLimits, Settings, doit_words, flag


def test_settings_are_taken_out_and_the_rest_are_template_variables() -> None:
    settings = Settings.parse({"PLATFORM": "linux/amd64,arm64", "NO_CACHE": "yes", "BACKEND": "engine",
                               "SOURCE_MIRROR": "/srv/mirror", "TOOLCHAIN": "t:1", "KERNEL_DEB_VERSION": "6"},
                              host=AMD64)
    assert settings.platforms == (AMD64, ARM64)
    assert settings.no_cache and not settings.dry_run
    assert settings.backend == "engine"
    assert settings.source_mirror == Path("/srv/mirror")
    assert dict(settings.variables) == {"TOOLCHAIN": "t:1", "KERNEL_DEB_VERSION": "6"}


def test_the_host_platform_is_the_default() -> None:
    assert Settings.parse({}, host=ARM64).platforms == (ARM64,)


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("yes", True), ("TRUE", True), ("on", True),
                                                 ("0", False), ("no", False), ("false", False), ("", False)])
def test_one_flag_parser(value: str, expected: bool) -> None:
    assert flag(value, "NO_CACHE") is expected


def test_a_flag_that_is_neither_is_an_error_naming_it() -> None:
    with pytest.raises(BuildError, match=r"^NO_CACHE: 'maybe' is not a flag; expected 1 or 0"):
        Settings.parse({"NO_CACHE": "maybe"}, host=AMD64)


def test_an_empty_platform_is_an_error_not_the_host() -> None:
    with pytest.raises(BuildError, match="^PLATFORM: empty; expected e.g. linux/amd64"):
        Settings.parse({"PLATFORM": ""}, host=AMD64)


def test_an_unknown_backend_is_an_error() -> None:
    with pytest.raises(BuildError, match="unknown backend 'kaniko'"):
        Settings.parse({"BACKEND": "kaniko"}, host=AMD64)


def test_doit_words_follow_doits_own_rule() -> None:
    argv = ["-f", "dodo.py", "kernel", "PLATFORM=linux/arm64", "--db-file=x", "A=b=c", "list"]
    assert doit_words(argv) == {"PLATFORM": "linux/arm64", "A": "b=c"}


def test_settings_round_trip_as_words() -> None:
    words = {"PLATFORM": "linux/arm64", "BACKEND": "buildx", "NO_CACHE": "1", "BUILDER": "ci"}
    assert Settings.parse(Settings.parse(words, host=AMD64).words(), host=AMD64) == Settings.parse(words, host=AMD64)


def test_download_deadlines_default_to_a_minute_without_data_and_an_hour_overall() -> None:
    assert Settings.parse({}, host=AMD64).fetch_limits == FetchLimits(stall=60.0, total=3600.0)


def test_download_deadlines_are_settings_not_template_variables() -> None:
    settings = Settings.parse({"FETCH_STALL_TIMEOUT": "2.5", "FETCH_TIMEOUT": "600"}, host=AMD64)
    assert settings.fetch_limits == FetchLimits(stall=2.5, total=600.0)
    assert dict(settings.variables) == {}
    assert settings.words()["FETCH_STALL_TIMEOUT"] == "2.5" and settings.words()["FETCH_TIMEOUT"] == "600"
    assert Settings.parse(settings.words(), host=AMD64) == settings


@pytest.mark.parametrize("name", ["FETCH_STALL_TIMEOUT", "FETCH_TIMEOUT"])
@pytest.mark.parametrize("value", ["abc", "0", "-5", "1e30", "nan", "inf", "", "604801"])
def test_a_download_deadline_that_is_not_a_sane_number_of_seconds_is_one_line_naming_it(name: str,
                                                                                          value: str) -> None:
    with pytest.raises(BuildError) as info:
        Settings.parse({name: value}, host=AMD64)
    assert str(info.value) == (f"{name}: {value!r} is not a number of seconds; expected a number greater than 0 "
                               f"and at most 604800 (a week)")


def test_image_registry_is_talos_name_for_registry_and_two_values_are_refused() -> None:
    assert Settings.parse({"IMAGE_REGISTRY": "127.0.0.1:5005"}, host=AMD64).registry == "127.0.0.1:5005"
    assert Settings.parse({"IMAGE_REGISTRY": "r:1", "REGISTRY": "r:1"}, host=AMD64).registry == "r:1"
    with pytest.raises(BuildError, match="REGISTRY=b:2 and IMAGE_REGISTRY=a:1 name two registries; give one$"):
        Settings.parse({"IMAGE_REGISTRY": "a:1", "REGISTRY": "b:2"}, host=AMD64)
