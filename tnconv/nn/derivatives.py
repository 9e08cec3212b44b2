"""VJPs and JVPs of a convolution, as torch functions (any N, every hyper-parameter).

The VJPs take their arguments in the order of `torch.nn.grad.conv2d_input` /
`conv2d_weight`; every tensor is batched, [N, C, *spatial]. Each function
compiles the matching operation ("input_vjp", "weight_vjp", "input_jvp",
"weight_jvp"); `strategy="auto"` runs torch's kernel where there is exactly
one, `strategy="tn"` always contracts the tensor network.

>>> import torch, tnconv
>>> x, w = torch.rand(2, 3, 9), torch.rand(4, 3, 3)
>>> g = torch.rand(2, 4, 5)
>>> tnconv.conv_input_vjp(x.shape, w, g, stride=2, padding=1).shape
torch.Size([2, 3, 9])
>>> tnconv.conv_weight_vjp(x, w.shape, g, stride=2, padding=1, per_sample=True).shape
torch.Size([2, 4, 3, 3])
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from tnconv.nn.call_cache import cached_call, tensor_key
from tnconv.compiler import Compiled, compile
from tnconv.errors import argument_error
from tnconv.spec.conv_spec import ConvSpec, error_context
from tnconv.nn._arguments import check_groups, require_tensor, spatial_ndim
from tnconv.nn.validate import floating, guard_sizes, shape_fields
from tnconv.nn.autograd import convolve

__all__ = ["conv_input_vjp", "conv_weight_vjp", "conv_input_jvp", "conv_weight_jvp"]


def full_shape(op: str, name: str, value: Any, ndim: int, batch: bool = True) -> tuple[int, ...]:
    """A tensor shape with `ndim` spatial dims (torch.Size, tuple or list of positive ints;
    with `batch`, the leading batch size may be 0, as in torch)."""
    ok = (isinstance(value, (tuple, list, torch.Size)) and len(value) == ndim + 2
          and all(isinstance(v, int) and not isinstance(v, bool)
                  and v >= (0 if batch and d == 0 else 1) for d, v in enumerate(value)))
    if not ok:
        allowed = (f"a shape [N, C, *spatial] of {ndim + 2} ints (N ≥ 0, then positive)"
                   if batch else f"a weight shape of {ndim + 2} positive ints")
        raise argument_error(op, name, value, allowed)
    return tuple(value)


def expect_shape(op: str, name: str, tensor: Any, shape: Sequence[int]) -> torch.Tensor:
    """`tensor` itself, after checking it is a tensor of exactly `shape`."""
    require_tensor(op, name, tensor)
    if tuple(tensor.shape) != tuple(shape):
        raise argument_error(op, name, f"tensor of shape {tuple(tensor.shape)}",
                             f"shape {tuple(shape)}")
    return tensor


def shape_of(value: Any) -> tuple[int, ...]:
    """The shape of a tensor argument or a shape argument."""
    return tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(value)


def conv_spec(op: str, input: tuple[str, Any], weight: tuple[str, Any], stride: Any,
              padding: Any, dilation: Any, groups: Any, padding_mode: str) -> ConvSpec:
    """The spec of a convolution of an input with a weight, each given as (the caller's
    argument name, a tensor or a shape); errors name the argument a size came from."""
    (input_name, input_value), (weight_name, weight_value) = input, weight
    input_shape, weight_shape = shape_of(input_value), shape_of(weight_value)
    check_groups(op, groups)
    if weight_shape[0] % groups or input_shape[1] % groups:
        raise argument_error(op, weight_name, f"shape {weight_shape}",
                             f"[C_out, C_in/groups, *kernel] with C_out a multiple of "
                             f"groups={groups}, for an input with {input_shape[1]} channels")
    fields = {**shape_fields(input_name, input_value, "in_channels", "input_size"),
              **shape_fields(weight_name, weight_value, "out_channels", "kernel_size")}
    with error_context(op, fields):
        spec = ConvSpec(input_shape[1], weight_shape[0], weight_shape[2:], input_shape[2:],
                        stride=stride, padding=padding, dilation=dilation, groups=groups,
                        padding_mode=padding_mode)
    if spec.weight_shape != weight_shape:
        raise argument_error(op, weight_name, f"shape {weight_shape}",
                             f"shape {spec.weight_shape} ([C_out, C_in/groups, *kernel]) for an "
                             f"input with {input_shape[1]} channels and groups={groups}")
    return spec


def checked(op: str, compiled: Compiled, batch: int) -> Compiled:
    """`compiled` after the size guard for a batch of `batch` samples."""
    guard_sizes(op, compiled, batch)
    return compiled


def size_key(value: Any) -> Any:
    """A shape argument as a hashable key (a list becomes a tuple)."""
    return tuple(value) if isinstance(value, (tuple, list, torch.Size)) else value


def output_of(spec: ConvSpec, batch: int) -> tuple[int, ...]:
    """Shape of the (transposed) convolution's result, i.e. of its grad_output."""
    return (batch, spec.out_channels, *spec.output_size)


