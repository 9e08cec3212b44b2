"""Native torch kernels: the `strategy="auto"` route where a network is exactly one.

Each function takes (spec, options, *tensors) and returns the result, or
`NotImplemented` where torch has no single kernel for this spec (then the
tensor-network route runs).

>>> import torch
>>> from tnconv.spec.conv_spec import ConvSpec
>>> spec = ConvSpec(2, 3, kernel_size=3, input_size=(5,), padding="same", padding_mode="circular")
>>> conv_forward(spec, {}, torch.rand(1, 2, 5), torch.rand(3, 2, 3)).shape
torch.Size([1, 3, 5])
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from tnconv.cache import LRUCache
from tnconv.runtime.take import strip_rows, take
from tnconv.spec.conv_spec import ConvSpec

__all__ = ["conv_forward", "pad_input", "NATIVE_NDIM",
           "conv_input_vjp", "conv_weight_vjp", "pad_adjoint", "sampled_weight_vjp",
           "sampled_weight_vjp_applies"]

#: Spatial dimensions torch has native convolution kernels for.
NATIVE_NDIM = (1, 2, 3)
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _symmetric(spec: ConvSpec) -> bool:
    return all(left == right for left, right in spec.padding)  # type: ignore[union-attr]


def pad_input(x: torch.Tensor, spec: ConvSpec) -> torch.Tensor:
    """Pad `x` explicitly as torch's Conv modules do (any padding mode, asymmetric pairs)."""
    pads: list[int] = []
    for left, right in reversed(spec.padding):  # type: ignore[arg-type]
        pads += [left, right]
    mode = "constant" if spec.padding_mode == "zeros" else spec.padding_mode
    return F.pad(x, pads, mode=mode)


def conv_forward(spec: ConvSpec, options: dict, x: torch.Tensor, weight: torch.Tensor) -> Any:
    """`F.conv{1,2,3}d` / `F.conv_transpose{1,2,3}d`, padding as the spec says."""
    if spec.ndim not in NATIVE_NDIM:
        return NotImplemented
    common = dict(stride=spec.stride, dilation=spec.dilation, groups=spec.groups)
    if spec.transposed:
        if not _symmetric(spec):
            return NotImplemented
        return _CONV_T[spec.ndim](x, weight, padding=[p for p, _ in spec.padding],
                                  output_padding=spec.output_padding, **common)
    if spec.padding_mode == "zeros" and _symmetric(spec):
        return _CONV[spec.ndim](x, weight, padding=[p for p, _ in spec.padding], **common)
    return _CONV[spec.ndim](pad_input(x, spec), weight, **common)


