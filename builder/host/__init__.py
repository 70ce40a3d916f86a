"""What builder talks to: the Docker engine, BuildKit (buildx), registries, HTTP downloads, out/'s
transaction, OCI image bytes, QEMU. Each call has a deadline. Imports builder.core and builder.model.
"""