def conv_input_vjp(input_size: Sequence[int], weight: torch.Tensor, grad_output: torch.Tensor,
                   stride=1, padding=0, dilation=1, groups: int = 1,
                   padding_mode: str = "zeros", *, strategy: str = "auto") -> torch.Tensor:
    """Gradient of a convolution with respect to its input (`torch.nn.grad.conv2d_input`).

    Examples:
        >>> import torch, tnconv
        >>> w, g = torch.rand(4, 3, 3, 3), torch.rand(2, 4, 4, 4)
        >>> gx = tnconv.conv_input_vjp((2, 3, 8, 8), w, g, stride=2, padding=1)
        >>> torch.allclose(gx, torch.nn.grad.conv2d_input((2, 3, 8, 8), w, g, stride=2,
        ...                                                padding=1), atol=1e-5)
        True
    """
    floating("tnconv.conv_input_vjp", ("weight", weight), ("grad_output", grad_output))
    key = ("input_vjp", size_key(input_size), tensor_key(weight), tensor_key(grad_output), stride,
           padding, dilation, groups, padding_mode, strategy)
    return convolve(weight, grad_output, cached_call(key, lambda: _input_vjp_setup(
        input_size, weight, grad_output, stride, padding, dilation, groups, padding_mode,
        strategy)))


def _input_vjp_setup(input_size, weight, grad_output, stride, padding, dilation, groups,
                     padding_mode, strategy) -> Compiled:
    op = "tnconv.conv_input_vjp"
    ndim = spatial_ndim(op, "weight", weight)
    size = full_shape(op, "input_size", input_size, ndim)
    spec = conv_spec(op, ("input_size", size), ("weight", weight), stride, padding, dilation,
                     groups, padding_mode)
    expect_shape(op, "grad_output", grad_output, output_of(spec, size[0]))
    return checked(op, compile("input_vjp", spec, strategy=strategy), size[0])


def conv_weight_vjp(input: torch.Tensor, weight_size: Sequence[int], grad_output: torch.Tensor,
                    stride=1, padding=0, dilation=1, groups: int = 1,
                    padding_mode: str = "zeros", per_sample: bool = False, *,
                    strategy: str = "auto") -> torch.Tensor:
    """Gradient with respect to the weight (`torch.nn.grad.conv2d_weight`).

    `per_sample=True` returns one gradient per example, [N, *weight_size].

    Examples:
        >>> import torch, tnconv
        >>> x, g = torch.rand(2, 3, 8, 8), torch.rand(2, 4, 4, 4)
        >>> gw = tnconv.conv_weight_vjp(x, (4, 3, 3, 3), g, stride=2, padding=1)
        >>> torch.allclose(gw, torch.nn.grad.conv2d_weight(x, (4, 3, 3, 3), g, stride=2,
        ...                                                 padding=1), atol=1e-5)
        True
        >>> tnconv.conv_weight_vjp(x, (4, 3, 3, 3), g, stride=2, padding=1,
        ...                        per_sample=True).shape
        torch.Size([2, 4, 3, 3, 3])
    """
    floating("tnconv.conv_weight_vjp", ("input", input), ("grad_output", grad_output))
    key = ("weight_vjp", tensor_key(input), size_key(weight_size), tensor_key(grad_output), stride,
           padding, dilation, groups, padding_mode, per_sample, strategy)
    return convolve(input, grad_output, cached_call(key, lambda: _weight_vjp_setup(
        input, weight_size, grad_output, stride, padding, dilation, groups, padding_mode,
        per_sample, strategy)))


