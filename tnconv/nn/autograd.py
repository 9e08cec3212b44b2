"""Differentiable (transposed) convolutions whose backward runs the compiled VJP networks.

`convolve` evaluates the "forward" operation of a spec; when autograd needs it,
it goes through `ConvFunction`, whose backward evaluates "input_vjp" and
"weight_vjp" for the same spec and strategy. Only what the backward needs is
saved: the input only if the weight needs a gradient, the weight only if the
input does; a VJP nobody asked for is not computed. The backward is itself
made of differentiable torch operations, so double backward works.

>>> import torch, tnconv
>>> spec = tnconv.ConvSpec(3, 4, kernel_size=3, input_size=(8,))
>>> x = torch.rand(2, 3, 8, requires_grad=True)
>>> w = torch.rand(4, 3, 3, requires_grad=True)
>>> convolve(x, w, tnconv.compile("forward", spec, strategy="tn")).sum().backward()
>>> x.grad.shape, w.grad.shape
(torch.Size([2, 3, 8]), torch.Size([4, 3, 3]))
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..compiler import Compiled, compile

__all__ = ["ConvFunction", "convolve"]


class ConvFunction(torch.autograd.Function):
    """Y = forward(X, W) for one `ConvSpec`; backward by the compiled VJPs."""

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor,  # type: ignore[override]
                forward: Compiled) -> torch.Tensor:
        return forward.run(x, weight)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        x, weight, forward = inputs
        ctx.spec, ctx.strategy = forward.spec, forward.strategy
        input_needs_grad, weight_needs_grad = ctx.needs_input_grad[:2]
        ctx.save_for_backward(x if weight_needs_grad else None,
                              weight if input_needs_grad else None)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = compile("input_vjp", ctx.spec, strategy=ctx.strategy)(weight, grad_output)
        if ctx.needs_input_grad[1]:
            grad_w = compile("weight_vjp", ctx.spec, strategy=ctx.strategy)(x, grad_output)
        return grad_x, grad_w, None


def convolve(x: torch.Tensor, weight: torch.Tensor, forward: Compiled) -> torch.Tensor:
    """The (transposed) convolution of batched `x` with `weight` by the compiled `forward`.

    The shapes of `x` and `weight` must already match `forward.spec`.
    Goes through `ConvFunction` only when reverse-mode autograd records it;
    otherwise the compiled operation runs directly (forward-mode AD, e.g.
    `torch.func.jvp`, then differentiates its torch operations).
    """
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return ConvFunction.apply(x, weight, forward)
    return forward.run(x, weight)
