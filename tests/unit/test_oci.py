"""OCI pieces made by hand (builder/host/oci.py): the gzip member, the config of an image to run, and the
archive docker load and skopeo both read. Real tools read them in tests/integration/test_imager.py."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from builder.core.errors import RecipeError
from builder.host import oci
from builder.model.recipe import Recipe


def test_the_gzip_member_is_fixed_bytes_that_gzip_reads_whole_or_streamed(tmp_path: Path) -> None:
    data = os.urandom(100_000) + bytes(3_000_000)
    packed = oci.gzip_bytes(data)
    assert packed[:10] == bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 2, 0xFF])  # no name, mtime 0, OS unknown
    assert gzip.decompress(packed) == data
    source, dest = tmp_path / "plain", tmp_path / "packed"
    source.write_bytes(data)
    plain, digest, size = oci.gzip_file(source, dest)
    assert dest.read_bytes() == packed and size == len(packed)
    assert plain == "sha256:" + hashlib.sha256(data).hexdigest()
    assert digest == "sha256:" + hashlib.sha256(packed).hexdigest()
    assert gzip.decompress(oci.gzip_bytes(b"")) == b""


def _image(epoch: int = 1700000000) -> oci.Entry:
    layer = oci.Blob(oci.LAYER_MEDIA, oci.gzip_bytes(b"tree"))
    config = oci.config("amd64", epoch, ["sha256:" + hashlib.sha256(b"tree").hexdigest()], ["builder: recipe x"],
                        {"Entrypoint": ["python3"], "Env": ["SOURCE_DATE_EPOCH=1700000000"]})
    return oci.manifest(config, [layer]), config, [layer], "127.0.0.1:5005/builder/x:v1"


def test_an_archive_is_an_oci_layout_and_a_docker_load_manifest_over_the_same_blobs(tmp_path: Path) -> None:
    manifest, config, layers, reference = _image()
    oci.archive(tmp_path / "x.tar", 1700000000, [(manifest, config, layers, reference)])
    with tarfile.open(tmp_path / "x.tar") as tar:
        names = tar.getnames()
        assert names == ["blobs", "blobs/sha256", *sorted(f"blobs/sha256/{b.digest[7:]}" for b in (manifest, config,
                                                                                                   *layers)),
                         "index.json", "manifest.json", "oci-layout"]
        assert {m.mtime for m in tar.getmembers()} == {1700000000} and {m.uid for m in tar.getmembers()} == {0}
        read = {name: tar.extractfile(name).read() for name in names if tar.getmember(name).isfile()}  # type: ignore[union-attr]
    index = json.loads(read["index.json"])
    (entry,) = index["manifests"]
    assert entry["digest"] == manifest.digest and entry["platform"] == {"architecture": "amd64", "os": "linux"}
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "v1"
    assert json.loads(read["manifest.json"]) == [{"Config": f"blobs/sha256/{config.digest[7:]}",
                                                  "RepoTags": [reference],
                                                  "Layers": [f"blobs/sha256/{layers[0].digest[7:]}"]}]
    for name, data in read.items():
        if name.startswith("blobs/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]  # content-addressed
    assert json.loads(config.data)["created"] == "2023-11-14T22:13:20Z"
    assert oci.read_archive(tmp_path / "x.tar") == index["manifests"]


def test_the_same_images_are_the_same_archive_bytes_and_nothing_half_written_is_left(tmp_path: Path) -> None:
    for name in ("a.tar", "b.tar"):
        manifest, config, layers, reference = _image()
        oci.archive(tmp_path / name, 1700000000, [(manifest, config, layers, reference)])
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "b.tar"]
    manifest, config, layers, _ = _image(1)
    oci.archive(tmp_path / "c.tar", 1, [(manifest, config, layers, None)])
    assert (tmp_path / "c.tar").read_bytes() != (tmp_path / "a.tar").read_bytes()
    with tarfile.open(tmp_path / "c.tar") as tar:
        assert json.loads(tar.extractfile("manifest.json").read())[0]["RepoTags"] == []  # type: ignore[union-attr]


def _recipe(**image: object) -> dict[str, object]:
    return {"name": "x", "variant": "imager", "steps": [{"install": "true"}], "finalize": [{"from": "/out/"}],
            "outputs": ["x-amd64.tar"], "image": {"base": "IMAGER", **image}}


def test_an_image_recipe_is_checked_where_it_is_declared() -> None:
    recipe = Recipe.model_validate(_recipe(entrypoint=["python3"], env={"A": "1"}))
    assert recipe.image is not None and recipe.image.base == "IMAGER" and recipe.image.workdir == "/"
    for changes, message in [
        ({"outputs": ["x.tar", "y.tar"]}, "an image recipe has one output, the OCI archive"),
        ({"outputs": ["x.iso"]}, "an image recipe has one output, the OCI archive"),
        ({"image": {"base": "IMAGER", "env": {"SOURCE_DATE_EPOCH": "1"}}}, "SOURCE_DATE_EPOCH"),
        ({"image": {"base": "hub"}}, "IMAGER"),
        ({"image": {"base": "scratch", "workdir": "relative"}}, "expected an absolute path"),
        ({"image": {"base": "scratch", "name": "Not A Ref"}}, "is not an image reference"),
    ]:
        with pytest.raises((ValueError, RecipeError), match=message):
            Recipe.model_validate({**_recipe(), **changes})


def test_a_tree_layer_is_sorted_clamped_and_owned_by_root(tmp_path: Path) -> None:
    tree = tmp_path / "tree.tar"
    with tarfile.open(tree, "w") as tar:
        for name, mtime in (("b", 2_000_000_000), ("a", 5)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.uid, info.uname = 1, mtime, 1000, "me"
            tar.addfile(info, io.BytesIO(b"x"))
    blob, diff_id = oci.layer(tree, 1700000000)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob.data))) as tar:
        assert [(m.name, m.mtime, m.uid, m.uname) for m in tar.getmembers()] == [
            ("a", 5, 0, ""), ("b", 1700000000, 0, "")]
    assert diff_id == "sha256:" + hashlib.sha256(gzip.decompress(blob.data)).hexdigest()
