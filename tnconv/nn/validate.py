"""The public boundary: tensors checked in the caller's terms before any cache lookup.

Every public entry point (the functionals, the VJPs and JVPs, the transposed
operations, the KFAC factors and `tnconv.compile(...)(...)`) applies the same
policy, so a call is accepted or refused the same way whichever route, cache
state or entry point it takes:

- **dtype**: tensors are real floating point (float16, bfloat16, float32 or
  float64), all of one dtype. Integer, bool and complex tensors are *rejected*
  with a `TNConvError`, never promoted: torch's convolutions refuse them too,
  and a silent promotion would change the result's dtype (and, for bool
  `fold`, its meaning). Convert first, e.g. ``x.to(torch.get_default_dtype())``.
- **device**: every tensor of one call lies on one device; mixed devices are a
  `TNConvError` naming both. The meta device works end to end (shape inference
  for `torch.compile` and friends): results are meta tensors of the right shape.
- **rank and channels** are checked against the other arguments (e.g. the
  weight's) before the hyper-parameters are; a `ConvSpec` error is restated
  in terms of the argument the caller passed (`error_context`).
- **sizes**: the result and, where an operation forms it, the unfolded input
  are estimated from the arguments and refused beyond `tnconv.set_size_limit`
  before anything is allocated (`tnconv.limits`).

The call-site caches key on everything these checks read (shapes, dtypes,
devices, argument types), and the tensor checks run on every call, hit or miss.

>>> import torch
>>> floating("tnconv.conv", ("x", torch.rand(2)), ("weight", torch.rand(2)))
>>> w = torch.ones(2, dtype=torch.int64)
>>> floating("tnconv.conv", ("x", torch.rand(2)), ("weight", w))  # doctest: +ELLIPSIS
Traceback (most recent call last):
  ...
tnconv.errors.TNConvError: tnconv.conv: argument 'weight' got 'tensor of dtype torch.int64'; ...
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from tnconv.errors import argument_error
from tnconv.limits import check_operation

__all__ = ["FLOAT_DTYPES", "require_tensor", "float_dtype", "floating", "optional_bias",
           "guard_sizes", "shape_fields", "kernel_for"]

#: The dtypes tnconv computes in (fp16/bf16 factors accumulate in fp32).
FLOAT_DTYPES = frozenset((torch.float16, torch.bfloat16, torch.float32, torch.float64))
_NOT_PROMOTED = "integer, bool and complex tensors are not promoted: convert them first"
_FLOAT_ALLOWED = ("a real floating-point tensor: float16, bfloat16, float32 or float64 "
                  f"({_NOT_PROMOTED})")


def require_tensor(operation: str, name: str, value: Any) -> torch.Tensor:
    """`value` itself if it is a torch.Tensor, else a `TNConvError` naming its type."""
    if not isinstance(value, torch.Tensor):
        raise argument_error(operation, name, type(value).__name__, "a torch.Tensor")
    return value


def float_dtype(operation: str, name: str, dtype: torch.dtype) -> None:
    """A `TNConvError` unless `dtype` (that of tensor argument `name`) is real floating point."""
    if dtype not in FLOAT_DTYPES:
        raise argument_error(operation, name, f"tensor of dtype {dtype}", _FLOAT_ALLOWED)


def floating(operation: str, *named: tuple[str, Any]) -> None:
    """The named (argument, value) pairs are tensors of one real floating dtype, on one
    device: the first pair sets the dtype and the device the others must match."""
    (first_name, first), *others = named
    require_tensor(operation, first_name, first)
    float_dtype(operation, first_name, first.dtype)
    for name, tensor in others:
        require_tensor(operation, name, tensor)
        if tensor.dtype != first.dtype:
            raise argument_error(operation, name, f"tensor of dtype {tensor.dtype}",
                                 f"{first.dtype}, the dtype of {first_name} ({_NOT_PROMOTED})")
        if tensor.device != first.device:
            raise argument_error(operation, name, f"tensor on device {tensor.device}",
                                 f"{first.device}, the device of {first_name} (every tensor "
                                 "of one call on one device)")


def optional_bias(operation: str, bias: Optional[Any], like: tuple[str, torch.Tensor],
                  channels: int) -> Optional[torch.Tensor]:
    """`bias` (None or a [channels] tensor of `like`'s dtype and device)."""
    if bias is None:
        return None
    floating(operation, like, ("bias", bias))
    if tuple(bias.shape) != (channels,):
        raise argument_error(operation, "bias", f"tensor of shape {tuple(bias.shape)}",
                             f"shape ({channels},)")
    return bias


def guard_sizes(operation: str, compiled: Any, batch: int) -> None:
    """The size guard for `compiled` (a `tnconv.Compiled`) run on a batch of `batch`
    samples: its result and any unfolded input it forms (`tnconv.limits`)."""
    check_operation(operation, compiled.operation, compiled.spec, batch, compiled.options)


def shape_fields(name: str, value: Any, *fields: str) -> dict[str, tuple[str, str]]:
    """For `error_context`: the `ConvSpec` fields read from the shape of argument `name`
    (a tensor or a size), each reported as that argument."""
    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(value)
    shown = f"tensor of shape {shape}" if isinstance(value, torch.Tensor) else f"shape {shape}"
    return {field: (name, shown) for field in fields}


def kernel_for(operation: str, kernel_size: Any, x: torch.Tensor) -> None:
    """A kernel_size tuple has one entry per spatial dimension of x [N, C, *spatial] (the
    message says what x is, since either may be the mistake)."""
    ndim = x.dim() - 2
    if isinstance(kernel_size, (tuple, list)) and len(kernel_size) != ndim:
        raise argument_error(operation, "kernel_size", kernel_size,
                             f"an int or a tuple of {ndim} ints, as x of shape "
                             f"{tuple(x.shape)} has {ndim} spatial dims")
