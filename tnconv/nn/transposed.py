"""Transposed convolution, its VJPs, fold (col2im) and the transposed-convolution unfold.

All of any N. `conv_transpose` takes torch's arguments in torch's order and is
differentiable (backward by the compiled VJP networks of the transposed spec).
`fold` is `torch.nn.functional.fold` for any N; `unfold_transpose` unfolds the
input of a transposed convolution, so that the transposed convolution is the
weight matrix times it.

>>> import torch, tnconv
>>> x, w = torch.rand(2, 4, 5, 5), torch.rand(4, 3, 3, 3)
>>> tnconv.conv_transpose(x, w, stride=2, padding=1, output_padding=1).shape
torch.Size([2, 3, 10, 10])
>>> u = tnconv.unfold_transpose(x, 3, stride=2, padding=1, output_padding=1)
>>> u.shape
torch.Size([2, 36, 100])
>>> y = torch.rand(2, 3, 6, 6)
>>> tnconv.fold(tnconv.unfold(y, 3), (6, 6), 3).shape
torch.Size([2, 3, 6, 6])
"""

from __future__ import annotations

from math import prod
from typing import Any, Optional, Sequence

import torch

from tnconv.compiler import Compiled, compile
from tnconv.errors import argument_error
from tnconv.spec.conv_spec import MAX_SIZE, ConvSpec, error_context
from tnconv.nn._arguments import batched, check_groups, spatial_ndim
from tnconv.nn.call_cache import cached_call, tensor_key
from tnconv.nn.autograd import convolve
from tnconv.nn.derivatives import checked, expect_shape, full_shape, output_of, shape_of, size_key
from tnconv.nn.validate import floating, kernel_for, optional_bias, shape_fields
from tnconv.nn.functional import _add_bias

__all__ = ["conv_transpose", "conv_transpose_input_vjp", "conv_transpose_weight_vjp",
           "fold", "unfold_transpose"]


def transposed_spec(op: str, input: tuple[str, Any], weight: tuple[str, Any], stride: Any,
                    padding: Any, output_padding: Any, groups: Any, dilation: Any) -> ConvSpec:
    """Spec of a transposed convolution of an input with a [C_in, C_out/G, *K] weight, each
    given as (the caller's argument name, a tensor or a shape)."""
    (input_name, input_value), (weight_name, weight_value) = input, weight
    input_shape, weight_shape = shape_of(input_value), shape_of(weight_value)
    check_groups(op, groups)
    if input_shape[1] != weight_shape[0] or input_shape[1] % groups:
        raise argument_error(op, weight_name, f"shape {weight_shape}",
                             f"[C_in, C_out/groups, *kernel] with C_in={input_shape[1]} "
                             f"(the input's channels, a multiple of groups={groups})")
    fields = {**shape_fields(input_name, input_value, "in_channels", "input_size"),
              **shape_fields(weight_name, weight_value, "out_channels", "kernel_size")}
    with error_context(op, fields):
        spec = ConvSpec(input_shape[1], weight_shape[1] * groups, weight_shape[2:],
                        input_shape[2:], stride=stride, padding=padding,
                        dilation=dilation, groups=groups, transposed=True,
                        output_padding=output_padding)
    if spec.weight_shape != weight_shape:
        raise argument_error(op, weight_name, f"shape {weight_shape}",
                             f"shape [C_in, C_out/groups, *kernel] with C_in={input_shape[1]}")
    return spec


def conv_transpose(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                   stride=1, padding=0, output_padding=0, groups: int = 1, dilation=1, *,
                   strategy: str = "auto") -> torch.Tensor:
    """N-d transposed convolution, as `torch.nn.functional.conv_transpose{1,2,3}d` for any N.

    `x` is [N, C_in, *spatial] (or unbatched), `weight` [C_in, C_out/groups, *kernel].

    Examples:
        >>> import torch, tnconv
        >>> x, w = torch.rand(2, 4, 5, 5), torch.rand(4, 3, 3, 3)
        >>> y = tnconv.conv_transpose(x, w, stride=2, padding=1, output_padding=1)
        >>> torch.allclose(y, torch.nn.functional.conv_transpose2d(
        ...     x, w, stride=2, padding=1, output_padding=1), atol=1e-6)
        True
    """
    op = "tnconv.conv_transpose"
    floating(op, ("x", x), ("weight", weight))
    key = (op, tensor_key(x), tensor_key(weight), stride, padding, output_padding, groups, dilation,
           strategy)
    forward, unbatched = cached_call(key, lambda: _conv_transpose_setup(
        x, weight, stride, padding, output_padding, groups, dilation, strategy), typed=key[3:])
    bias = optional_bias(op, bias, ("x", x), forward.spec.out_channels)
    x = x.unsqueeze(0) if unbatched else x
    y = _add_bias(convolve(x, weight, forward), bias)
    return y.squeeze(0) if unbatched else y


