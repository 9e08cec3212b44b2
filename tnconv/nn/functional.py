"""The torch front-end: functions with torch's argument names and order.

>>> import torch, tnconv
>>> x, w = torch.rand(2, 3, 9, 9), torch.rand(4, 3, 3, 3)
>>> tnconv.conv(x, w, padding="same", padding_mode="reflect").shape
torch.Size([2, 4, 9, 9])
>>> tnconv.unfold(x, kernel_size=3, stride=2).shape
torch.Size([2, 27, 16])
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from tnconv.compiler import Compiled, compile
from tnconv.errors import argument_error
from tnconv.spec.conv_spec import ConvSpec, error_context
from tnconv.nn._arguments import batched, check_groups, spatial_ndim
from tnconv.nn.validate import floating, guard_sizes, kernel_for, optional_bias, shape_fields
from tnconv.nn.call_cache import cached_call, tensor_key
from tnconv.nn.autograd import convolve
from tnconv.nn.kfac_functional import averaged_patches, kfac_reduce, kfc, patches

__all__ = ["conv", "kfac_reduce", "kfc", "unfold", "patches", "averaged_patches"]


def _add_bias(y: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """y plus a bias that `validate.optional_bias` accepted (or None)."""
    if bias is None:
        return y
    return y + bias.view(1, bias.shape[0], *([1] * (y.dim() - 2)))


def conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
         stride=1, padding=0, dilation=1, groups: int = 1, padding_mode: str = "zeros",
         *, strategy: str = "auto") -> torch.Tensor:
    """N-d convolution, as `torch.nn.functional.conv{1,2,3}d` for any N ≥ 1.

    `x` is [N, C_in, *spatial] (or unbatched [C_in, *spatial]), `weight`
    [C_out, C_in/groups, *kernel]. `padding` may be an int, a tuple, explicit
    (left, right) pairs, 'same' or 'valid'; `padding_mode` is one of 'zeros',
    'circular', 'reflect', 'replicate' (as the Conv modules). Tensors are real
    floating point of one dtype on one device (`tnconv.nn.validate`); a result
    beyond `tnconv.set_size_limit` elements is refused before it is computed.
    Differentiable to any order, also under forward-mode AD and `torch.func` transforms.

    Examples:
        >>> import torch, tnconv
        >>> x, w = torch.rand(2, 3, 9, 9), torch.rand(4, 3, 3, 3)
        >>> y = tnconv.conv(x, w, stride=2, padding=1)
        >>> torch.allclose(y, torch.nn.functional.conv2d(x, w, stride=2, padding=1), atol=1e-6)
        True
        >>> tnconv.conv(torch.rand(1, 2, 16), torch.rand(4, 2, 4), padding="same",
        ...             padding_mode="circular").shape
        torch.Size([1, 4, 16])
    """
    op = "tnconv.conv"
    floating(op, ("x", x), ("weight", weight))
    key = ("conv", tensor_key(x), tensor_key(weight), stride, padding, dilation, groups,
           padding_mode, strategy)
    forward, unbatched = cached_call(key, lambda: _conv_setup(
        x, weight, stride, padding, dilation, groups, padding_mode, strategy), typed=key[3:])
    bias = optional_bias(op, bias, ("x", x), forward.spec.out_channels)
    x = x.unsqueeze(0) if unbatched else x
    y = _add_bias(convolve(x, weight, forward), bias)
    return y.squeeze(0) if unbatched else y


def _conv_setup(x, weight, stride, padding, dilation, groups, padding_mode,
                strategy) -> tuple[Compiled, bool]:
    """Validate `conv`'s arguments; the compiled forward and whether x is unbatched."""
    op = "tnconv.conv"
    fields = {**shape_fields("x", x, "in_channels", "input_size"),
              **shape_fields("weight", weight, "out_channels", "kernel_size")}
    with error_context(op, fields):
        ndim = spatial_ndim(op, "weight", weight)
        x, unbatched = batched(x, ndim, op, "x")
        check_groups(op, groups)
        if x.shape[1] != weight.shape[1] * groups or weight.shape[0] % groups:
            raise argument_error(op, "weight", f"tensor of shape {tuple(weight.shape)}",
                                 f"shape [C_out, C_in/groups, *kernel] with C_in={x.shape[1]}, "
                                 f"groups={groups} and C_out a multiple of groups")
        spec = ConvSpec(x.shape[1], weight.shape[0], tuple(weight.shape[2:]), tuple(x.shape[2:]),
                        stride=stride, padding=padding, dilation=dilation, groups=groups,
                        padding_mode=padding_mode)
        forward = compile("forward", spec, strategy=strategy)
        guard_sizes(op, forward, x.shape[0])
        return forward, unbatched


def unfold(x: torch.Tensor, kernel_size, stride=1, padding=0, dilation=1,
           padding_mode: str = "zeros", *, strategy: str = "auto") -> torch.Tensor:
    """Unfolded input (im2col) of any N: [N, C·∏K, ∏O], `torch.nn.functional.unfold`'s layout.

    `x` is [N, C, *spatial]; the number of spatial dimensions is read from `x`. A
    result beyond `tnconv.set_size_limit` elements is refused before it is computed.

    Examples:
        >>> import torch, tnconv
        >>> x = torch.rand(2, 3, 8, 8)
        >>> torch.equal(tnconv.unfold(x, 3, stride=2, padding=1),
        ...             torch.nn.functional.unfold(x, 3, stride=2, padding=1))
        True
        >>> tnconv.unfold(torch.rand(1, 2, 4, 5, 5), (2, 3, 3), padding_mode="reflect",
        ...               padding=1).shape
        torch.Size([1, 36, 125])
    """
    floating("tnconv.unfold", ("x", x))
    key = ("unfold", tensor_key(x), kernel_size, stride, padding, dilation, padding_mode,
           strategy)
    run = cached_call(key, lambda: _unfold_setup(x, kernel_size, stride, padding, dilation,
                                                 padding_mode, strategy), typed=key[2:])
    return run(x)


def _unfold_setup(x, kernel_size, stride, padding, dilation, padding_mode,
                  strategy) -> Callable[[torch.Tensor], torch.Tensor]:
    """Validate `unfold`'s arguments; the compiled unfold's runner for inputs like x (its
    shape, dtype and device are in the call-site key)."""
    op = "tnconv.unfold"
    with error_context(op, shape_fields("x", x, "in_channels", "out_channels", "input_size")):
        ndim = spatial_ndim(op, "x", x)
        kernel_for(op, kernel_size, x)
        spec = ConvSpec(x.shape[1], x.shape[1], kernel_size, tuple(x.shape[2:]), stride=stride,
                        padding=padding, dilation=dilation, padding_mode=padding_mode)
        if spec.ndim != ndim:
            raise argument_error(op, "kernel_size", kernel_size,
                                 f"an int or a tuple of {ndim} ints for a {ndim}d input")
        compiled = compile("unfold", spec, strategy=strategy)
        guard_sizes(op, compiled, x.shape[0])
        return compiled.run if x.shape[0] == 0 else compiled.runner_for(x)
