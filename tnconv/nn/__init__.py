"""The torch front-end of tnconv.

>>> from tnconv.nn import functional
>>> callable(functional.conv)
True
"""

from . import functional

__all__ = ["functional"]