def _conv_transpose_setup(x, weight, stride, padding, output_padding, groups, dilation,
                          strategy) -> tuple[Any, bool]:
    """Validate `conv_transpose`'s arguments; the compiled forward and whether x is unbatched."""
    op = "tnconv.conv_transpose"
    ndim = spatial_ndim(op, "weight", weight)
    x, unbatched = batched(x, ndim, op, "x")
    spec = transposed_spec(op, ("x", x), ("weight", weight), stride, padding, output_padding,
                           groups, dilation)
    return checked(op, compile("forward", spec, strategy=strategy), x.shape[0]), unbatched


def conv_transpose_input_vjp(input_size: Sequence[int], weight: torch.Tensor,
                             grad_output: torch.Tensor, stride=1, padding=0, output_padding=0,
                             groups: int = 1, dilation=1, *,
                             strategy: str = "auto") -> torch.Tensor:
    """Gradient of `conv_transpose` with respect to its input of shape `input_size`.

    Examples:
        >>> import torch, tnconv
        >>> w, g = torch.rand(4, 3, 3), torch.rand(2, 3, 11)
        >>> tnconv.conv_transpose_input_vjp((2, 4, 5), w, g, stride=2).shape
        torch.Size([2, 4, 5])
    """
    floating("tnconv.conv_transpose_input_vjp", ("weight", weight), ("grad_output", grad_output))
    key = ("transpose_input_vjp", size_key(input_size), tensor_key(weight), tensor_key(grad_output),
           stride, padding, output_padding, groups, dilation, strategy)
    return convolve(weight, grad_output, cached_call(key, lambda: _input_vjp_setup(
        input_size, weight, grad_output, stride, padding, output_padding, groups, dilation,
        strategy)))


def _input_vjp_setup(input_size, weight, grad_output, stride, padding, output_padding, groups,
                     dilation, strategy) -> Compiled:
    op = "tnconv.conv_transpose_input_vjp"
    ndim = spatial_ndim(op, "weight", weight)
    size = full_shape(op, "input_size", input_size, ndim)
    spec = transposed_spec(op, ("input_size", size), ("weight", weight), stride, padding,
                           output_padding, groups, dilation)
    expect_shape(op, "grad_output", grad_output, output_of(spec, size[0]))
    return checked(op, compile("input_vjp", spec, strategy=strategy), size[0])


def conv_transpose_weight_vjp(input: torch.Tensor, weight_size: Sequence[int],
                              grad_output: torch.Tensor, stride=1, padding=0, output_padding=0,
                              groups: int = 1, dilation=1, per_sample: bool = False, *,
                              strategy: str = "auto") -> torch.Tensor:
    """Gradient of `conv_transpose` with respect to its weight ([N, *weight_size] per sample).

    Examples:
        >>> import torch, tnconv
        >>> x, g = torch.rand(2, 4, 5), torch.rand(2, 3, 11)
        >>> tnconv.conv_transpose_weight_vjp(x, (4, 3, 3), g, stride=2).shape
        torch.Size([4, 3, 3])
        >>> tnconv.conv_transpose_weight_vjp(x, (4, 3, 3), g, stride=2, per_sample=True).shape
        torch.Size([2, 4, 3, 3])
    """
    floating("tnconv.conv_transpose_weight_vjp", ("input", input), ("grad_output", grad_output))
    key = ("transpose_weight_vjp", tensor_key(input), size_key(weight_size), tensor_key(grad_output),
           stride, padding, output_padding, groups, dilation, per_sample, strategy)
    return convolve(input, grad_output, cached_call(key, lambda: _weight_vjp_setup(
        input, weight_size, grad_output, stride, padding, output_padding, groups, dilation,
        per_sample, strategy)))


def _weight_vjp_setup(input, weight_size, grad_output, stride, padding, output_padding, groups,
                      dilation, per_sample, strategy) -> Compiled:
    op = "tnconv.conv_transpose_weight_vjp"
    ndim = spatial_ndim(op, "input", input)
    size = full_shape(op, "weight_size", weight_size, ndim, batch=False)
    spec = transposed_spec(op, ("input", input), ("weight_size", size), stride, padding,
                           output_padding, groups, dilation)
    expect_shape(op, "grad_output", grad_output, output_of(spec, input.shape[0]))
    if not isinstance(per_sample, bool):
        raise argument_error(op, "per_sample", per_sample, "True or False")
    return checked(op, compile("weight_vjp", spec, strategy=strategy, per_sample=per_sample),
                   input.shape[0])


