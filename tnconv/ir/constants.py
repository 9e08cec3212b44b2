"""Materialisation of the symbolic constants a network carries.

A constant's value is hashable and symbolic (an `IndexPattern`, a fused
sub-network, …). This registry turns it into a dense torch tensor (execution)
or numpy array (export). New constant kinds register a numpy builder; the torch
builder defaults to converting that array, cached per (value, device, dtype).

>>> from tnconv.spec.index_pattern import IndexPattern
>>> to_numpy(IndexPattern(2, 1, 1, (0, 0), input_size=3, output_size=2)).shape
(2, 2, 3)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable

import numpy as np

from tnconv.cache import LRUCache
from tnconv.spec.index_pattern import IndexPattern, materialize

__all__ = ["register_constant", "to_numpy", "to_torch", "Scaled", "signature"]

_NUMPY_BUILDERS: dict[type, Callable[[Any], np.ndarray]] = {}
_TORCH_BUILDERS: dict[type, Callable[[Any, Any, Any], Any]] = {}
_TORCH_CACHE = LRUCache(name="constants")


def register_constant(kind: type, numpy_builder: Callable[[Any], np.ndarray],
                      torch_builder: Callable[[Any, Any, Any], Any] | None = None) -> None:
    """Teach tnconv to materialise constants of type `kind`."""
    _NUMPY_BUILDERS[kind] = numpy_builder
    if torch_builder is not None:
        _TORCH_BUILDERS[kind] = torch_builder


def to_numpy(value: Hashable) -> np.ndarray:
    """Dense float64 numpy array of a symbolic constant."""
    return _NUMPY_BUILDERS[type(value)](value)


def to_torch(value: Hashable, device: Any, dtype: Any) -> Any:
    """Dense torch tensor of a symbolic constant on `device` / `dtype` (cached)."""
    builder = _TORCH_BUILDERS.get(type(value))
    if builder is not None:
        return builder(value, device, dtype)
    import torch

    key = (value, str(torch.device(device)), dtype)
    return _TORCH_CACHE.get_or_create(
        key, lambda: torch.as_tensor(to_numpy(value), device=device, dtype=dtype))


register_constant(IndexPattern, lambda p: p.to_numpy(np.float64), materialize)


@dataclass(frozen=True)
class Scaled:
    """`factor` times the constant `value` (a scale moved onto a constant)."""

    value: Hashable
    factor: float

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(getattr(self.value, "shape"))

    def to_numpy(self) -> np.ndarray:
        return to_numpy(self.value) * self.factor

    def describe(self) -> str:
        inner = self.value.describe() if hasattr(self.value, "describe") else "a constant"
        return f"{inner}, × {self.factor!r}"


def _scaled_torch(value: Scaled, device: Any, dtype: Any) -> Any:
    key = (value, str(device), dtype)
    return _TORCH_CACHE.get_or_create(key, lambda: to_torch(value.value, device, dtype)
                                      * value.factor)


register_constant(Scaled, Scaled.to_numpy, _scaled_torch)


def signature(value: Hashable) -> Hashable:
    """A key under which equal constants compare equal, whatever their legs are named
    (a constant kind with a `signature()` method defines it; else the value itself)."""
    method = getattr(value, "signature", None)
    return method() if callable(method) else value
