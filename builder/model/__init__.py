"""The project parsed and validated once into typed values: YAML, project files, keys, image
references, settings, template variables, recipes, profiles, META values. It reads the project's files and
the host's apt sources, and asks nothing else, with one exception: meta also reads and writes the META
partition of a disk image, for `builder meta`. Imports only builder.core.
"""