def _weight_vjp_setup(input, weight_size, grad_output, stride, padding, dilation, groups,
                      padding_mode, per_sample, strategy) -> Compiled:
    op = "tnconv.conv_weight_vjp"
    ndim = spatial_ndim(op, "input", input)
    size = full_shape(op, "weight_size", weight_size, ndim, batch=False)
    spec = conv_spec(op, ("input", input), ("weight_size", size), stride, padding, dilation,
                     groups, padding_mode)
    expect_shape(op, "grad_output", grad_output, output_of(spec, input.shape[0]))
    if not isinstance(per_sample, bool):
        raise argument_error(op, "per_sample", per_sample, "True or False")
    return checked(op, compile("weight_vjp", spec, strategy=strategy, per_sample=per_sample),
                   input.shape[0])


def conv_input_jvp(input_tangent: torch.Tensor, weight: torch.Tensor, stride=1, padding=0,
                   dilation=1, groups: int = 1, padding_mode: str = "zeros", *,
                   strategy: str = "auto") -> torch.Tensor:
    """Change of the convolution's output along `input_tangent` (the weight held fixed).

    Examples:
        >>> import torch, tnconv
        >>> dx, w = torch.rand(2, 3, 9), torch.rand(4, 3, 3)
        >>> torch.allclose(tnconv.conv_input_jvp(dx, w, padding=1),
        ...                torch.nn.functional.conv1d(dx, w, padding=1), atol=1e-6)
        True
    """
    return _jvp("input_jvp", ("input_tangent", input_tangent), ("weight", weight),
                (stride, padding, dilation, groups, padding_mode), strategy)


def conv_weight_jvp(input: torch.Tensor, weight_tangent: torch.Tensor, stride=1, padding=0,
                    dilation=1, groups: int = 1, padding_mode: str = "zeros", *,
                    strategy: str = "auto") -> torch.Tensor:
    """Change of the convolution's output along `weight_tangent` (the input held fixed).

    Examples:
        >>> import torch, tnconv
        >>> x, dw = torch.rand(2, 3, 9), torch.rand(4, 3, 3)
        >>> torch.allclose(tnconv.conv_weight_jvp(x, dw, stride=2),
        ...                torch.nn.functional.conv1d(x, dw, stride=2), atol=1e-6)
        True
    """
    return _jvp("weight_jvp", ("input", input), ("weight_tangent", weight_tangent),
                (stride, padding, dilation, groups, padding_mode), strategy)


def _jvp(name: str, input: tuple[str, Any], weight: tuple[str, Any], hyper: tuple,
         strategy: str) -> torch.Tensor:
    """Both JVPs: `name` ("input_jvp" or "weight_jvp") of an input-shaped and a
    weight-shaped tensor, each given with its argument name; set up once per call site."""
    (_, x), (_, w) = input, weight
    floating(f"tnconv.conv_{name}", input, weight)
    key = (name, tensor_key(x), tensor_key(w), *hyper, strategy)
    return convolve(x, w, cached_call(key, lambda: _jvp_setup(name, input, weight, hyper,
                                                               strategy)))


def _jvp_setup(name: str, input: tuple[str, Any], weight: tuple[str, Any], hyper: tuple,
               strategy: str) -> Compiled:
    op = f"tnconv.conv_{name}"
    (input_name, x), (weight_name, w) = input, weight
    ndim = spatial_ndim(op, weight_name, w)
    full_shape(op, input_name, tuple(x.shape), ndim)
    spec = conv_spec(op, input, weight, *hyper)
    return checked(op, compile(name, spec, strategy=strategy), x.shape[0])
