"""KFAC-reduce's position sums: Σ_o of the patches without forming them, in a few torch ops.

KFAC-reduce and the averaged patches only need Σ_o Π_d, a [K_d, I_d] matrix of
counts per dimension (for any padding mode, and for transposed convolutions,
where o is the pattern's input leg). The input meets them one dimension at a
time, the first dimension first, as batched products on the input in place;
1×1 strided kernels are one product with a pixel mask, non-overlapping patches
(ViT) a product with ones, and few rows of a long 1d signal one product of its
phases with a mask. A scale (the normalisation) rides on the last matrix.
Everything but the torch ops is laid out once per (device, dtype, batch, scale):
right after a large op has evicted the caches, each torch call and Python
attribute read costs microseconds, so a call is a handful of them.

>>> import torch
>>> from tnconv.spec.conv_spec import ConvSpec
>>> spec = ConvSpec(2, 2, kernel_size=3, input_size=(5, 5), padding=1)
>>> x = torch.rand(4, 2, 5, 5, dtype=torch.float64)
>>> u = torch.nn.functional.unfold(x, 3, padding=1)       # [N, D, O]
>>> torch.allclose(position_sums(spec)(x)[:, 0], u.sum(2))
True
>>> factor = reduce_runner(spec, {"reduction": "mean", "structure": "full",
...                               "group_average": False})(x)
>>> torch.allclose(factor[0], u.mean(2).T @ u.mean(2) / 4)
True
"""

from __future__ import annotations

from functools import partial
from math import prod
from typing import Any, Callable

import torch

from tnconv.cache import LRUCache, kept
from tnconv.spec.index_pattern import IndexPattern
from tnconv.spec.conv_spec import ConvSpec

__all__ = ["position_sums", "reduce_runner", "Reducer"]

_COUNTS = LRUCache(name="summed_patterns")
_SUMS = LRUCache(name="position_sums")
_REDUCERS = LRUCache(name="kfac_reduce_runners")


def _summed_pattern(pattern: IndexPattern, transposed: bool, device: Any, dtype: Any):
    """Σ_o Π as a dense [K, I] tensor of counts (o, i in the convolution's own roles)."""
    def build() -> torch.Tensor:
        src = torch.tensor(pattern.source_indices(), device=device)
        if transposed:  # the pattern's output leg is this convolution's input
            return (src >= 0).to(dtype)
        counts = torch.zeros(pattern.kernel_size, pattern.input_size + 1, device=device,
                             dtype=dtype)
        counts.scatter_add_(1, torch.where(src >= 0, src, pattern.input_size),
                            torch.ones(src.shape, device=device, dtype=dtype))
        return counts[:, :-1]

    return _COUNTS.get_or_create((pattern, transposed, str(device), dtype), build)


def _is_pointwise(spec: ConvSpec) -> bool:
    return (not spec.transposed and all(k == 1 for k in spec.kernel_size)
            and not any(p for pair in spec.padding for p in pair))


def _tiles(pattern: IndexPattern, transposed: bool) -> bool:
    """Whether the pattern cuts its dimension into non-overlapping patches (stride = kernel)."""
    return (not transposed and pattern.stride == pattern.kernel_size and pattern.dilation == 1
            and pattern.padding == (0, 0))


def position_sums(spec: ConvSpec) -> Callable[..., torch.Tensor]:
    """(x, scale=1.0) -> scale · Σ_o u[n, g, d, o] as [N, G, D] (∏O·scale times the mean patch).

    The route is decided once per spec and the operands once per (device,
    dtype, batch, scale), so that a call is a handful of torch ops: the scale
    rides on the last matrix of counts, never a pass of its own.
    """
    return _SUMS.get_or_create(spec, lambda: _PositionSums(spec))


