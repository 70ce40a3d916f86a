"""The foundation: one error type, one way to run a program and to announce a step, the target
platforms, and where a project's files go. Imports nothing else of builder.
"""
