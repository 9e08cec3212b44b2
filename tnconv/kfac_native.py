"""Native torch routes for KFC and patches: strided views of the padded input and matmuls.

Each one-hot index pattern of a (non-transposed) convolution is a selection, so
the unfolded input is a strided view of the padded input (`Tensor.unfold` per
spatial dimension). KFC then is one matrix product per group. The product is
symmetric, so only the blocks on and above the diagonal are computed and the
rest is mirrored. Returns `NotImplemented` where the view does not apply
(transposed convolutions; padding modes torch pads only up to 3 spatial dims).

KFAC-reduce and the averaged patches only need Σ_o Π_d, a [K_d, I_d] matrix of
counts per dimension (for any padding mode, and for transposed convolutions,
where o is the pattern's input leg). The mean patch is then one matrix product
per spatial dimension, the first one reading the input in place. With
`options["bias"]` the ones column joins the mean patch before the product.

>>> import torch
>>> from tnconv.spec import ConvSpec
>>> spec = ConvSpec(2, 2, kernel_size=3, input_size=(5, 5), padding=1)
>>> kfc(spec, {"reduction": "sum", "structure": "full", "group_average": False},
...     torch.rand(3, 2, 5, 5)).shape
torch.Size([1, 18, 18])
"""

from __future__ import annotations

from math import prod
from typing import Any, Callable

import torch

from .cache import LRUCache
from .gram import add_symmetric_product, mirror_upper
from .index_pattern import IndexPattern
from .native import pad_input
from .spec import ConvSpec

__all__ = ["unfolded", "kfc", "patches", "supported", "averaged_patches", "kfac_reduce",
           "position_sums", "reduce_runner"]

_COUNTS = LRUCache(name="summed_patterns")
_SUMS = LRUCache(name="position_sums")
_REDUCERS = LRUCache(name="kfac_reduce_runners")


def supported(spec: ConvSpec) -> bool:
    """Whether the strided-view route applies to `spec`."""
    return not spec.transposed and (spec.padding_mode == "zeros" or spec.ndim <= 3)


