"""Template variables: defaults -> recipes/vars.yaml -> deeper vars.yaml -> command line -> platform."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from builder.core.errors import RecipeError
from builder.core.platforms import AMD64, ARM64
from builder.model.aptsources import AptSources
from builder.model.variables import (
    DEFAULTS,
    build_environment,
    command_line_layer,
    directory_layers,
    load_vars_file,
    resolve,
)

from .conftest import MIRROR, WriteTree


@pytest.fixture
def recipes(tmp_path: Path, write_tree: WriteTree) -> Path:
    """recipes/ with a vars.yaml at the top, in sub/ and in sub/deeper/."""
    return write_tree(tmp_path / "recipes", {
        "vars.yaml": """\
            SOURCE_DATE_EPOCH: 1000
            A: top
            B: top
            C: top
            D: top
            ARCH: from-vars-yaml
            KBUILD_BUILD_USER: someone
            DEBIAN_MIRROR: http://vars.example/debian
            """,
        "sub/vars.yaml": "B: sub\nC: sub\nD: sub\n",
        "sub/deeper/vars.yaml": "C: deeper\nD: deeper\n",
        "sibling/vars.yaml": "A: sibling\n",
    })


def resolved(recipes: Path, folder: str, cli: dict[str, str] | None = None, platform=ARM64) -> dict[str, str]:
    return resolve(recipes_root=recipes, recipe_dir=recipes / folder, cli=cli or {}, platform=platform, host=AMD64,
                   apt=AptSources.read())


def test_each_layer_overrides_the_one_before_and_the_platform_wins(recipes: Path, no_host_apt: str) -> None:
    got = resolved(recipes, "sub/deeper", {"D": "cli", "ARCH": "cli"})
    assert (got["A"], got["B"], got["C"], got["D"]) == ("top", "sub", "deeper", "cli")
    assert got["ARCH"] == "arm64"  # platform variables beat vars.yaml and the command line
    assert got["CROSS_COMPILE"] == "aarch64-linux-gnu-"


def test_defaults_apply_unless_a_vars_file_overrides_them(recipes: Path, no_host_apt: str) -> None:
    got = resolved(recipes, "sub")
    assert got["TOOLCHAIN"] == DEFAULTS["TOOLCHAIN"]
    assert got["DEBIAN_SUITE"] == "bookworm"
    assert got["KBUILD_BUILD_USER"] == "someone"


def test_the_debian_mirror_from_apt_sources_sits_below_vars_yaml(tmp_path: Path, write_tree: WriteTree,
                                                                 no_host_apt: str) -> None:
    root = write_tree(tmp_path / "r", {"vars.yaml": "SOURCE_DATE_EPOCH: 1\n"})
    assert resolved(root, ".")["DEBIAN_MIRROR"] == MIRROR
    write_tree(root, {"vars.yaml": "SOURCE_DATE_EPOCH: 1\nDEBIAN_MIRROR: http://vars.example/debian\n"})
    assert resolved(root, ".")["DEBIAN_MIRROR"] == "http://vars.example/debian"


def test_a_sibling_directorys_vars_file_does_not_apply(recipes: Path) -> None:
    assert directory_layers(recipes, recipes / "sub")["A"] == "top"
    assert directory_layers(recipes, recipes / "sibling")["A"] == "sibling"


def test_source_date_epoch_from_the_environment_counts_as_a_command_line_variable(
    recipes: Path, no_host_apt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "2000")
    assert resolved(recipes, "sub")["SOURCE_DATE_EPOCH"] == "2000"  # beats vars.yaml
    assert resolved(recipes, "sub", {"SOURCE_DATE_EPOCH": "3000"})["SOURCE_DATE_EPOCH"] == "3000"


def test_only_source_date_epoch_is_taken_from_the_environment() -> None:
    layer = command_line_layer({"A": "1"}, environ={"SOURCE_DATE_EPOCH": "5", "A": "env", "TOOLCHAIN": "x"})
    assert layer == {"SOURCE_DATE_EPOCH": "5", "A": "1"}


def test_a_non_numeric_source_date_epoch_is_an_error_quoting_it(recipes: Path, no_host_apt: str) -> None:
    with pytest.raises(RecipeError, match=r"SOURCE_DATE_EPOCH must be whole seconds since 1970, not '2025-01-01'"):
        resolved(recipes, "sub", {"SOURCE_DATE_EPOCH": "2025-01-01"})


def test_a_non_numeric_source_date_epoch_from_the_environment_is_an_error_too(
    recipes: Path, no_host_apt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(RecipeError, match="not 'yesterday'"):
        resolved(recipes, "sub")


def test_a_source_date_epoch_of_unicode_superscript_digits_is_a_recipe_error(
    recipes: Path, no_host_apt: str
) -> None:
    try:
        got = resolved(recipes, "sub", {"SOURCE_DATE_EPOCH": "\u00b2"})
        build_environment(got)
    except RecipeError:
        return
    pytest.fail("accepted SOURCE_DATE_EPOCH='\u00b2'")


def test_a_missing_source_date_epoch_is_an_error_saying_where_to_set_it(tmp_path: Path, no_host_apt: str) -> None:
    (tmp_path / "recipes").mkdir()
    with pytest.raises(RecipeError) as info:
        resolved(tmp_path / "recipes", ".")
    assert "SOURCE_DATE_EPOCH is not set" in str(info.value)
    assert "recipes/vars.yaml" in str(info.value)


def test_a_vars_file_turns_numbers_and_booleans_into_strings(tmp_path: Path) -> None:
    path = tmp_path / "vars.yaml"
    path.write_text("N: 42\nB: true\nS: text\n")
    assert load_vars_file(path) == {"N": "42", "B": "true", "S": "text"}


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("A: 1\nnot-a-name: 2\n", 2, "invalid variable name 'not-a-name'"),
        ("A: 1\nB:\n  nested: 2\n", 2, "variable B must be a string or number"),
        ("A: 1\nB: [1, 2]\n", 2, "variable B must be a string or number"),
        ("A: 1\nB:\n", 2, "variable B must be a string or number"),
        ("- A\n", 1, "expected a mapping of variable names to values"),
    ],
)
def test_a_bad_vars_file_is_an_error_naming_file_and_line(tmp_path: Path, text: str, line: int,
                                                          message: str) -> None:
    path = tmp_path / "vars.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_vars_file(path)
    assert str(info.value).startswith(f"{path}:{line}: {message}")


def test_an_empty_vars_file_sets_nothing(tmp_path: Path) -> None:
    (tmp_path / "vars.yaml").write_text("# nothing yet\n")
    assert load_vars_file(tmp_path / "vars.yaml") == {}


# --- the Debian mirror, read from apt sources (always a tmp dir here, never this machine's /etc/apt) ---

DEB822 = """\
# a comment
Types: deb-src
URIs: http://src-only.example/debian
Suites: bookworm
Components: main