class _PositionSums:
    """Σ_o of the patches of one spec, as a short list of prepared torch ops per input."""

    def __init__(self, spec: ConvSpec):
        self.spec = spec
        self.patterns = spec.patterns()
        self._prepared: dict = {}

    def __call__(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.prepared(x.device, x.dtype, x.shape[0], scale)(x)

    def prepared(self, device: Any, dtype: Any, batch: int, scale: float,
                 groups_first: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
        """x -> the sums, for inputs of this device, dtype and batch size (built once);
        `groups_first`: as [G, N, D] (a view, with no transpose call for one group)."""
        def build() -> Callable[[torch.Tensor], torch.Tensor]:
            run, groups = self._prepare(device, dtype, batch, scale), self.spec.groups
            if groups_first and groups == 1:
                return partial(_viewed, run, (1, batch, -1))
            if groups_first:
                return partial(_groups_first, run, (batch, groups, -1))
            return partial(_viewed, run, (batch, groups, -1))

        return kept(self._prepared, (device, dtype, batch, scale, groups_first), build)

    def _counts(self, pattern: IndexPattern, device: Any, dtype: Any) -> torch.Tensor:
        return _summed_pattern(pattern, self.spec.transposed, device, dtype)

    def _prepare(self, device: Any, dtype: Any, batch: int,
                 scale: float) -> Callable[[torch.Tensor], torch.Tensor]:
        spec, patterns = self.spec, self.patterns
        rows, sizes = batch * spec.in_channels, spec.input_size
        if _is_pointwise(spec):  # 1×1 kernels: one product with a mask of the strided pixels
            mask = torch.zeros(sizes, device=device, dtype=dtype)
            mask[tuple(slice(0, s * (o - 1) + 1, s)
                       for s, o in zip(spec.stride, spec.output_size))] = scale
            mask = mask.reshape(1, -1, 1)
            return lambda x: torch.bmm(x.reshape(1, rows, -1), mask)
        first = patterns[0]
        if spec.ndim == 1 and rows < first.kernel_size and not spec.transposed \
                and first.mode == "zeros":
            phases = _phase_sum(first, rows, scale, device, dtype)
            return lambda x: phases(x.reshape(rows, -1))
        steps = []  # each: y -> y reduced over its next spatial dimension
        lead, last = rows, len(sizes) - 1
        for d, pattern in enumerate(patterns):
            if d == last:  # [lead·K_1…K_(N-1), I_N] @ [I_N, K_N], the scale on the counts
                counts_t = (self._counts(pattern, device, dtype) * scale).T.contiguous()[None]
                steps.append(partial(_last_dim, counts_t))
            elif _tiles(pattern, spec.transposed):
                ones = torch.ones(1, 1, pattern.output_size, device=device, dtype=dtype)
                steps.append(partial(_tile_sum, ones.expand(lead, 1, -1), sizes[d],
                                     pattern.kernel_size))
                lead *= pattern.kernel_size
            else:  # one batched product [K_d, I_d] @ [I_d, rest] per leading row
                counts = self._counts(pattern, device, dtype)
                steps.append(partial(_dim_product, counts.expand(lead, *counts.shape)))
                lead *= counts.shape[0]

        def run(x: torch.Tensor) -> torch.Tensor:
            y = x
            for step in steps:
                y = step(y)
            return y

        return run


def _viewed(run: Callable, shape: tuple, x: torch.Tensor) -> torch.Tensor:
    return run(x).reshape(shape)  # a view, but for the phases' gathered taps


def _groups_first(run: Callable, shape: tuple, x: torch.Tensor) -> torch.Tensor:
    return run(x).reshape(shape).transpose(0, 1)


# The first dimension is reduced first: one batched product [K_1, I_1] @ [I_1, rest]
# per row reads x once at nearly the speed of a sum; a thin [.., I_N] @ [I_N, K_N]
# product over all of x first ran 2-3x slower (MKL is slow with few output columns).
# `torch.bmm` on the expanded counts, not `torch.matmul`: matmul's broadcasting
# dispatches ~15 ops per call, which cost 30-50 µs right after a large op has
# evicted the caches (the position the benchmark times us in).
def _dim_product(counts: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.bmm(counts, y.reshape(counts.shape[0], counts.shape[2], -1))


def _last_dim(counts_t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.bmm(y.reshape(1, -1, counts_t.shape[1]), counts_t)


def _tile_sum(ones: torch.Tensor, size: int, kernel: int, y: torch.Tensor) -> torch.Tensor:
    """Non-overlapping patches (ViT's patch embedding) need no counts: crop to O·K and sum
    over O, reading y contiguously, as a product with ones (`sum(1)` took 2.5x longer)."""
    lead, out = ones.shape[0], ones.shape[2]
    return torch.bmm(ones, y.reshape(lead, size, -1)[:, :out * kernel].reshape(lead, out, -1))


def _phase_sum(pattern: IndexPattern, rows: int, scale: float, device: Any,
               dtype: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """[rows, I] -> scale · Σ_o of the zero-padded sliding windows: [rows, K], one product.

    Few rows of a long 1d signal (wav2vec2's front end): the [K, I] counts would
    be read whole for a few rows of data. Tap t reads positions o·s + t·dil − p,
    that is phase b = (t·dil − p) mod s of the signal viewed [I/s, s], rows
    q = o + a, a = ⌊(t·dil − p)/s⌋. One [A, I/s] mask of the rows each shift a
    covers (the scale on it) meets the phases in one batched product; tap t is
    entry (a − a_min)·s + b of its [A·s] result per row.
    """
    stride, size, out = pattern.stride, pattern.input_size, pattern.output_size
    offsets = [t * pattern.dilation - pattern.padding[0] for t in range(pattern.kernel_size)]
    shifts = [offset // stride for offset in offsets]
    first, phases = min(shifts), -(-size // stride)
    mask = torch.zeros(max(shifts) - first + 1, phases, device=device, dtype=dtype)
    for row, shift in enumerate(range(first, max(shifts) + 1)):
        start, stop = max(shift, 0), min(shift + out, phases)
        if stop > start:  # a shift wholly in the padding reads nothing (a negative stop
            mask[row, start:stop] = scale  # would count from the end)
    mask = mask.expand(rows, *mask.shape)
    taps = [offset - first * stride for offset in offsets]
    tail = phases * stride - size  # zeros on the right, so the signal splits into phases
    if taps == list(range(mask.shape[1] * stride)):
        pick: Any = None  # every entry, in order
    elif taps == list(range(taps[0], taps[0] + len(taps))):
        pick = slice(taps[0], taps[0] + len(taps))
    else:
        pick = torch.tensor(taps, device=device)

    def run(y: torch.Tensor) -> torch.Tensor:
        if tail:
            y = torch.nn.functional.pad(y, (0, tail))
        z = torch.bmm(mask, y.reshape(rows, phases, stride)).view(rows, -1)
        if pick is None:
            return z
        return z[:, pick] if isinstance(pick, slice) else z.index_select(1, pick)

    return run


def reduce_runner(spec: ConvSpec, options: dict) -> "Reducer":
    """x -> the KFAC-reduce factor as the "kfac_reduce" network computes it (set up once
    per spec and options, so that every caller shares its per-input set-ups).

    `options` as the network's, with "bias": the ones column joins the mean patch.
    """
    key = (spec, tuple(sorted(options.items())))
    return _REDUCERS.get_or_create(key, lambda: Reducer(spec, options))


class Reducer:
    """The KFAC-reduce factor of one spec and options; `for_input(x)` the per-call closure.

    The normalisation c (1/N or 1) is split as √c on each side of the product and
    rides, with 1/∏O, on the position sums' last matrix: the factor is then one plain
    `bmm` (`baddbmm`'s alpha cost 35-70 µs more in a cold cache). Everything but the
    torch ops is decided once per (batch, dtype, device).
    """

    def __init__(self, spec: ConvSpec, options: dict):
        self._sums, self._positions = position_sums(spec), prod(spec.output_size)
        self._group_average, self._bias = options["group_average"], options.get("bias", False)
        self._mean = options["reduction"] == "mean"
        self._diagonal = options["structure"] == "diagonal"
        self._prepared: dict = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.for_input(x)(x)

    def for_input(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The factor for inputs of x's batch size, dtype and device."""
        key = (x.shape[0], x.dtype, x.device)
        return kept(self._prepared, key, lambda: self._prepare(*key))

    def _prepare(self, batch: int, dtype: Any, device: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        group_average, bias, diagonal = self._group_average, self._bias, self._diagonal
        root = (1.0 / batch) ** 0.5 if self._mean else 1.0
        scaled_sums = self._sums.prepared(device, dtype, batch, root / self._positions, True)
        if not (group_average or bias or diagonal):
            return partial(_gram, scaled_sums)

        def factor(x: torch.Tensor) -> torch.Tensor:
            ubar = scaled_sums(x)  # [G, N, D], √c·ū
            if group_average:
                ubar = ubar.mean(0, keepdim=True)
            if bias:  # the ones column, appended after averaging
                ubar = torch.cat([ubar, ubar.new_full((*ubar.shape[:2], 1), root)], 2)
            if diagonal:
                result = (ubar * ubar).sum(1)
            else:
                result = torch.bmm(ubar.transpose(1, 2), ubar)
            return result[0] if group_average else result

        return factor


def _gram(scaled_sums: Callable, x: torch.Tensor) -> torch.Tensor:
    ubar = scaled_sums(x)  # [G, N, D]
    return torch.bmm(ubar.transpose(1, 2), ubar)
