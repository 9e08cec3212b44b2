"""Call-site cache: raw public-function arguments -> validated, compiled set-up.

A second call of `tnconv.conv` with the same shapes and hyper-parameters skips
argument validation, `ConvSpec` construction and the compile lookup: one
dictionary lookup on the raw arguments. Arguments that are not hashable (lists)
simply bypass the cache.

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

__all__ = ["cached_call", "tensor_key"]

T = TypeVar("T")
_CALLS = LRUCache(name="calls")


def tensor_key(value: Any) -> Any:
    """A tensor's shape and dtype, or the type of anything else: a set-up validated for
    tensors never answers an array or a list, nor a tensor of another dtype."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape), value.dtype
    return type(value)


def _types(key: tuple) -> tuple:
    return tuple([_types(k) if k.__class__ is tuple else k.__class__ for k in key])


def cached_call(key: tuple, build: Callable[[], T], typed: Optional[tuple] = None) -> T:
    """`build()` once per hashable `key`; unhashable keys build every time.

    Keys match with their types: `True == 1` and `1.0 == 1` in Python, but a
    stride of True is an error where a stride of 1 is not. `typed` names the
    part of the key whose types can differ (the caller's own arguments; by
    default the whole key): typing only those keeps a hit at a few µs.
    """
    full = (key, _types(key if typed is None else typed))
    try:
        value = _CALLS.lookup(full)  # the hit path: no lock, the key hashed once
    except TypeError:  # unhashable
        return build()
    return _CALLS.get_or_create(full, build) if value is None else value
