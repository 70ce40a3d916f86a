"""builder: recipes in, BuildKit builds, artifacts out, doit knowing what is up to date.

Data flow, one module per layer (each imports only the layers below it):

    errors, run, log           - one error type, one way to run a program, one way to announce a step
    platforms, variables       - target platforms and the layered template variables
    recipe                     - YAML recipes parsed and validated once into typed objects
    graph                      - recipes resolved into a dependency graph (cycles are errors)
    sources                    - download cache / mirror, sha256 + sha512 verification
    render                     - a resolved target rendered to a Dockerfile + build context
    engine, backend            - the Docker engine (SDK) and BuildKit builds (subprocess)
    outputs                    - atomic installation into out/ and the SHA256SUMS manifest
    plan                       - the build plan for one target on one platform, with its input digest
    tasks                      - doit task dicts made from plans
    cli, qemu, toolchain       - user-facing commands, boot checks, the toolchain image
"""

__version__ = "0.1.0"