Types: deb deb-src
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


@pytest.fixture
def apt(tmp_path: Path, write_tree: WriteTree) -> Callable[[dict[str, str]], tuple[Path, ...]]:
    def make(files: dict[str, str]) -> tuple[Path, ...]:
        write_tree(tmp_path / "apt", {"sources.list.d/.keep": "", **files})
        return (tmp_path / "apt" / "sources.list", tmp_path / "apt" / "sources.list.d")

    return make


def test_the_mirror_is_read_from_a_deb822_sources_file(apt: Callable[..., tuple[Path, ...]]) -> None:
    sources = apt({"sources.list.d/debian.sources": DEB822})
    assert AptSources.read(sources).mirror("bookworm") == "http://mirror.example/debian"
    assert AptSources.read(sources).mirror("bookworm-updates") == "http://mirror.example/debian"


def test_a_deb822_file_is_read_as_apt_reads_it(apt: Callable[..., tuple[Path, ...]]) -> None:
    """Folded fields (a suite on a continuation line), field names in any case, comments inside a stanza and
    an inline key block: what python-debian parses, and a line-by-line reading did not."""
    sources = apt({"sources.list.d/debian.sources": """\
        types: deb
        uris: http://disabled.example/debian
        suites: bookworm
        components: main
        enabled: No

        TYPES: deb
        # a comment between fields
        URIS: http://mirror.example/debian/
        SUITES: bookworm-updates
         bookworm
        COMPONENTS: contrib
         main
        Signed-By:
         -----BEGIN PGP PUBLIC KEY BLOCK-----
         .
         Suites: trixie
         -----END PGP PUBLIC KEY BLOCK-----
        """})
    assert AptSources.read(sources).mirror("bookworm") == "http://mirror.example/debian"
    assert AptSources.read(sources).mirror("trixie") == "http://mirror.example/debian"  # the release fallback


