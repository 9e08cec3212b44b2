"""Stage 7, the runtime: schedules interpreted on torch tensors, and the native kernels.

>>> import torch
>>> from tnconv.spec import ConvSpec
>>> from tnconv.ops.convolution import unfold_network
>>> from tnconv.lower import lower
>>> program = lower(unfold_network(ConvSpec(1, 1, 2, input_size=(3,)), 1), ("input",), (1, 2, 2))
>>> runner(program, "cpu", torch.float32)(torch.tensor([[[1.0, 2.0, 3.0]]])).tolist()
[[[1.0, 2.0], [2.0, 3.0]]]
"""

from typing import Any

from tnconv.lower import EinsumProgram, build_schedule
from tnconv.runtime.interpreter import Bound, bound

__all__ = ["Bound", "bound", "runner"]


def runner(program: EinsumProgram, device: Any, dtype: Any) -> Bound:
    """`program`'s schedule bound to `device` / `dtype` (cached): call it with the arguments."""
    return bound(build_schedule(program), device, dtype)
