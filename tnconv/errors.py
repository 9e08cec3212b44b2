"""The one exception type tnconv raises for bad input.

>>> from tnconv.errors import TNConvError, argument_error
>>> err = argument_error("conv", "stride", 0, "a positive int or tuple of positive ints")
>>> isinstance(err, ValueError)
True
"""

from __future__ import annotations

from typing import Any

__all__ = ["TNConvError", "argument_error"]


class TNConvError(ValueError):
    """Raised for every invalid argument, shape or hyper-parameter."""


def argument_error(operation: str, argument: str, value: Any, allowed: str) -> TNConvError:
    """Build a `TNConvError` that names the operation, argument, value and what is allowed."""
    return TNConvError(
        f"{operation}: argument '{argument}' got {value!r}; allowed: {allowed}."
    )