def unfolded(spec: ConvSpec, x: torch.Tensor) -> torch.Tensor:
    """Strided view V[n, g, c, o…, k…] of the padded input (no copy beyond the padding)."""
    view = pad_input(x, spec) if any(p for pair in spec.padding for p in pair) else x
    n, g = x.shape[0], spec.groups
    view = view.reshape(n, g, spec.in_channels // g, *view.shape[2:])
    for d, (k, s, dil) in enumerate(zip(spec.kernel_size, spec.stride, spec.dilation)):
        dim = 3 + d
        reach = dil * (k - 1) + 1
        view = view.unfold(dim, reach, s)  # [..., O_d, ..., reach]
        if dil > 1:
            view = view[..., ::dil]
    return view


def _patch_rows(spec: ConvSpec, x: torch.Tensor) -> torch.Tensor:
    """U[g, c·k…, n·o…] copied contiguously (rows: the patch entries, in unfold's order)."""
    nd = spec.ndim
    view = unfolded(spec, x)  # n, g, c, o1..oN, k1..kN
    order = (1, 2, *range(3 + nd, 3 + 2 * nd), 0, *range(3, 3 + nd))
    g = spec.groups
    return view.permute(order).reshape(g, -1, x.shape[0] * prod(spec.output_size))


def _scale(spec: ConvSpec, batch: int, options: dict) -> float:
    count = {"mean": batch * prod(spec.output_size), "batch": batch, "sum": 1}
    groups = spec.groups ** 2 if options["group_average"] else 1
    return 1.0 / (count[options["reduction"]] * groups)


def kfc(spec: ConvSpec, options: dict, x: torch.Tensor, chunk: int | None = None) -> Any:
    """KFC factor as the "kfc" network computes it, `chunk` samples at a time."""
    if not supported(spec):
        return NotImplemented
    full = options["structure"] == "full"
    g = 1 if options["group_average"] else spec.groups
    d = spec.in_channels // spec.groups * prod(spec.kernel_size)
    out = x.new_zeros((g, d, d) if full else (g, d))
    scale = _scale(spec, x.shape[0], options)
    for part in x.split(chunk or x.shape[0]):
        u = _patch_rows(spec, part)
        if options["group_average"]:
            u = u.sum(0, keepdim=True)
        if full:  # the scale rides on the products: no pass over the [G, D, D] result
            add_symmetric_product(out, u, scale)
        else:
            out += torch.linalg.vecdot(u, u)
        del u
    result = mirror_upper(out) if full else out.mul_(scale)
    return result[0] if options["group_average"] else result


def patches(spec: ConvSpec, options: dict, x: torch.Tensor) -> Any:
    """Patch matrix [N, G, ∏O, D] as the "patches" network computes it."""
    if not supported(spec):
        return NotImplemented
    nd = spec.ndim
    view = unfolded(spec, x)  # n, g, c, o…, k…
    order = (0, 1, *range(3, 3 + nd), 2, *range(3 + nd, 3 + 2 * nd))
    n, g = x.shape[0], spec.groups
    return view.permute(order).reshape(n, g, prod(spec.output_size), -1)


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


def position_sums(spec: ConvSpec) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> Σ_o u[n, g, d, o] as [N, G, D] (∏O times the mean patch), decided once per spec."""
    return _SUMS.get_or_create(spec, lambda: _position_sums(spec))


def _position_sums(spec: ConvSpec) -> Callable[[torch.Tensor], torch.Tensor]:
    groups, sizes = spec.groups, spec.input_size
    if _is_pointwise(spec):  # 1×1 kernels: the strided pixels, summed
        picks = (slice(None), slice(None)) + tuple(
            slice(0, s * (o - 1) + 1, s) for s, o in zip(spec.stride, spec.output_size))
        dims = tuple(range(2, 2 + spec.ndim))
        return lambda x: x[picks].sum(dim=dims).reshape(x.shape[0], groups, -1)
    patterns = spec.patterns()
    window = _window_sum(patterns[0]) if spec.ndim == 1 and not spec.transposed \
        and patterns[0].mode == "zeros" else None
    counts_for: dict = {}  # (device, dtype) -> the [K, I] counts of each dimension

    def run(x: torch.Tensor) -> torch.Tensor:
        y = x.reshape(-1, *sizes)
        if window is not None and y.shape[0] < patterns[0].kernel_size:
            return window(y).reshape(x.shape[0], groups, -1)
        key = (x.device, x.dtype)
        counts = counts_for.get(key)
        if counts is None:
            counts = counts_for.setdefault(key, [
                None if _tiles(p, spec.transposed) else
                _summed_pattern(p, spec.transposed, x.device, x.dtype) for p in patterns])
        rows, last = y.shape[0], len(sizes) - 1
        # The first dimension first: one broadcast matmul [K_1, I_1] @ [I_1, rest] per
        # row reads x once at nearly the speed of a sum; a thin [.., I_N] @ [I_N, K_N]
        # product over all of x first ran 2-3x slower (MKL is slow with few output
        # columns). Non-overlapping patches (ViT's patch embedding) need no counts:
        # crop to O·K and sum over O, reading x contiguously (1.5x faster).
        for d, (pattern, c) in enumerate(zip(patterns, counts)):
            if c is None:
                size, k = pattern.output_size, pattern.kernel_size
                y = y.reshape(rows, sizes[d], -1)[:, :size * k].reshape(rows, size, -1).sum(1)
                rows *= k
            elif d == last:
                y = y.reshape(-1, sizes[d]) @ c.T  # [rows·K_1…K_(N-1), K_N]
            else:
                y = torch.matmul(c, y.reshape(rows, sizes[d], -1))  # [rows, K_d, rest]
                rows *= c.shape[0]
        return y.reshape(x.shape[0], groups, -1)

    return run


def _window_sum(pattern: IndexPattern) -> Callable[[torch.Tensor], torch.Tensor]:
    """Σ_o of the zero-padded sliding windows along the last dimension: [..., K].

    Few rows of a long 1d signal: summing its windows reads less than the [K, I] counts.
    """
    pads = pattern.padding
    span = (pattern.kernel_size - 1) * pattern.dilation + 1
    taps = slice(None, None, pattern.dilation)

    def run(y: torch.Tensor) -> torch.Tensor:
        padded = torch.nn.functional.pad(y, pads) if any(pads) else y
        return padded.unfold(-1, span, pattern.stride)[..., taps].sum(-2)

    return run


def averaged_patches(spec: ConvSpec, options: dict, x: torch.Tensor) -> torch.Tensor:
    """Mean patch ū[n, g, d] = (1/∏O) Σ_o u[n, g, d, o], one matmul per spatial dimension."""
    return position_sums(spec)(x).mul_(1.0 / prod(spec.output_size))


def reduce_runner(spec: ConvSpec, options: dict) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> the KFAC-reduce factor as the "kfac_reduce" network computes it (set up once).

    `options` as the network's, with "bias": the ones column joins the mean patch.
    """
    sums, positions = position_sums(spec), prod(spec.output_size)
    group_average, bias = options["group_average"], options.get("bias", False)
    mean, diagonal = options["reduction"] == "mean", options["structure"] == "diagonal"

    def run(x: torch.Tensor) -> torch.Tensor:
        summed = sums(x).transpose(0, 1)  # [G, N, D], ∏O times ū
        if group_average:
            summed = summed.mean(0, keepdim=True)
        coefficient = 1.0 / x.shape[0] if mean else 1.0
        if bias:  # the ones column, appended after averaging
            ubar = torch.cat([summed * (1.0 / positions),
                              summed.new_ones(summed.shape[0], summed.shape[1], 1)], 2)
        else:  # both 1/∏O in the coefficient
            ubar, coefficient = summed, coefficient / positions ** 2
        if diagonal:
            result = (ubar * ubar).sum(1).mul_(coefficient)
        else:  # the normalisation rides on the product (a pass over [G, D, D] doubled the
            # time of large-D layers); beta=0: the 1-element input is never read
            result = torch.baddbmm(ubar.new_empty(1, 1, 1), ubar.transpose(1, 2), ubar,
                                   beta=0, alpha=coefficient)
        return result[0] if group_average else result

    return run


def kfac_reduce(spec: ConvSpec, options: dict, x: torch.Tensor) -> torch.Tensor:
    """KFAC-reduce factor as the "kfac_reduce" network computes it."""
    key = (spec, tuple(sorted(options.items())))
    return _REDUCERS.get_or_create(key, lambda: reduce_runner(spec, options))(x)
