"""doit task dicts made from plans, and the plan memo that makes a no-op cheap. Imports core, model,
host, resolve, build.
"""
