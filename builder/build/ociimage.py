"""An image recipe's archive: its BuildKit-exported tree becomes an OCI image, written to out/ as NAME.tar.

The image is two layers: the build image's canonical rootfs (IMAGER or TOOLCHAIN, exactly the bytes the
bootstrap made: its diff id is the rootfs digest its identity names, so an auditor can tie the image to the
lock), then the recipe's tree, normalized (builder.host.oci.layer). The config's dates and history are
SOURCE_DATE_EPOCH, which its environment carries too. Nothing else goes in: no build info, no attestation.

The base layer's gzip (some 100 MB from a 300 MB rootfs) is kept in the state directory by its digests and
checked on every use, so a rebuild does not compress it again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from builder.core import run
from builder.core.errors import BuildError
from builder.core.log import say
from builder.host import oci
from builder.resolve.plan import IMAGE_TREE, Plan, Workspace

PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def default_tag(root: Path) -> str:
    """TAG when none is given: git describe of the project (Talos's choice), else latest."""
    try:
        found = run.run(["git", "-C", str(root), "describe", "--tags", "--always", "--dirty"], capture=True,
                        check=False, timeout=30)
    except BuildError:
        return "latest"
    text = found.stdout.decode(errors="replace").strip()
    return text if found.returncode == 0 and text else "latest"


def base_ref(plan: Plan) -> str | None:
    """The image an image recipe's first layer comes from (None: scratch)."""
    spec = plan.recipe.image
    if spec is None or spec.base == "scratch":
        return None
    found = [ref for ref, where in plan.images.items() if where == spec.base]
    if not found:
        raise BuildError(f"{plan.label}: the image builds on {spec.base}, which the plan does not start from")
    return found[0]


def _base_layer(plan: Plan, workspace: Workspace, ref: str, identity: str) -> oci.FileBlob:
    """The rootfs of ``ref`` as a gzip layer, from the cache when a checked copy is there."""
    if not identity.startswith("rootfs:sha256:"):
        raise BuildError(f"{plan.label}: {ref} has no canonical rootfs digest ({identity}); an image builds only "
                         "on a build image this project bootstrapped", hint="builder toolchain ensure --force")
    diff_id = identity.removeprefix("rootfs:")
    cache = workspace.locations.state / "layers"
    cache.mkdir(parents=True, exist_ok=True)
    record = cache / f"{diff_id.removeprefix('sha256:')}.json"
    packed = cache / f"{diff_id.removeprefix('sha256:')}.tar.gz"
    if record.is_file() and packed.is_file():
        known = json.loads(record.read_text())
        digest = hashlib.sha256()
        with open(packed, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        if f"sha256:{digest.hexdigest()}" == known.get("digest") and packed.stat().st_size == known.get("size"):
            return oci.FileBlob(oci.LAYER_MEDIA, packed, known["digest"], known["size"])
    say(f"    {plan.label}: compressing the {ref} rootfs layer (once; kept in {workspace.locations.shown(cache)})")
    plain, part = cache / f".{diff_id.removeprefix('sha256:')}.tar", packed.with_suffix(".part")
    try:
        workspace.services.engine.save_layer(ref, diff_id, plain)
        got, digest_text, size = oci.gzip_file(plain, part)
        if got != diff_id:
            raise BuildError(f"{plan.label}: the layer of {ref} changed while it was read")
        part.replace(packed)
    finally:  # an interrupted compression leaves nothing behind
        plain.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    record.write_text(json.dumps({"diff_id": diff_id, "digest": digest_text, "size": size}))
    return oci.FileBlob(oci.LAYER_MEDIA, packed, digest_text, size)


def assemble(plan: Plan, workspace: Workspace, inputs: dict[str, str], export: Path) -> dict[str, object]:
    """Make the archive out of ``export``'s tree; what the manifest records of it."""
    spec = plan.recipe.image
    assert spec is not None
    epoch = int(plan.variables["SOURCE_DATE_EPOCH"])
    tree = export / IMAGE_TREE
    layer, diff_id = oci.layer(tree, epoch)
    tree.unlink()
    layers: list[oci.Blob | oci.FileBlob] = [layer]
    diff_ids, history = [diff_id], [f"builder: recipe {plan.recipe.name}"]
    ref = base_ref(plan)
    if ref is not None:
        identity = next(v for k, v in inputs.items() if k.endswith(f" {ref}"))
        base = _base_layer(plan, workspace, ref, identity)
        layers.insert(0, base)
        diff_ids.insert(0, identity.removeprefix("rootfs:"))
        history.insert(0, f"builder: {spec.base} rootfs ({identity})")
    runtime: dict[str, object] = {
        "Env": [*([] if "PATH" in spec.env else [PATH]), f"SOURCE_DATE_EPOCH={epoch}",
                *(f"{k}={v}" for k, v in sorted(spec.env.items()))],
        "WorkingDir": spec.workdir,
    }
    if spec.entrypoint:
        runtime["Entrypoint"] = list(spec.entrypoint)
    if spec.cmd:
        runtime["Cmd"] = list(spec.cmd)
    config = oci.config(plan.platform.arch, epoch, diff_ids, history, runtime)
    manifest = oci.manifest(config, layers)
    (name,) = plan.outputs
    oci.archive(export / name, epoch, [(manifest, config, layers, spec.name)])
    details: dict[str, object] = {"reference": spec.name, "manifest": manifest.digest, "config": config.digest,
                                  "layers": [blob.digest for blob in layers], "platform": plan.platform.docker}
    if plan.settings.push:
        details.update(push(plan, workspace, manifest, config, layers))
    return {"image": details}


def push(plan: Plan, workspace: Workspace, manifest: oci.Blob, config: oci.Blob,
         layers: list[oci.Blob | oci.FileBlob]) -> dict[str, object]:
    """PUSH=1, as a transaction: the blobs, this arch's manifest and the index over every arch's manifest are
    pushed by digest and read back, and only then does the tag move to the index. A failure at any point
    leaves the tag where it was. The index lists this arch and every other arch of the same reference that
    out/manifest.json records as pushed and the registry holds."""
    from builder.host import outputs, registry

    spec, settings = plan.recipe.image, plan.settings
    assert spec is not None and settings.registry is not None  # PUSH=1 needs REGISTRY (settings)
    seconds, session, where = settings.registry_timeout, workspace.services.registries, "PUSH"
    repository = f"{settings.registry}/{settings.username}/{plan.recipe.name}"  # as every pushed task's image
    tag = (settings.tag or default_tag(workspace.root)) + (f"-{plan.flavor}" if plan.flavor else "")
    tagged = registry.Reference.parse(f"{repository}:{tag}", where)

    def by_digest(digest: str) -> registry.Reference:
        return registry.Reference.parse(f"{repository}@{digest}", where)

    say(f"    {plan.label}: pushing {repository}@{manifest.digest[:19]}…")
    for blob in (*layers, config):
        data = blob.data if isinstance(blob, oci.Blob) else blob.path.read_bytes()
        registry.push_blob(tagged, blob.digest, data, seconds=seconds, where=where, session=session)
    registry.push_manifest(by_digest(manifest.digest), manifest.media_type, manifest.data, seconds=seconds,
                           where=where, session=session)
    entries = {plan.platform.docker: manifest.descriptor(
        platform={"architecture": plan.platform.arch, "os": "linux"})}
    for record in outputs.read_manifest(workspace.out_dir).values():  # the other arches' pushed images
        image = record.get("image") or {}
        if image.get("pushed") == str(tagged) and image["platform"] not in entries:
            found = registry.descriptor(by_digest(str(image["manifest"])), seconds=seconds, where=where,
                                        session=session)
            if found is not None:
                arch = str(image["platform"]).split("/")[1]
                entries[str(image["platform"])] = {**found, "platform": {"architecture": arch, "os": "linux"}}
    index = oci.index([entries[key] for key in sorted(entries)])
    registry.push_manifest(by_digest(index.digest), index.media_type, index.data, seconds=seconds, where=where,
                           session=session)
    for digest in (manifest.digest, index.digest):  # read back before the tag moves
        found = registry.descriptor(by_digest(digest), seconds=seconds, where=where, session=session)
        if found is None or found["digest"] != digest:
            raise BuildError(f"{plan.label}: the registry {tagged.registry} does not give back {digest} after the "
                             f"push; the tag {tagged.name} was not moved", where=where)
    signed = _sign(plan, workspace, repository, [manifest.digest, index.digest]) if settings.image_signing_key else []
    registry.push_manifest(tagged, index.media_type, index.data, seconds=seconds, where=where, session=session)
    arches = ", ".join(sorted(key.split("/")[1] for key in entries))
    say(f"    {plan.label}: pushed {tagged} ({arches}) {index.digest}" + (", signed" if signed else ""))
    return {"pushed": str(tagged), "index": index.digest, "index_platforms": sorted(entries), "signatures": signed}


def _sign(plan: Plan, workspace: Workspace, repository: str, digests: list[str]) -> list[dict[str, str]]:
    """IMAGE_SIGNING_KEY: each digest's cosign signature image pushed (tag sha256-HEX.sig), read back and
    verified with the key's public half before the image's tag moves. The key is read here, on the host."""
    from builder.host import cosign, registry

    settings = plan.settings
    assert settings.image_signing_key is not None
    seconds, session, where = settings.registry_timeout, workspace.services.registries, "PUSH"
    key = cosign.load_private_key(workspace.root / settings.image_signing_key, root=workspace.root)
    made = []
    for digest in digests:
        signature = cosign.sign(key, repository, digest)
        ref = registry.Reference.parse(f"{repository}:{signature.tag}", where)
        for data in (signature.payload, signature.config):
            registry.push_blob(ref, "sha256:" + hashlib.sha256(data).hexdigest(), data, seconds=seconds, where=where,
                               session=session)
        registry.push_manifest(ref, cosign.MANIFEST_MEDIA, signature.manifest, seconds=seconds, where=where,
                               session=session)
        found = registry.manifest(ref, seconds=seconds, where=where, session=session)
        if found is None:
            raise BuildError(f"{plan.label}: the registry {ref.registry} does not give back the signature {ref} "
                             "after the push; the tag was not moved", where=where)
        cosign.check(key.public_key(), repository, digest, found[1],
                     lambda blob, ref=ref: registry.blob(ref, blob, seconds=seconds, where=where, session=session))
        made.append({"digest": digest, "signature": "sha256:" + hashlib.sha256(signature.manifest).hexdigest()})
    return made
