"""One parser of image references, by the distribution rules: registry host detection, path components,
tag, digest and docker's defaults; PKG_NAME and REGISTRY must name their registry."""

from __future__ import annotations

import pytest

from builder.core.errors import BuildError
from builder.model.reference import Reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("text", "registry", "repository", "tag", "digest", "explicit"), [
    ("debian", "docker.io", "library/debian", "latest", None, False),
    ("debian:bookworm", "docker.io", "library/debian", "bookworm", None, False),
    ("acme/tool:1", "docker.io", "acme/tool", "1", None, False),  # acme has no '.' or ':': a namespace
    ("docker.io/library/debian:12", "docker.io", "library/debian", "12", None, True),
    ("index.docker.io/acme/tool", "docker.io", "acme/tool", "latest", None, True),
    ("localhost/tool", "localhost", "tool", "latest", None, True),
    ("localhost:5000/a/b/c:t", "localhost:5000", "a/b/c", "t", None, True),
    ("127.0.0.1:5005/test/kernel:v1.2_3-rc", "127.0.0.1:5005", "test/kernel", "v1.2_3-rc", None, True),
    ("registry.example/tool", "registry.example", "tool", "latest", None, True),
    (f"registry.example/tool@{DIGEST}", "registry.example", "tool", None, DIGEST, True),
    (f"registry.example/tool:7@{DIGEST}", "registry.example", "tool", "7", DIGEST, True),
    ("[::1]:5000/a:b", "[::1]:5000", "a", "b", None, True),
])
def test_the_distribution_rules_and_defaults(text: str, registry: str, repository: str, tag: str | None,
                                             digest: str | None, explicit: bool) -> None:
    ref = Reference.of(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest, ref.explicit_registry) == \
        (registry, repository, tag, digest, explicit)
    assert ref.name == (digest or tag)


@pytest.mark.parametrize("text", ["", "Tool:1", "a b", "a:b:c", "a/:b", "a//b", "a@sha256:abc", "-a", "a_/b",
                                  "a:" + "t" * 129, "x" * 256, f"a@sha256:{'AB' * 32}", "http://host.example/a"])
def test_what_is_not_a_reference_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Reference.of(text)


def test_a_registry_reference_must_name_its_registry() -> None:
    assert str(Reference.parse("127.0.0.1:5005/test/kernel:t1", "PKG_KERNEL")) == "127.0.0.1:5005/test/kernel:t1"
    for text in ("kernel:latest", "acme/kernel:1", "Registry.Example/Kernel"):
        with pytest.raises(BuildError, match=r"^PKG_KERNEL: .* is not a registry image reference; "
                                             r"expected HOST\[:PORT\]/NAME:TAG$"):
            Reference.parse(text, "PKG_KERNEL")


def test_where_the_api_answers_and_how() -> None:
    assert Reference.of("debian").api_host == "registry-1.docker.io"
    assert Reference.of("registry.example:8443/a").api_host == "registry.example:8443"
    assert [Reference.of(t).loopback for t in ("127.0.0.2:5000/a", "localhost/a", "[::1]:5/a", "r.example/a")] \
        == [True, True, True, False]


def test_another_tag_or_digest_of_the_same_repository() -> None:
    ref = Reference.of("127.0.0.1:5005/test/kernel:t1")
    assert str(ref.with_name("t1-amd64")) == "127.0.0.1:5005/test/kernel:t1-amd64"
    assert str(ref.with_name(DIGEST)) == f"127.0.0.1:5005/test/kernel@{DIGEST}"
