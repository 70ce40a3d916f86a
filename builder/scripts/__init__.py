"""What runs inside the build images, the bottom layer: builder.sh (sourced into every build step) and
media.py (the media module, run by the image steps in the IMAGER image, and by the imager image on its own).

The host imports media.py's shared rules (the kernel command line, META's format) so that what it checks is
what the image runs. Imports only the standard library; every other layer may import it.
"""