# ------------------------------------------------------------ VJPs (backward kernels)
def _placeholder(like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor of `shape` that costs no memory; torch's backward reads only its shape."""
    return like.new_empty(1).expand(shape)


def _conv_backward(spec: ConvSpec, grad_output: torch.Tensor, x: torch.Tensor, w: torch.Tensor,
                   padding: list[int], mask: list[bool]) -> tuple:
    return torch.ops.aten.convolution_backward(
        grad_output, x, w, None, list(spec.stride), padding, list(spec.dilation),
        spec.transposed, list(spec.output_padding), spec.groups, mask)


def _padded_size(spec: ConvSpec) -> tuple[int, ...]:
    return tuple(i + left + right  # type: ignore[union-attr]
                 for i, (left, right) in zip(spec.input_size, spec.padding))  # type: ignore


def pad_adjoint(grad: torch.Tensor, spec: ConvSpec) -> torch.Tensor:
    """Adjoint of `pad_input`: fold a gradient on the padded input back onto the input.

    Zero padding crops; the other modes add every padded pixel onto the pixel
    it copies (the padding's own index pattern, one dimension at a time).
    """
    from tnconv.spec.index_pattern import IndexPattern

    for d, ((left, right), size) in enumerate(zip(spec.padding, spec.input_size)):  # type: ignore
        dim = d + 2
        if spec.padding_mode == "zeros":
            grad = grad.narrow(dim, left, size)
        elif left or right:
            copy = IndexPattern(1, 1, 1, (left, right), input_size=size,
                                output_size=size + left + right, mode=spec.padding_mode)
            source = torch.tensor(copy.source_indices()[0], device=grad.device)
            shape = list(grad.shape)
            shape[dim] = size
            grad = grad.new_zeros(shape).index_add(dim, source, grad)
    return grad


def conv_input_vjp(spec: ConvSpec, options: dict, weight: torch.Tensor,
                   grad_output: torch.Tensor) -> Any:
    """Input VJP by torch's convolution backward kernel (a padded input is folded back)."""
    if spec.ndim not in NATIVE_NDIM or (spec.transposed and not _symmetric(spec)):
        return NotImplemented
    batch = (grad_output.shape[0], spec.in_channels)
    if spec.transposed and not any(spec.output_padding):  # the convolution of the cotangent:
        # torch's forward kernel, 1.3x faster than the transposed convolution's backward
        return _CONV[spec.ndim](grad_output, weight, None, spec.stride,
                                [p for p, _ in spec.padding],  # type: ignore[union-attr]
                                spec.dilation, spec.groups)
    if spec.transposed or (spec.padding_mode == "zeros" and _symmetric(spec)):
        x = _placeholder(grad_output, batch + tuple(spec.input_size))  # type: ignore[arg-type]
        padding = [p for p, _ in spec.padding]  # type: ignore[union-attr]
        return _conv_backward(spec, grad_output, x, weight, padding, [True, False, False])[0]
    x = _placeholder(grad_output, batch + _padded_size(spec))
    grad = _conv_backward(spec, grad_output, x, weight, [0] * spec.ndim, [True, False, False])[0]
    return pad_adjoint(grad, spec)


def conv_weight_vjp(spec: ConvSpec, options: dict, x: torch.Tensor,
                    grad_output: torch.Tensor) -> Any:
    """Weight VJP by torch's convolution backward kernel (the input pre-padded if needed).

    Per-sample gradients have no single torch kernel: NotImplemented.
    """
    if (spec.ndim not in NATIVE_NDIM or options.get("per_sample")
            or (spec.transposed and not _symmetric(spec))):
        return NotImplemented
    w = _placeholder(grad_output, spec.weight_shape)
    padding = [p for p, _ in spec.padding]  # type: ignore[union-attr]
    if spec.transposed and not any(spec.output_padding):  # the weight VJP of the
        # convolution from the cotangent to x (as torch.nn.grad computes it)
        return torch.ops.aten.convolution_backward(
            x, grad_output, w, None, list(spec.stride), padding, list(spec.dilation), False,
            [0] * spec.ndim, spec.groups, [False, True, False])[1]
    if spec.transposed or (spec.padding_mode == "zeros" and _symmetric(spec)):
        return _conv_backward(spec, grad_output, x, w, padding, [False, True, False])[1]
    padded = pad_input(x, spec)
    return _conv_backward(spec, grad_output, padded, w, [0] * spec.ndim, [False, True, False])[1]


# ------------------------------------------------------- sampled weight VJP (tensor dropout)
def _strip_dim(spec: ConvSpec, options: dict) -> int:
    """The one spatial dim a spatial draw slices (its strips then run as torch's kernel,
    `_strips`), else -1: several sliced dims, or a transposed convolution with a padding
    mode torch's transposed kernel lacks."""
    dims = options.get("spatial_dims", "all")
    sliced = tuple(range(spec.ndim)) if dims == "all" else dims
    if len(sliced) != 1 or (spec.transposed and spec.padding_mode != "zeros"):
        return -1
    return sliced[0]


def sampled_weight_vjp_applies(spec: ConvSpec, options: dict) -> bool:
    """Whether `sampled_weight_vjp` may have a torch kernel for these options: a channel
    draw, or a spatial draw of one dim that leaves a convolution (`_strip_dim`); not per
    sample."""
    if spec.ndim not in NATIVE_NDIM or options.get("per_sample"):
        return False
    leg = options.get("leg")
    return leg == "channel" or (leg == "spatial" and _strip_dim(spec, options) >= 0)


def sampled_weight_vjp(spec: ConvSpec, options: dict, x: torch.Tensor,
                       grad_output: torch.Tensor, index: torch.Tensor,
                       weights: torch.Tensor) -> Any:
    """The sliced weight VJP as torch's weight-gradient kernel, its work falling with
    `keep`. NotImplemented where `sampled_weight_vjp_applies` says no, or torch has no
    kernel for the smaller convolution.

    - Channel leg: the kept input channels of every group (of `x`: the input of a
      transposed convolution too) are a convolution with fewer input channels; its
      gradient is rescaled and added into zeros at the kept channels.
    - Spatial leg of one dim: the strips the kept positions read, laid end to end
      (`_strips`)."""
    if not sampled_weight_vjp_applies(spec, options):
        return NotImplemented
    if options.get("leg") == "spatial":
        return _strips(spec, _strip_dim(spec, options), x, grad_output, index, weights)
    groups, per_group = spec.groups, spec.in_channels // spec.groups
    kept = index.numel()
    sliced = x.unflatten(1, (groups, per_group)).index_select(2, index).flatten(1, 2)
    grad = conv_weight_vjp(_fewer_channels(spec, groups * kept), {}, sliced, grad_output)
    if grad is NotImplemented:
        return NotImplemented
    shape = spec.weight_shape
    if spec.transposed:  # [C_in, C_out / G, K…]: the kept channels of each group on dim 0
        grad = grad.unflatten(0, (groups, kept)) * weights.view(1, -1, *(1,) * (spec.ndim + 1))
        result = grad.new_zeros(groups, per_group, *shape[1:]).index_add_(1, index, grad)
        return result.flatten(0, 1)
    grad = grad * weights.view(1, -1, *(1,) * spec.ndim)
    return grad.new_zeros(shape).index_add_(1, index, grad)


def _strips(spec: ConvSpec, d: int, x: torch.Tensor, grad_output: torch.Tensor,
            index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The weight VJP from the kept positions `index` of spatial dim `d`, rescaled by
    `weights`: the K rows each kept position reads (j·stride + t·dilation) of the padded
    data, laid end to end along `d`, are a convolution with stride K and dilation 1 along
    `d` whose outputs are the kept positions (no copy into the batch).

    A transposed convolution's weight VJP is the weight VJP of the convolution from its
    cotangent to its input (as `conv_weight_vjp` runs it): the cotangent, zero-padded,
    is the data, and `index` picks input positions."""
    data, cotangent = (grad_output, x) if spec.transposed else (x, grad_output)
    dim, size = d + 2, spec.kernel_size[d]
    strips, padding = _padded_strips(spec, d, data, strip_rows(
        index, spec.stride[d], size, spec.dilation[d]))
    scale = weights.view(-1, *(1,) * (cotangent.dim() - dim - 1))
    picked = take(cotangent, dim, index).mul_(scale)
    w = _placeholder(grad_output, spec.weight_shape)
    stride = [size if e == d else s for e, s in enumerate(spec.stride)]
    dilation = [1 if e == d else s for e, s in enumerate(spec.dilation)]
    return torch.ops.aten.convolution_backward(
        picked, strips, w, None, stride, padding, dilation, False,
        [0] * spec.ndim, spec.groups, [False, True, False])[1]


def _padded_strips(spec: ConvSpec, d: int, data: torch.Tensor,
                   rows: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """The `rows` (of the padded data) along spatial dim `d`, and the padding torch's
    kernel adds along the other dims.

    Zero padding with symmetric pairs along the other dims is never copied: the rows are
    taken from the unpadded data, those in the padding zeroed, and the kernel pads the
    other dims. Any other padding pads the whole data first (`pad_input`)."""
    pairs = spec.padding
    if spec.padding_mode == "zeros" and all(  # a transposed spec: zeros (`_strip_dim`)
            left == right for e, (left, right) in enumerate(pairs) if e != d):
        length = data.shape[d + 2]
        rows = rows - pairs[d][0]
        outside = ((rows < 0) | (rows >= length)).nonzero().view(-1)
        strips = take(data, d + 2, rows.clamp(0, length - 1)).index_fill_(d + 2, outside, 0)
        return strips, [0 if e == d else left for e, (left, _) in enumerate(pairs)]
    return take(pad_input(data, spec), d + 2, rows), [0] * spec.ndim


_FEWER_CHANNELS = LRUCache(name="fewer channels")


def _fewer_channels(spec: ConvSpec, in_channels: int) -> ConvSpec:
    """`spec` with `in_channels` input channels (cached, as a spec checks itself when
    built; `tnconv.clear_caches` empties it)."""
    return _FEWER_CHANNELS.get_or_create((spec, in_channels),
                                         lambda: replace(spec, in_channels=in_channels))
