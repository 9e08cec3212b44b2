"""Shared core of the curvature front-end: argument checks, then the compiled network runs.

`QUANTITIES` says, per public function, which compiled operation computes it and
which tensors it takes: `run` checks them against the layer's `ConvSpec` (names,
shapes and dtypes as the public function calls them), computes bf16/fp16 in
float32, and calls the compiled network. The pull-back of a sqrt factor is the
"input_vjp" network on a batch of C·N columns.

>>> import torch
>>> from tnconv.spec import ConvSpec
>>> spec = ConvSpec(2, 3, kernel_size=3, input_size=(6,))
>>> run("batch_l2", spec, torch.rand(4, 2, 6), torch.rand(4, 3, 4)).shape
torch.Size([4])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from tnconv.compiler import compile
from tnconv.errors import argument_error
from tnconv.spec.conv_spec import ConvSpec

__all__ = ["Quantity", "QUANTITIES", "run", "public_name"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Quantity:
    """One public function: its compiled operation and the tensors it takes."""

    operation: str
    #: What the first tensor is: the layer's input "x" or its "weight".
    first: str
    #: The backpropagated tensor's argument name.
    given: str
    #: Whether `given` has a leading column leg C (a sqrt factor [C, N, C_out, O…]).
    columns: bool = False
    #: Whether a batch of no samples is an error (a mean over no samples).
    needs_samples: bool = False
    #: Whether the network takes the first tensor squared elementwise (x∘x).
    squared: bool = False


QUANTITIES = {
    "batch_l2": Quantity("batch_l2", "x", "grad_output"),
    "sum_grad_squared": Quantity("sum_grad_squared", "x", "grad_output"),
    "variance": Quantity("variance", "x", "grad_output", needs_samples=True),
    "ggn_diagonal": Quantity("ggn_diagonal", "x", "sqrt_factor", columns=True),
    "ggn_gram": Quantity("ggn_gram", "x", "sqrt_factor", columns=True),
    "backpropagate_sqrt_factor": Quantity("input_vjp", "weight", "sqrt_factor", columns=True),
    "hessian_diagonal_weight": Quantity("hessian_diagonal_weight", "x",
                                        "output_hessian_diagonal", squared=True),
    "hessian_diagonal_input": Quantity("hessian_diagonal_input", "weight",
                                       "output_hessian_diagonal"),
}


def public_name(name: str, functional: bool) -> str:
    return f"tnconv.curvature.{'functional.' if functional else ''}{name}"


def _tensor(op: str, name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise argument_error(op, name, type(value).__name__, "a torch.Tensor")
    if not value.dtype.is_floating_point:
        raise argument_error(op, name, f"tensor of dtype {value.dtype}",
                             "a real floating-point tensor")
    return value


def _check_shape(op: str, name: str, tensor: torch.Tensor, expected: tuple, what: str) -> None:
    if tuple(tensor.shape) != tuple(expected):
        raise argument_error(op, name, f"tensor of shape {tuple(tensor.shape)}",
                             f"shape {tuple(expected)} ({what})")


def _compute_dtype(op: str, dtype: Optional[torch.dtype], given: torch.dtype) -> torch.dtype:
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise argument_error(op, "dtype", dtype, "None or a floating-point torch.dtype")
    wanted = dtype or given
    return torch.float32 if wanted in _LOW_PRECISION else wanted


def check(name: str, op: str, spec: ConvSpec, first: object, given: object,
          batch: Optional[int] = None) -> tuple[int, int]:
    """Check both tensors against `spec` (and the batch size N of the layer's input, where
    the first tensor is the weight); return (N, columns C)."""
    quantity = QUANTITIES[name]
    first, given = _tensor(op, quantity.first, first), _tensor(op, quantity.given, given)
    lead = 2 if quantity.columns else 1
    if given.dim() != spec.ndim + 1 + lead:
        layout = "[C, N, C_out, *output]" if quantity.columns else "[N, C_out, *output]"
        raise argument_error(op, quantity.given, f"tensor of shape {tuple(given.shape)}",
                             f"a tensor {layout} with {spec.ndim} spatial dims")
    if quantity.first == "weight":
        _check_shape(op, "weight", first, spec.weight_shape, "the layer's weight")
        batch = given.shape[lead - 1] if batch is None else batch
    else:
        batch = first.shape[0] if first.dim() else 0
        _check_shape(op, "x", first, (batch, spec.in_channels, *spec.input_size),
                     "the layer's input [N, C_in, *spatial]")
    columns = given.shape[0] if quantity.columns else 1
    if quantity.columns and columns == 0:
        raise argument_error(op, quantity.given, f"tensor of shape {tuple(given.shape)}",
                             "at least one column C (a class or Monte-Carlo sample)")
    expected = (batch, spec.out_channels, *spec.output_size)
    _check_shape(op, quantity.given, given, (columns,) * (lead - 1) + expected,
                 f"the layer's output [N, C_out, *output] = {list(expected)}"
                 + (", after C columns" if quantity.columns else ""))
    if first.dtype != given.dtype:
        raise argument_error(op, quantity.given, f"tensor of dtype {given.dtype}",
                             f"{first.dtype}, the dtype of {quantity.first}")
    if first.device != given.device:
        raise argument_error(op, quantity.given, f"tensor on {given.device}",
                             f"{first.device}, the device of {quantity.first}")
    if quantity.needs_samples and batch == 0:
        raise argument_error(op, quantity.given, f"tensor of shape {tuple(given.shape)}",
                             "at least one sample (the variance of no samples is undefined)")
    return batch, columns


def run(name: str, spec: ConvSpec, first: torch.Tensor, given: torch.Tensor, *,
        op: Optional[str] = None, dtype: Optional[torch.dtype] = None,
        batch: Optional[int] = None) -> torch.Tensor:
    """The quantity `name` (a key of `QUANTITIES`) of the layer `spec`, checked and computed;
    `batch` is the batch size of the layer's input where `first` is the weight."""
    op = op or public_name(name, functional=False)
    batch, columns = check(name, op, spec, first, given, batch)
    quantity = QUANTITIES[name]
    compute = _compute_dtype(op, dtype, given.dtype)
    first, given = first.detach().to(compute), given.detach().to(compute)
    if quantity.squared:
        first = first.square()
    if name == "backpropagate_sqrt_factor":
        pulled = compile("input_vjp", spec).run(
            first, given.reshape(columns * batch, *given.shape[2:]))
        result = pulled.reshape(columns, batch, *pulled.shape[1:])
    else:
        options = {"classes": columns} if quantity.columns else {}
        result = compile(quantity.operation, spec, **options).run(first, given)
    wanted = dtype or compute
    return result if result.dtype == wanted else result.to(wanted)
