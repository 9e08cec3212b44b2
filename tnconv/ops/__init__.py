"""One builder per operation family; importing this package registers them all.

>>> sorted(OPERATIONS)[:2]
['forward', 'unfold']
"""

from . import convolution  # noqa: F401  (registers forward, unfold)
from .registry import OPERATIONS, Operation, get_operation, register

__all__ = ["OPERATIONS", "Operation", "get_operation", "register"]
