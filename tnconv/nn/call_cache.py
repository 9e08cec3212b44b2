"""Call-site cache: raw public-function arguments -> validated, compiled set-up.

A second call of `tnconv.conv` with the same shapes and hyper-parameters skips
`ConvSpec` construction and the compile lookup: one dictionary lookup on the
raw arguments. The cache stores results, it never skips a check: the tensor
checks of `tnconv.nn.validate` run on every call before the lookup, and the key
holds everything the set-up's own checks read (shapes, dtypes, devices, the
arguments with their types), so a set-up answers only arguments it would itself
have accepted. Arguments that are not hashable (lists) simply bypass the cache.

>>> cached_call(("demo", 1), lambda: "built")
'built'
>>> cached_call(("demo", [1]), lambda: "unhashable key, built again")
'unhashable key, built again'
>>> cached_call(("demo", True), lambda: "True is not 1")
'True is not 1'
"""

from __future__ import annotations

from typing import Any, Callable, Optional, TypeVar

import torch

from tnconv.cache import LRUCache

__all__ = ["cached_call", "tensor_key", "value_types"]

T = TypeVar("T")
_CALLS = LRUCache(name="calls")


def tensor_key(value: Any) -> Any:
    """A tensor's shape, dtype and device, or the type of anything else: a set-up
    validated for tensors never answers an array or a list, nor a tensor of another
    dtype or on another device."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape), value.dtype, value.device
    return type(value)


def value_types(key: tuple) -> tuple:
    """The classes of `key`'s entries, nested tuples entry by entry (True is not 1)."""
    return tuple([value_types(k) if k.__class__ is tuple else k.__class__ for k in key])


def cached_call(key: tuple, build: Callable[[], T], typed: Optional[tuple] = None) -> T:
    """`build()` once per hashable `key`; unhashable keys build every time.

    Keys match with their types: `True == 1` and `1.0 == 1` in Python, but a
    stride of True is an error where a stride of 1 is not. `typed` names the
    part of the key whose types can differ (the caller's own arguments; by
    default the whole key): typing only those keeps a hit at a few µs.
    """
    full = (key, value_types(key if typed is None else typed))
    try:
        value = _CALLS.lookup(full)  # the hit path: no lock, the key hashed once
    except TypeError:  # unhashable
        return build()
    return _CALLS.get_or_create(full, build) if value is None else value
