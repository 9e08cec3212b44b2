"""Native torch routes for KFC and patches: strided views of the padded input and matmuls.

Each one-hot index pattern of a (non-transposed) convolution is a selection, so
the unfolded input is a strided view of the padded input (`Tensor.unfold` per
spatial dimension). KFC then is one matrix product per group. The product is
symmetric, so only the blocks on and above the diagonal are computed and the
rest is mirrored. Returns `NotImplemented` where the view does not apply
(transposed convolutions; padding modes torch pads only up to 3 spatial dims).

KFAC-reduce and the averaged patches never form the patches: they are sums of
the input against [K_d, I_d] matrices of counts (`tnconv.runtime.position_sums`).

>>> import torch
>>> from tnconv.spec.conv_spec import ConvSpec
>>> spec = ConvSpec(2, 2, kernel_size=3, input_size=(5, 5), padding=1)
>>> kfc(spec, {"reduction": "sum", "structure": "full", "group_average": False},
...     torch.rand(3, 2, 5, 5)).shape
torch.Size([1, 18, 18])
"""

from __future__ import annotations

from math import prod
from typing import Any

import torch

from tnconv.runtime.interpreter import shares_memory
from tnconv.runtime.product import add_symmetric_product, mirror_upper
from tnconv.runtime.native import pad_input
from tnconv.runtime.position_sums import position_sums, reduce_runner
from tnconv.spec.conv_spec import ConvSpec

__all__ = ["unfolded", "kfc", "patches", "supported", "averaged_patches", "kfac_reduce"]


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
    result = view.permute(order).reshape(n, g, prod(spec.output_size), -1)
    if shares_memory(result, (x,)):
        # 1×1 kernels: the patches are x itself, reshaped; a caller writing into them
        # must not change x (F.unfold and the TN route return new memory too)
        return result.clone(memory_format=torch.contiguous_format)
    return result.contiguous()


def averaged_patches(spec: ConvSpec, options: dict, x: torch.Tensor) -> torch.Tensor:
    """Mean patch ū[n, g, d] = (1/∏O) Σ_o u[n, g, d, o], one product per spatial dimension."""
    return position_sums(spec)(x, 1.0 / prod(spec.output_size))


def kfac_reduce(spec: ConvSpec, options: dict, x: torch.Tensor) -> torch.Tensor:
    """KFAC-reduce factor as the "kfac_reduce" network computes it."""
    return reduce_runner(spec, options)(x)
