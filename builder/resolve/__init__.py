"""Recipes resolved into a graph per platform and rendered into builds: the project, its plans (pure:
they ask no engine or registry) and the portable identities of what builds take (identity, the
one part that asks). Imports core, model, host.
"""