def test_the_mirror_is_read_from_a_one_line_list_file(apt: Callable[..., tuple[Path, ...]]) -> None:
    sources = apt({"sources.list": """\
        deb-src http://src-only.example/debian bookworm main
        # deb http://commented.example/debian bookworm main
        deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://mirror.example/debian bookworm main contrib
        """})
    assert AptSources.read(sources).mirror("bookworm") == "http://mirror.example/debian"


def test_a_source_without_main_or_not_over_http_is_not_the_mirror(apt: Callable[..., tuple[Path, ...]]) -> None:
    sources = apt({"sources.list": """\
        deb http://nonfree.example/debian bookworm non-free
        deb cdrom:[Debian 12]/ bookworm main
        """})
    assert AptSources.read(sources).mirror("bookworm") is None


def test_the_suites_own_entry_wins_over_an_earlier_one_for_another_release(
    apt: Callable[..., tuple[Path, ...]]
) -> None:
    sources = apt({"sources.list": """\
        deb http://trixie.example/debian trixie main
        deb http://bookworm.example/debian bookworm main
        """})
    assert AptSources.read(sources).mirror("bookworm") == "http://bookworm.example/debian"
    assert AptSources.read(sources).mirror("trixie") == "http://trixie.example/debian"


# A Debian 13 host's apt sources list only trixie: bookworm (the toolchain's suite) comes from the same archive.
TRIXIE_DEB822 = """\
Types: deb
URIs: http://nodesource.example/node_20.x
Suites: nodistro
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: trixie-security
Components: main

Types: deb
URIs: http://disabled.example/debian
Suites: trixie
Components: main
Enabled: no

Types: deb-src
URIs: http://src-only.example/debian
Suites: trixie
Components: main

Types: deb
URIs: http://mirror.example/debian/
Suites: trixie trixie-updates
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def test_without_an_entry_for_the_suite_a_deb822_host_falls_back_to_its_release_archive(
    apt: Callable[..., tuple[Path, ...]]
) -> None:
    sources = apt({"sources.list.d/debian.sources": TRIXIE_DEB822})
    assert AptSources.read(sources).mirror("bookworm") == "http://mirror.example/debian"
    assert AptSources.read(sources).mirror("trixie") == "http://mirror.example/debian"


def test_without_an_entry_for_the_suite_a_one_line_host_falls_back_to_its_release_archive(
    apt: Callable[..., tuple[Path, ...]]
) -> None:
    sources = apt({"sources.list": """\
        deb http://nodesource.example/node_20.x nodistro main
        deb http://security.example/debian-security trixie-security main
        deb http://updates.example/debian trixie-updates main
        deb http://backports.example/debian trixie-backports main
        deb http://nonfree.example/debian trixie non-free
        deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian trixie main
        """})
    assert AptSources.read(sources).mirror("bookworm") == "http://mirror.example/debian"


def test_the_fallback_is_only_for_release_suites_and_only_to_debian_archives(
    apt: Callable[..., tuple[Path, ...]]
) -> None:
    sources = apt({"sources.list": """\
        deb http://nodesource.example/node_20.x nodistro main
        deb http://security.example/debian-security trixie-security main
        deb http://mirror.example/debian trixie main
        """})
    assert AptSources.read(sources).mirror("bookworm-security") is None  # a security archive is never guessed
    assert AptSources.read(sources).mirror("bookworm-updates") is None
    assert AptSources.read(sources).mirror("jammy") is None  # not a Debian suite
    only_others = apt({"sources.list": """\
        deb http://nodesource.example/node_20.x nodistro main
        deb http://security.example/debian-security trixie-security main
        """})
    assert AptSources.read(only_others).mirror("bookworm") is None


def test_files_in_sources_list_d_are_read_in_name_order(apt: Callable[..., tuple[Path, ...]]) -> None:
    sources = apt({
        "sources.list.d/20-second.list": "deb http://second.example/debian bookworm main\n",
        "sources.list.d/10-first.list": "deb http://first.example/debian bookworm main\n",
        "sources.list.d/00-ignored.txt": "deb http://ignored.example/debian bookworm main\n",
    })
    assert AptSources.read(sources).mirror("bookworm") == "http://first.example/debian"


def test_a_local_file_mirror_is_accepted(apt: Callable[..., tuple[Path, ...]]) -> None:
    sources = apt({"sources.list": "deb [trusted=yes] file:/srv/mirror/debian bookworm main\n"})
    assert AptSources.read(sources).mirror("bookworm") == "file:/srv/mirror/debian"


def test_no_apt_sources_at_all_means_no_mirror(tmp_path: Path) -> None:
    assert AptSources.read((tmp_path / "absent.list", tmp_path / "absent.d")).mirror("bookworm") is None


def test_a_disabled_deb822_stanza_is_not_the_mirror(apt: Callable[..., tuple[Path, ...]]) -> None:
    sources = apt({"sources.list.d/debian.sources": """\
        Types: deb
        URIs: http://disabled.example/debian
        Suites: bookworm
        Components: main
        Enabled: no

        Types: deb
        URIs: http://mirror.example/debian
        Suites: bookworm
        Components: main
        """})
    assert AptSources.read(sources).mirror("bookworm") == "http://mirror.example/debian"


def test_a_debian_mirror_in_vars_yaml_beats_the_one_from_apt_sources(
    recipes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apt = AptSources.of("http://apt.example/debian")
    got = resolve(recipes_root=recipes, recipe_dir=recipes / "sub", cli={}, platform=ARM64, host=AMD64, apt=apt)
    assert got["DEBIAN_MIRROR"] == "http://vars.example/debian"


# --- the reproducibility environment ---

def test_the_build_environment_is_derived_from_source_date_epoch_and_fixed_values() -> None:
    env = build_environment({"SOURCE_DATE_EPOCH": "1735689600", "KBUILD_BUILD_USER": "u",
                             "KBUILD_BUILD_HOST": "h", "UNRELATED": "x"})
    assert env["SOURCE_DATE_EPOCH"] == "1735689600"
    assert env["KBUILD_BUILD_TIMESTAMP"] == "Wed Jan  1 00:00:00 UTC 2025"
    assert (env["KBUILD_BUILD_USER"], env["KBUILD_BUILD_HOST"]) == ("u", "h")
    assert env["KCONFIG_NOTIMESTAMP"] == "1"
    assert env["KBUILD_BUILD_VERSION"] == "1"
    assert (env["LC_ALL"], env["LANG"], env["TZ"]) == ("C", "C", "UTC")
    assert "UNRELATED" not in env


def test_the_kbuild_timestamp_follows_source_date_epoch() -> None:
    env = build_environment({"SOURCE_DATE_EPOCH": "0", **{k: DEFAULTS[k] for k in DEFAULTS}})
    assert env["KBUILD_BUILD_TIMESTAMP"] == "Thu Jan  1 00:00:00 UTC 1970"
    assert (env["KBUILD_BUILD_USER"], env["KBUILD_BUILD_HOST"]) == ("builder", "builder")
