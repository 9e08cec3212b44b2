"""Differentiable (transposed) convolutions whose derivatives run compiled networks.

`convolve` evaluates the "forward" operation of a spec; when autograd, forward-mode
AD or a torch.func transform sees the call, it goes through `ConvFunction`, whose
backward evaluates "input_vjp" and "weight_vjp" for the same spec and strategy,
again through `ConvFunction` (the three operations are bilinear and each one's
derivatives are the others), so derivatives of any order, `torch.func.jvp`,
`vmap`, `jacrev` and per-sample gradients work, and the compiled operations, which
write into buffers, never see a transform's tensors. Only what the backward needs
is saved: the input only if the weight needs a gradient, the weight only if the
input does; a VJP nobody asked for is not computed.

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
from torch._C._functorch import is_functorch_wrapped_tensor
from torch.autograd import forward_ad

from tnconv.compiler import Compiled, compile

__all__ = ["ConvFunction", "convolve"]


#: The derivatives of each bilinear operation y = op(a, b) of a spec, given the cotangent c
#: of y: (operation, its two arguments) for a's gradient, then for b's. Each is an
#: operation of the same family, so every order of derivative is one of the three.
_GRADIENTS = {
    "forward": (("input_vjp", lambda c, a, b: (b, c)), ("weight_vjp", lambda c, a, b: (a, c))),
    "input_vjp": (("weight_vjp", lambda c, a, b: (c, b)), ("forward", lambda c, a, b: (c, a))),
    "weight_vjp": (("input_vjp", lambda c, a, b: (c, b)), ("forward", lambda c, a, b: (a, c))),
}
_GRADIENTS["input_jvp"] = _GRADIENTS["weight_jvp"] = _GRADIENTS["forward"]  # op(a, b) = forward
#: Which argument's batch the result keeps (None: the operation sums over the batch).
_BATCH_CARRIER = {"forward": 0, "input_jvp": 0, "weight_jvp": 0, "input_vjp": 1,
                  "weight_vjp": None}


def _apply(name: str, like: Compiled, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Operation `name` of `like`'s spec and strategy, on (a, b)."""
    return ConvFunction.apply(a, b, compile(name, like.spec, strategy=like.strategy))


class ConvFunction(torch.autograd.Function):
    """y = op(a, b) for a compiled convolution, input VJP or weight VJP: all three are
    bilinear, so backward, forward-mode derivatives (`jvp`) and `vmap` are operations of
    the same family, each again through this function (double backward, hvp, jacrev…)."""

    @staticmethod
    def forward(a: torch.Tensor, b: torch.Tensor,  # type: ignore[override]
                compiled: Compiled) -> torch.Tensor:
        return compiled.run(a, b)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        a, b, ctx.compiled = inputs
        a_needs_grad, b_needs_grad = ctx.needs_input_grad[:2]
        ctx.save_for_backward(a if b_needs_grad else None, b if a_needs_grad else None)
        ctx.save_for_forward(a, b)

    @staticmethod
    def backward(ctx: Any, cotangent: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        a, b = ctx.saved_tensors
        grads: list[Optional[torch.Tensor]] = [None, None, None]
        for which, (name, arguments) in enumerate(_GRADIENTS[ctx.compiled.operation.name]):
            if ctx.needs_input_grad[which]:
                grads[which] = _apply(name, ctx.compiled, *arguments(cotangent, a, b))
        return tuple(grads)

    @staticmethod
    def jvp(ctx: Any, a_tangent: Optional[torch.Tensor], b_tangent: Optional[torch.Tensor],
            _: Any) -> torch.Tensor:
        """d op(a, b) = op(da, b) + op(a, db)."""
        a, b = ctx.saved_tensors
        parts = [ConvFunction.apply(u, v, ctx.compiled)
                 for u, v in ((a_tangent, b), (a, b_tangent)) if u is not None and v is not None]
        return parts[0] + parts[1] if len(parts) == 2 else parts[0]

    @staticmethod
    def vmap(info: Any, in_dims: tuple, a: torch.Tensor, b: torch.Tensor,
             compiled: Compiled) -> tuple[torch.Tensor, int]:
        """A batch of the argument whose batch the result keeps is one larger batch; any
        other batching runs one call per entry."""
        carrier = _BATCH_CARRIER[compiled.operation.name]
        dims = in_dims[:2]
        if carrier is not None and dims[1 - carrier] is None:
            args = [a, b]
            batched = args[carrier].movedim(dims[carrier], 0)
            args[carrier] = batched.reshape(-1, *batched.shape[2:])
            y = ConvFunction.apply(*args, compiled)
            return y.reshape(*batched.shape[:2], *y.shape[1:]), 0
        entries = [t.movedim(d, 0) if d is not None else t.expand(info.batch_size, *t.shape)
                   for t, d in zip((a, b), dims)]
        return torch.stack([ConvFunction.apply(u, v, compiled) for u, v in zip(*entries)]), 0


def _transformed(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether forward-mode AD or a torch.func transform sees this call: the compiled
    operations write into buffers (`out=`), which those cannot differentiate or batch."""
    return (forward_ad._current_level >= 0 or is_functorch_wrapped_tensor(a)
            or is_functorch_wrapped_tensor(b))


def convolve(a: torch.Tensor, b: torch.Tensor, compiled: Compiled) -> torch.Tensor:
    """`compiled(a, b)` for a compiled (transposed) convolution, its input or weight VJP or
    JVP, differentiable and batchable by torch.func.

    The shapes of `a` and `b` must already match `compiled.spec`. Goes through
    `ConvFunction` only when autograd (reverse or forward mode) or a torch.func
    transform sees the call; otherwise the compiled operation runs directly. A
    per-sample weight VJP runs directly (differentiable by plain autograd through its
    torch operations); under forward-mode AD or a transform it runs sample by sample
    (`_per_sample_by_sample`).
    """
    if compiled.options.get("per_sample"):
        return _per_sample_by_sample(a, b, compiled) if _transformed(a, b) \
            else compiled.run(a, b)
    if (torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
            or _transformed(a, b)):
        return ConvFunction.apply(a, b, compiled)
    return compiled.run(a, b)


def _per_sample_by_sample(a: torch.Tensor, b: torch.Tensor, compiled: Compiled) -> torch.Tensor:
    """A per-sample weight VJP as one summed weight VJP per sample, stacked: each is in the
    bilinear family, so forward-mode AD and torch.func transforms see it through
    `ConvFunction` (N calls instead of one)."""
    if a.shape[0] == 0:  # nothing to stack: the empty result, as the compiled step gives it
        return compiled.run(a, b)
    options = {**compiled.options, "per_sample": False}
    summed = compile(compiled.operation.name, compiled.spec, strategy=compiled.strategy,
                     rewrite=compiled.rewrite, **options)
    return torch.stack([ConvFunction.apply(a[n:n + 1], b[n:n + 1], summed)
                        for n in range(a.shape[0])])
