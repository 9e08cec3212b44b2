"""Shared helpers of the rewrite tests: build an operation's network, evaluate any network."""

from __future__ import annotations

import torch

from tests.helpers import DEVICE, rand
from tests.references import conv_nd, unfold_nd
from tnconv.runtime import runner
from tnconv.lower import lower
from tnconv.ir.network import Network
from tnconv.ops import get_operation
from tnconv.spec.conv_spec import ConvSpec


def case(op: str, batch: int = 2, **spec: object) -> tuple[Network, ConvSpec, list[torch.Tensor]]:
    """The builder's network of `op` on the spec, and random float64 arguments."""
    conv = ConvSpec(**spec)  # type: ignore[arg-type]
    operation = get_operation(op)
    options = dict(operation.defaults)
    net = operation.build(conv, batch, **options)
    shapes = operation.argument_shapes(conv, batch, **options)
    args = [_argument(role, shape, op, conv, batch, options)
            for role, shape in zip(operation.arguments, shapes)]
    return net, conv, args


def _argument(role: str, shape: tuple, op: str, conv: ConvSpec, batch: int,
              options: dict) -> torch.Tensor:
    """Random float64 data, or (a sampled operation's "selection") valid kept indices."""
    if role != "selection":
        return rand(*shape)
    from tnconv.ops.sampling import sampling_of

    exact, legs, counts, _ = sampling_of(op, conv, batch, options)
    return torch.cat([torch.randperm(exact.size(leg))[:count]
                      for leg, count in zip(legs, counts)]).to(DEVICE)


def value(net: Network, op: str, args: list[torch.Tensor]) -> torch.Tensor:
    """Contract `net` on `args` (the operation's arguments), in the network's output layout."""
    program = lower(net, get_operation(op).arguments, net.output_shape)
    return runner(program, DEVICE, torch.float64)(*args)


def reference(op: str, spec: ConvSpec, args: list[torch.Tensor]) -> torch.Tensor:
    """Independent result of forward / unfold (non-transposed) from tests.references."""
    pairs, mode = spec.padding, spec.padding_mode
    if op == "forward":
        return conv_nd(args[0], args[1], spec.stride, pairs, spec.dilation, spec.groups, mode)
    return unfold_nd(args[0], spec.kernel_size, spec.stride, pairs, spec.dilation, mode)


def same_value(before: Network, after: Network, op: str, args: list[torch.Tensor]) -> None:
    """Both networks give the same numbers (float64, relative 1e-12), in row-major order."""
    from tests.helpers import assert_close

    a = value(before, op, args).reshape(-1)
    b = value(after, op, args).reshape(-1)
    assert_close(b, a)
