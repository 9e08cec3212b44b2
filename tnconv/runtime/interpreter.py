"""The interpreter: a `Schedule` bound to a device and dtype, called on torch tensors.

Binding materialises the constants, runs the `prepare` steps (constants only) once,
and asks each step's family (`tnconv.runtime.{einsum,reduce,product,windows,scatter,gather}`)
for the call of that step. A call then reads the arguments into their registers (a
reshape, or the data view), runs the calls in order and lays the result out. Plain
torch calls only: no opt_einsum machinery at run time, friendly to `torch.compile`.

>>> import torch
>>> from tnconv.spec import ConvSpec
>>> from tnconv.ops.convolution import forward_network
>>> from tnconv.lower import build_schedule, lower
>>> program = lower(forward_network(ConvSpec(2, 3, 3, input_size=(6, 6)), 1),
...                 ("input", "weight"), (1, 3, 4, 4))
>>> run = bound(build_schedule(program), torch.device("cpu"), torch.float64)
>>> x, w = torch.rand(1, 2, 6, 6, dtype=torch.float64), torch.rand(3, 2, 3, 3, dtype=torch.float64)
>>> torch.allclose(run(x, w), torch.nn.functional.conv2d(x, w))
True
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from tnconv.cache import LRUCache
from tnconv.ir.constants import to_torch
from tnconv.lower.schedule.model import Schedule
from tnconv.runtime.conv import bind as bind_conv
from tnconv.runtime.einsum import bind as bind_einsum
from tnconv.runtime.gather import bind as bind_gather
from tnconv.runtime.product import bind as bind_product
from tnconv.runtime.reduce import bind as bind_reduce
from tnconv.runtime.scatter import bind as bind_scatter
from tnconv.runtime.select import bind as bind_select
from tnconv.runtime.windows import bind as bind_windows

__all__ = ["Bound", "bound", "BINDERS", "shares_memory"]

#: Per step family: (step, registers holding the constants, device) -> the step's call.
BINDERS: dict[str, Callable[..., Callable]] = {
    "conv": bind_conv, "einsum": bind_einsum, "reduce": bind_reduce, "product": bind_product,
    "windows": bind_windows, "scatter": bind_scatter, "select": bind_select,
    "gather": bind_gather}
_BOUND = LRUCache(name="plans")


def shares_memory(result: torch.Tensor, arguments: tuple[torch.Tensor, ...]) -> bool:
    """Whether `result` lies in the storage of one of `arguments` (is a view of it)."""
    storage = result.untyped_storage().data_ptr()
    return any(storage == a.untyped_storage().data_ptr() for a in arguments)


class Bound:
    """A schedule on one device and dtype: call it with the operation's arguments."""

    def __init__(self, schedule: Schedule, device: torch.device, dtype: torch.dtype) -> None:
        self.schedule = schedule
        registers: list[Any] = [None] * schedule.registers
        for constant in schedule.constants:
            registers[constant.register] = to_torch(constant.value, device, dtype)
        for step in schedule.prepare:
            registers[step.output] = BINDERS[step.family](step, registers, device)(registers)
        self._registers = registers
        self._reads = tuple((a.register, a.argument, a.shape, a.view)
                            for a in schedule.arguments)
        self._calls = tuple((step.output, BINDERS[step.family](step, registers, device))
                            for step in schedule.steps)

    def __call__(self, *arguments: torch.Tensor) -> torch.Tensor:
        s = self.schedule
        if s.view_result is not None:
            x = arguments[0]
            if x.is_contiguous() and not x.requires_grad:
                size, stride, offset = s.view_result
                view = x.as_strided(size, stride, x.storage_offset() + offset)
                return view.clone(memory_format=torch.contiguous_format).view(s.result_shape)
        r = list(self._registers)
        for register, which, shape, view in self._reads:
            a = arguments[which]
            r[register] = a.reshape(shape) if view is None else view.apply_torch(a)
        if s.scaled_argument is not None:
            r[s.scaled_argument] = r[s.scaled_argument] * s.scale
        for output, call in self._calls:
            r[output] = call(r)
        result = r[s.result]
        if s.scale != 1 and s.scaled_argument is None:  # in place unless it may be a view
            result = result * s.scale if s.may_alias else result.mul_(s.scale)
        if s.may_alias and shares_memory(result, arguments):
            return result.clone(memory_format=torch.contiguous_format).view(s.result_shape)
        return result.contiguous().view(s.result_shape)


def bound(schedule: Schedule, device: Any, dtype: torch.dtype) -> Bound:
    """`schedule` bound to `device` / `dtype` (cached)."""
    device = torch.device(device)
    return _BOUND.get_or_create((schedule, str(device), dtype),
                                lambda: Bound(schedule, device, dtype))
