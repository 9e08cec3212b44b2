"""The one exception type tnconv raises for bad input.

>>> from tnconv.errors import TNConvError, argument_error
>>> err = argument_error("conv", "stride", 0, "a positive int or tuple of positive ints")
>>> isinstance(err, ValueError)
True
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

__all__ = ["TNConvError", "argument_error", "path_argument", "positive_int"]


class TNConvError(ValueError):
    """Raised for every invalid argument, shape or hyper-parameter.

    A `ValueError`; the message names the operation, the argument, the value received
    and what is allowed.

    Examples:
        >>> import torch, tnconv
        >>> try:
        ...     tnconv.unfold(torch.rand(1, 2, 8), kernel_size=0)
        ... except tnconv.TNConvError as error:
        ...     print(error)
        tnconv.unfold: argument 'kernel_size' got 0; allowed: an int >= 1 or a tuple of 1 such ints (at most 2147483647).
    """


def argument_error(operation: str, argument: str, value: Any, allowed: str) -> TNConvError:
    """Build a `TNConvError` that names the operation, argument, value and what is allowed."""
    return TNConvError(
        f"{operation}: argument '{argument}' got {value!r}; allowed: {allowed}."
    )


def path_argument(operation: str, value: Any, argument: str = "path") -> Path:
    """`value` as a Path, or a `TNConvError` if it is no file name (None, a number…)."""
    if not isinstance(value, (str, PathLike)):
        raise argument_error(operation, argument, value, "a file name (str or pathlib.Path)")
    return Path(value)


def positive_int(operation: str, argument: str, value: Any,
                 allowed: str = "a positive int") -> int:
    """`value` itself if it is an int >= 1 (True is no int here), else a `TNConvError`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise argument_error(operation, argument, value, allowed)
    return value