def unfold_transpose(x: torch.Tensor, kernel_size, stride=1, padding=0, output_padding=0,
                     dilation=1, *, strategy: str = "auto") -> torch.Tensor:
    """Unfolded input of a transposed convolution: [N, C·∏K, ∏O] over its output pixels O.

    `conv_transpose(x, w)` equals ``w.transpose(0, 1).reshape(C_out, -1) @ u`` (groups=1).

    Examples:
        >>> import torch, tnconv
        >>> x, w = torch.rand(1, 2, 4), torch.rand(2, 3, 3)
        >>> u = tnconv.unfold_transpose(x, 3, stride=2)
        >>> u.shape
        torch.Size([1, 6, 9])
        >>> torch.allclose(w.transpose(0, 1).reshape(3, -1) @ u,
        ...                tnconv.conv_transpose(x, w, stride=2), atol=1e-6)
        True
    """
    op = "tnconv.unfold_transpose"
    floating(op, ("x", x))
    ndim = spatial_ndim(op, "x", x)
    kernel_for(op, kernel_size, x)
    with error_context(op, shape_fields("x", x, "in_channels", "out_channels", "input_size")):
        spec = ConvSpec(x.shape[1], x.shape[1], kernel_size, tuple(x.shape[2:]), stride=stride,
                        padding=padding, dilation=dilation, transposed=True,
                        output_padding=output_padding)
        if spec.ndim != ndim:
            raise argument_error(op, "kernel_size", kernel_size,
                                 f"an int or a tuple of {ndim} ints for a {ndim}d input")
        compiled = checked(op, compile("unfold", spec, strategy=strategy), x.shape[0])
        return compiled(x)


def _fold_ndim(op: str, **arguments: Any) -> int:
    """Spatial dimensions: the length of the first tuple argument, else 2 (as torch); a
    tuple of another length is named with the one it disagrees with."""
    first = None
    for name, value in arguments.items():
        if isinstance(value, (tuple, list, torch.Size)):
            if first is None:
                first = (name, len(value))
            elif len(value) != first[1]:
                raise argument_error(op, name, value,
                                     f"an int or a tuple of {first[1]} entries, as "
                                     f"{first[0]} has {first[1]}")
    return 2 if first is None else first[1]


def fold(x: torch.Tensor, output_size, kernel_size, dilation=1, padding=0, stride=1, *,
         strategy: str = "auto") -> torch.Tensor:
    """Fold (col2im), the adjoint of `tnconv.unfold`: `torch.nn.functional.fold` for any N.

    `x` is [N, C·∏K, L] (or unbatched [C·∏K, L]) with L = ∏O blocks; the result
    is [N, C, *output_size], refused beyond `tnconv.set_size_limit` elements. A bool
    or integer `x` is rejected (`tnconv.nn.validate`): overlapping blocks add up.

    Examples:
        >>> import torch, tnconv
        >>> cols = torch.rand(2, 27, 16)
        >>> torch.allclose(tnconv.fold(cols, (8, 8), 3, padding=1, stride=2),
        ...                torch.nn.functional.fold(cols, (8, 8), 3, padding=1, stride=2))
        True
        >>> tnconv.fold(torch.rand(1, 8, 27), (4, 4, 4), 2).shape   # any N
        torch.Size([1, 1, 4, 4, 4])
    """
    op = "tnconv.fold"
    floating(op, ("x", x))
    ndim = _fold_ndim(op, output_size=output_size, kernel_size=kernel_size,
                      dilation=dilation, padding=padding, stride=stride)
    size = (output_size,) * ndim if isinstance(output_size, int) else output_size
    if not (isinstance(size, (tuple, list, torch.Size)) and len(size) == ndim
            and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIZE
                    for v in size)):
        raise argument_error(op, "output_size", output_size,
                             f"a positive int or a tuple of {ndim} positive ints "
                             f"(at most {MAX_SIZE})")
    with error_context(op, {"input_size": ("output_size", output_size)}):
        probe = ConvSpec(1, 1, kernel_size, tuple(size), stride=stride, padding=padding,
                         dilation=dilation)
        unbatched = x.dim() == 2
        x = x.unsqueeze(0) if unbatched else x
        taps, blocks = prod(probe.kernel_size), prod(probe.output_size)  # type: ignore[arg-type]
        if x.dim() != 3 or x.shape[1] < taps or x.shape[1] % taps or x.shape[2] != blocks:
            raise argument_error(op, "x", f"tensor of shape {tuple(x.shape)}",
                                 f"[N, C·∏K, L] or [C·∏K, L] with C ≥ 1, ∏K={taps} and "
                                 f"L={blocks} blocks for output_size {probe.input_size}")
        spec = probe.replace(in_channels=x.shape[1] // taps, out_channels=x.shape[1] // taps)
        y = checked(op, compile("fold", spec, strategy=strategy), x.shape[0])(x)
    return y.squeeze(0) if unbatched else y
