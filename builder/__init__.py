"""builder: recipes in, BuildKit builds, artifacts out, doit knowing what is up to date.

Data flow, one module per layer (each imports only the layers below it):

    errors, run, log           - one error type, one way to run a program, one way to announce a step
    reference                  - image references, parsed once by the distribution rules
    platforms, settings        - target platforms and their names; the command line parsed once (frozen)
    variables                  - the layered template variables and the reproducibility environment
    recipe                     - YAML recipes parsed and validated once into typed objects
    graph                      - recipes resolved into a graph: stage edges (rendered) and artifact edges
                                 (another task's published outputs); cycles are errors
    credentials, http          - every credential sent (netrc, URL userinfo) and its redaction; the one
                                 HTTP client, with a stall and an overall deadline on every request
    sources                    - download cache / mirror, sha256 + sha512 verification
    render                     - a target rendered to a Dockerfile (build, dependents' and export stages)
                                 and a build context held in memory, a digest per file
    engine, identity           - the Docker engine (socket queries with deadlines, SDK for the rest);
                                 portable identities of toolchains, images and published artifacts
    backend                    - BuildKit requests (output kinds, platform, secrets, cache) turned into
                                 `docker buildx build` / `DOCKER_BUILDKIT=1 docker build` commands
    hashindex                  - "is this file's sha256 still X?": a stat record (git's index model)
    outputs                    - out/: atomic installation, SHA256SUMS, manifest.json, input signatures
    plan                       - the pure plan of one target on one platform: inputs, digest, request
    project                    - recipes, variables, settings and caches of one project; its plans
    executor                   - carries a plan out: fetch, build, install, record
    tasks                      - doit task dicts made from plans
    why, qemu, toolchain, cli  - "why did this rebuild", boot checks, the toolchain image, the commands
"""

__version__ = "0.1.0"
