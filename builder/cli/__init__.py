"""The commands: the `builder` command group, the doit glue (doit and builder build take one path) and
`builder why`. May import every layer.
"""
