"""Approximate backprop: a convolution whose weight gradient is a sampled weight VJP.

`sampled_conv` is `tnconv.conv` with a `tnconv.Sample` for the backward pass:
the forward and the input gradient are exact (the compiled "forward" and
"input_vjp" of the same spec and strategy, as `tnconv.conv`'s), the weight
gradient is estimated by the sampled weight VJP from a fresh subset drawn at
each backward call (`tnconv.sampled`): unbiased, with a variance growing like
1/keep, and cheaper the less it keeps. The gradient is computed once (no double
backward through it).

>>> import torch, tnconv
>>> x = torch.rand(2, 3, 8, 8, requires_grad=True)
>>> w = torch.rand(4, 3, 3, 3, requires_grad=True)
>>> y = sampled_conv(x, w, None, 1, 1, 1, 1, "zeros", strategy="auto",
...                  sample=tnconv.Sample("spatial", keep=0.5))
>>> y.sum().backward()
>>> x.grad.shape, w.grad.shape
(torch.Size([2, 3, 8, 8]), torch.Size([4, 3, 3, 3]))
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch.autograd.function import once_differentiable

from tnconv.compiler import compile
from tnconv.nn.call_cache import cached_call, tensor_key
from tnconv.nn.functional import _add_bias, _conv_setup
from tnconv.sampled import check_sample

__all__ = ["sampled_conv", "SampledBackward"]


class SampledBackward(torch.autograd.Function):
    """y = forward(x, w); backward: the exact input VJP, the sampled weight VJP."""

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor,  # type: ignore[override]
                operations: tuple) -> torch.Tensor:
        return operations[0].run(x, weight)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        x, weight, ctx.operations = inputs
        x_needs_grad, weight_needs_grad = ctx.needs_input_grad[:2]
        ctx.save_for_backward(x if weight_needs_grad else None,
                              weight if x_needs_grad else None)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        x, weight = ctx.saved_tensors
        _, input_vjp, weight_vjp = ctx.operations
        grad_output = grad_output.contiguous()
        grad_x = input_vjp.run(weight, grad_output) if ctx.needs_input_grad[0] else None
        grad_w = weight_vjp.run(x, grad_output) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w, None


def _operations(x: torch.Tensor, weight: torch.Tensor, stride: Any, padding: Any,
                dilation: Any, groups: Any, padding_mode: str, strategy: str,
                sample: Any) -> tuple[tuple, bool]:
    """(forward, input VJP, sampled weight VJP) for these arguments, and whether x is
    unbatched (validated as `tnconv.conv` validates them)."""
    forward, unbatched = _conv_setup(x, weight, stride, padding, dilation, groups, padding_mode,
                                     strategy)
    spec = forward.spec
    check_sample("tnconv.nn.Conv (backward_sample)", "weight_vjp", sample)
    return (forward, compile("input_vjp", spec, strategy=strategy),
            compile("weight_vjp", spec, strategy=strategy, sample=sample)), unbatched


def sampled_conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                 stride: Any, padding: Any, dilation: Any, groups: Any, padding_mode: str, *,
                 strategy: str, sample: Any) -> torch.Tensor:
    """`tnconv.conv(x, weight, bias, …)` whose weight gradient is estimated with `sample`."""
    key = ("sampled_conv", tensor_key(x), tensor_key(weight), stride, padding, dilation, groups,
           padding_mode, strategy, sample)
    operations, unbatched = cached_call(key, lambda: _operations(
        x, weight, stride, padding, dilation, groups, padding_mode, strategy, sample),
        typed=key[3:])
    x = x.unsqueeze(0) if unbatched else x
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        y = SampledBackward.apply(x, weight, operations)
    else:
        y = operations[0].run(x, weight)
    y = _add_bias(y, bias)
    return y.squeeze(0) if unbatched else y
