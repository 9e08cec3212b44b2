"""The size guard: a bound on the elements of any tensor or table tnconv would build.

A hyper-parameter off by a few orders of magnitude (a padding of 2**31, a
kernel of 2**20) describes a result, an index-pattern table or an unfolded
input of astronomically many elements. tnconv estimates those sizes from the
arguments alone and raises a `TNConvError` *before* it allocates anything,
instead of asking the allocator for terabytes. The bound is one number of
elements (not bytes), `DEFAULT_SIZE_LIMIT` = 2**31 unless `set_size_limit`
changed it (8 GiB of float32; torch's CPU kernels also index some tensors with
32-bit ints); what it covers:

- the result of every public operation (e.g. N·C_out·∏O for a convolution);
- the unfolded input where an operation forms it (`unfold`, `patches`, one
  sample's patches for `kfc`);
- each index pattern's tap table (K·O integers) and its dense form (K·O·I),
  checked where they are built, so `tnconv.compile(...)` users are covered too.

>>> set_size_limit(1000)
>>> check_size("demo", "the result", (10, 10, 10))
>>> check_size("demo", "the result", (10, 10, 11))  # doctest: +ELLIPSIS
Traceback (most recent call last):
  ...
tnconv.errors.TNConvError: demo: the result would have shape (10, 10, 11), 1100 elements; ...
>>> set_size_limit(DEFAULT_SIZE_LIMIT)
"""

from __future__ import annotations

from math import prod
from typing import Any, Iterable

from tnconv.cache import clear_caches
from tnconv.errors import TNConvError, positive_int

__all__ = ["DEFAULT_SIZE_LIMIT", "set_size_limit", "size_limit", "check_size",
           "check_operation", "UNFOLDING"]

#: Default bound: 2**31 elements (8 GiB of float32) in any one tensor or table.
DEFAULT_SIZE_LIMIT = 2 ** 31
_limit = DEFAULT_SIZE_LIMIT


def set_size_limit(elements: int) -> None:
    """Refuse, with a `TNConvError`, any tensor or table of more than `elements` elements.

    The bound applies to what tnconv would allocate: results, unfolded inputs
    and index-pattern tables (see the module `tnconv.limits`); the default is
    `DEFAULT_SIZE_LIMIT` = 2**31. It is checked before allocating, from the
    arguments' sizes, so a mistyped hyper-parameter fails at once. Lowering the
    bound empties tnconv's caches, so that no set-up accepted under the old bound
    is reused.
    """
    global _limit
    positive_int("tnconv.set_size_limit", "elements", elements)
    lowered, _limit = elements < _limit, elements
    if lowered:
        clear_caches()


def size_limit() -> int:
    """The current bound of `set_size_limit` (elements)."""
    return _limit


def check_size(operation: str, what: str, shape: Iterable[int]) -> None:
    """A `TNConvError` if a tensor of `shape` (described as `what`) would exceed the bound."""
    shape = tuple(shape)
    elements = prod(shape)
    if elements > _limit:
        raise TNConvError(f"{operation}: {what} would have shape {shape}, {elements} elements; "
                          f"allowed: at most {_limit} elements (tnconv.set_size_limit raises "
                          "the bound).")


#: Operations that lay out the unfolded input (`kfc` at least one sample's, in chunks).
UNFOLDING = frozenset(("unfold", "patches", "kfc"))


def check_operation(operation: str, op: Any, spec: Any, batch: int, options: dict) -> None:
    """The guard for registered operation `op` (a `tnconv.ops.Operation`) of `spec` on
    `batch` samples: its result, and one sample's unfolded input where `op` forms it."""
    check_size(operation, "the result", op.result_shape(spec, batch, **options))
    if op.name in UNFOLDING:
        check_size(operation, "the unfolded input of one sample",
                   (spec.in_channels * prod(spec.kernel_size), prod(spec.output_size)))
