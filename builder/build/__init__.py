"""Carrying plans out: the executor (fetch, build, publish), the toolchain and imager images, kernel
module signatures. Imports core, model, host, resolve.
"""
