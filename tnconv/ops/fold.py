"""Fold (col2im): the adjoint of unfold, built as the VJP of the unfold network.

Unfold is linear in the input, so cutting the input out of its network and
feeding the unfolded tensor as the cotangent gives fold: every column entry is
added back onto the pixel it was read from. The argument is laid out as
`torch.nn.functional.fold` takes it, [N, C·∏K, ∏O]; the result is
[N, C, *input_size] for any number of spatial dimensions.

>>> from tnconv.spec.conv_spec import ConvSpec
>>> net = fold_network(ConvSpec(2, 2, kernel_size=2, input_size=(5,)), batch=3)
>>> net.output, net.with_role("input").indices
(('n', 'g', 'c_in', 'i1'), ('n', 'g', 'c_in', 'k1', 'o1'))
"""

from __future__ import annotations

from tnconv.ir.network import Network
from tnconv.spec.conv_spec import ConvSpec
from tnconv.ops.autodiff import vjp_network
from tnconv.ops.convolution import input_shape, unfold_network, unfold_shape
from tnconv.ops.registry import Operation, register

__all__ = ["fold_network"]


def fold_network(spec: ConvSpec, batch: int) -> Network:
    """Fold of an unfolded [N, C·∏K, ∏O] tensor back onto [N, C, *input_size]."""
    return vjp_network(unfold_network(spec, batch), "input", cotangent_role="input",
                       name="U").replace(name="fold")


register(Operation(
    name="fold",
    build=fold_network,
    arguments=("input",),
    argument_shapes=lambda spec, batch: (unfold_shape(spec, batch),),
    result_shape=input_shape,
    description="fold (col2im), the adjoint of unfold: [N, C·∏K, ∏O] -> [N, C, *input_size]",
))
