"""Symbolic index patterns Π[k, o, i] for one spatial dimension.

Π[k, o, i] = 1 iff input pixel i meets kernel tap k at output pixel o. With
zero padding, i = o·S + k·D − P_left must lie in [0, I); the other padding modes
map an out-of-range position to the pixel that torch's padding would copy there
(circular wraps, reflect mirrors without repeating the edge, replicate clamps).
Every pattern is one-hot in i: each (k, o) reads at most one input pixel.

A pattern is a frozen, hashable description; a dense tensor is built only when
a program runs, on the requested device and dtype, and cached. Both caches (tap
tables and dense tensors) are named caches of `tnconv.cache`, so `clear_caches`
and `set_cache_size` reach them, and both check the size guard
(`tnconv.limits`) before they allocate. On the meta device a dense pattern is
an empty meta tensor of the right shape (shape inference only).

>>> p = IndexPattern(kernel_size=3, stride=1, dilation=1, padding=(1, 1),
...                  input_size=4, output_size=4, mode="zeros")
>>> p.source_indices()[:, 0].tolist()   # taps of output pixel 0
[-1, 0, 1]
>>> p.shape
(3, 4, 4)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tnconv.cache import LRUCache
from tnconv.errors import argument_error, positive_int
from tnconv.limits import check_size

__all__ = ["IndexPattern", "PADDING_MODES", "materialize"]

PADDING_MODES = ("zeros", "circular", "reflect", "replicate")
_DENSE_CACHE = LRUCache(name="patterns")
_SOURCE_CACHE = LRUCache(name="pattern_sources")


@dataclass(frozen=True)
class IndexPattern:
    """Index pattern of one spatial dimension, shape [K, O, I]."""

    kernel_size: int
    stride: int
    dilation: int
    padding: tuple[int, int]
    input_size: int
    output_size: int
    mode: str = "zeros"

    def __post_init__(self) -> None:
        for name in ("kernel_size", "stride", "dilation", "input_size", "output_size"):
            positive_int("IndexPattern", name, getattr(self, name), "an int >= 1")
        pair = self.padding  # negative in derived patterns (a VJP's crop), so any ints
        if not (isinstance(pair, tuple) and len(pair) == 2
                and all(isinstance(p, int) and not isinstance(p, bool) for p in pair)):
            raise argument_error("IndexPattern", "padding", pair, "a (left, right) pair of ints")
        if self.mode not in PADDING_MODES:
            raise argument_error("IndexPattern", "mode", self.mode,
                                 ", ".join(repr(m) for m in PADDING_MODES))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.kernel_size, self.output_size, self.input_size)

    def source_indices(self) -> np.ndarray:
        """Int array [K, O]: the input pixel read by tap k at output o, or -1 (padding zero).

        Built once per pattern (a named cache); a `TNConvError` if [K, O] exceeds the
        size guard (`tnconv.set_size_limit`).
        """
        return _SOURCE_CACHE.get_or_create(self, lambda: _source_indices(self))

    def to_numpy(self, dtype: Any = np.float64) -> np.ndarray:
        """Dense [K, O, I] array of zeros and ones."""
        check_size("IndexPattern", f"the dense pattern {self.describe()}", self.shape)
        src = self.source_indices()
        dense = np.zeros(self.shape, dtype=dtype)
        k, o = np.nonzero(src >= 0)
        dense[k, o, src[k, o]] = 1
        return dense

    def describe(self) -> str:
        """Short human-readable label, e.g. 'K=3 S=2 D=1 P=(1,1) I=8 O=4 zeros'."""
        left, right = self.padding
        return (f"K={self.kernel_size} S={self.stride} D={self.dilation} "
                f"P=({left},{right}) I={self.input_size} O={self.output_size} {self.mode}")


def _source_indices(pattern: IndexPattern) -> np.ndarray:
    check_size("IndexPattern", f"the tap table of pattern {pattern.describe()}",
               (pattern.kernel_size, pattern.output_size))
    k = np.arange(pattern.kernel_size)[:, None]
    o = np.arange(pattern.output_size)[None, :]
    pos = o * pattern.stride + k * pattern.dilation - pattern.padding[0]
    size = pattern.input_size
    if pattern.mode == "circular":
        pos = np.mod(pos, size)
    elif pattern.mode == "reflect":
        pos = np.abs(pos)
        pos = np.where(pos >= size, 2 * (size - 1) - pos, pos)
    elif pattern.mode == "replicate":
        pos = np.clip(pos, 0, size - 1)
    pos = np.where((pos >= 0) & (pos < size), pos, -1)
    pos.setflags(write=False)
    return pos


def materialize(pattern: IndexPattern, device: Any, dtype: Any) -> Any:
    """Dense torch tensor of `pattern` on `device` / `dtype`, cached per (pattern, device, dtype).

    A `TNConvError` if [K, O, I] exceeds the size guard; on the meta device, an
    (uninitialised) meta tensor of the pattern's shape.
    """
    import torch

    def build() -> torch.Tensor:
        check_size("IndexPattern", f"the dense pattern {pattern.describe()}", pattern.shape)
        if torch.device(device).type == "meta":
            return torch.empty(pattern.shape, device=device, dtype=dtype)
        src = torch.tensor(pattern.source_indices(), device=device)
        dense = torch.zeros(pattern.shape, device=device, dtype=dtype)
        k, o = torch.nonzero(src >= 0, as_tuple=True)
        dense[k, o, src[k, o]] = 1
        return dense

    return _DENSE_CACHE.get_or_create((pattern, str(torch.device(device)), dtype), build)
