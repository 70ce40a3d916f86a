"""builder: recipes in, BuildKit builds, artifacts out, doit knowing what is up to date.

The package is a stack of layers, bottom first; each imports only its own and those below it
(tests/unit/test_layers.py holds that, lazy and type-only imports included, and that no import cycle exists):

    scripts    builder.sh, media: what runs inside the build images (the media module assembles every boot
               medium in the IMAGER image; standard library only, its shared rules imported by the host)
    core       errors, run, log, platforms, locations: one error type, one way to run a program and to announce
               a step, the target platforms, where out/ and the build state are
    model      yamlfile, files, keys, reference, aptsources, settings, variables, recipe, profile, meta: the
               project parsed and validated once into typed values (the command line and the machine's apt
               sources too, frozen)
    host       engine, backend, http, credentials, registry, services, sources, outputs, hashindex, oci, qemu:
               what builder talks to, each call with a deadline, one Services value per invocation holding the
               engine, BuildKit and registry session; out/'s transaction and its stat record
    resolve    graph, render, plan, project, images, identity: recipes resolved into a graph per platform and
               made into frozen plans that hold no project; identity is the one part that asks the engine or
               a registry
    build      executor, toolchain, kmodules, signatures: plans carried out, the build images bootstrapped,
               module signatures checked
    schedule   tasks, memo: the full plan described as plain data, the one function that makes doit's task
               dicts from a description, and the plan memo that keeps it (a no-op parses nothing)
    cli        commands, doitglue, why: the `builder` commands, doit's glue (doit and builder build take one
               path), "why did this rebuild"
"""

__version__ = "0.1.0"
