"""builder: recipes in, BuildKit builds, artifacts out, doit knowing what is up to date.

The package is a stack of layers, bottom first; each imports only its own and those below it
(tests/unit/test_layers.py holds that, lazy and type-only imports included, and that no import cycle exists):

    core       errors, run, log, platforms, locations: one error type, one way to run a program and to announce
               a step, the target platforms, where out/ and the build state are
    model      yamlfile, files, keys, reference, settings, variables, recipe, profile, meta: the project parsed
               and validated once into typed values (the command line too, frozen)
    host       engine, backend, http, credentials, registry, sources, outputs, hashindex, oci, qemu: what
               builder talks to, each call with a deadline; out/'s transaction and its stat record
    resolve    graph, render, plan, project, images, identity: recipes resolved into a graph per platform and
               rendered into pure plans; identity is the one part that asks the engine or a registry
    build      executor, toolchain, kmodules, signatures: plans carried out, the build images bootstrapped,
               module signatures checked
    schedule   tasks, memo: doit task dicts made from plans, and the plan memo that makes a no-op cheap
    cli        commands, doitglue, why: the `builder` commands, doit's glue (doit and builder build take one
               path), "why did this rebuild"
"""

__version__ = "0.1.0"
