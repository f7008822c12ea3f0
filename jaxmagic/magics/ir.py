"""Placeholder while the real adapter is written."""
from IPython.core.magic import Magics, magics_class


@magics_class
class IRMagics(Magics):
    pass
