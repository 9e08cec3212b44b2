"""Hessian-diagonal backpropagation through a convolution (Becker & LeCun 1989, HesScale).

Given h[n, g, c_out, o…], the diagonal of the loss Hessian with respect to the
layer's output (per sample: the Hessian of a sum over samples is block diagonal
in n), both methods treat that Hessian as diagonal and square the Jacobians:

    weight:  Σ_{n,o} h[n, c_out, o] · U[n, c_in, k, o]²
    input:   Σ_{c_out,o} h[n, c_out, o] · J[c_out, o, c_in, i]²,   J = Σ_k W[k] · Π[k, o, i]

Both are exact when the output Hessian is diagonal (a convolution followed by
an elementwise loss) and drop its off-diagonal entries otherwise; for a
convolution this holds for the weight too, since one weight meets every output
position (for a dense layer the weight's diagonal would be exact).

As networks: the patterns are one-hot (each tap at each output position reads at
most one input pixel), so U² = Σ_i X[i]² Π[k, o, i]: the weight diagonal is the weight
VJP network with X∘X in X's place (its argument "input_squared", which the front-end
squares) and h as cotangent, exactly one torch kernel (its native route). J² is the
input VJP with W and W' on the same legs where no two taps meet one input pixel at one
output position (`taps_distinct`: zero padding, and the other modes while the window
does not fold onto itself); otherwise the copies of W and of the patterns get their own
tap legs k' and meet on (o, i).

>>> from tnconv.spec.conv_spec import ConvSpec
>>> net = hessian_diagonal_weight_network(ConvSpec(2, 3, 3, input_size=(6,)), 4)
>>> [(t.name, t.role) for t in net.tensors if not t.is_constant]
[('X²', 'input_squared'), ('H', 'output_hessian_diagonal')]
>>> taps_distinct(ConvSpec(1, 1, 3, input_size=(4,), padding=2, padding_mode="reflect"))
False
"""

from __future__ import annotations

import numpy as np

from tnconv.ir.network import Network, Tensor
from tnconv.ops.autodiff import vjp_network
from tnconv.ops.convolution import forward_network, input_shape, output_shape, spatial
from tnconv.ops.copies import prime, primed_copies
from tnconv.ops.registry import Operation, register
from tnconv.spec.conv_spec import ConvSpec

__all__ = ["hessian_diagonal_weight_network", "hessian_diagonal_input_network",
           "taps_distinct"]

ROLE = "output_hessian_diagonal"


def taps_distinct(spec: ConvSpec) -> bool:
    """Whether no two taps read one input pixel at one output position, in every dimension."""
    for pattern in spec.patterns():
        source = np.sort(pattern.source_indices(), axis=0)  # [K, O], taps sorted per output
        if np.any((source[1:] == source[:-1]) & (source[1:] >= 0)):
            return False
    return True


def _with_square(net: Network, role: str) -> Network:
    """`net` with a copy of its `role` tensor on the same legs: that tensor squared."""
    tensor = net.with_role(role)
    return net.replace(tensors=net.tensors + (Tensor(prime(tensor.name), tensor.indices, role),))


def hessian_diagonal_weight_network(spec: ConvSpec, batch: int) -> Network:
    """Σ_{n,o} h · U² over the weight's legs: the weight VJP of h with X∘X for X."""
    vjp = vjp_network(forward_network(spec, batch), "weight", cotangent_role=ROLE, name="H")
    x = vjp.with_role("input")
    squared = Tensor("X²", x.indices, "input_squared")
    return vjp.with_tensors(squared if t is x else t for t in vjp.tensors).replace(
        name="hessian_diagonal_weight").validate()


def hessian_diagonal_input_network(spec: ConvSpec, batch: int) -> Network:
    """Σ_{c_out,o} h · J² over the input's legs: the input VJP of h with J² for J."""
    vjp = vjp_network(forward_network(spec, batch), "input", cotangent_role=ROLE, name="H")
    if taps_distinct(spec):
        net = _with_square(vjp, "weight")
    else:
        taps = set(spatial("k", spec))
        copied = tuple(t for t in vjp.tensors if t.role in ("weight", "pattern"))
        sizes = vjp.sizes + tuple((prime(k), vjp.size(k)) for k in sorted(taps))
        net = vjp.replace(tensors=vjp.tensors + primed_copies(copied, taps), sizes=sizes)
    return net.replace(name="hessian_diagonal_input").validate()


register(Operation(
    name="hessian_diagonal_weight", build=hessian_diagonal_weight_network,
    arguments=("input_squared", ROLE),
    argument_shapes=lambda spec, batch: (input_shape(spec, batch), output_shape(spec, batch)),
    result_shape=lambda spec, batch: spec.weight_shape,
    description="Hessian diagonal of the weight from that of the output "
                "(Becker-LeCun / HesScale): Σ_{n,o} h · u², the weight VJP of h at x∘x",
    native="tnconv.runtime.native:conv_weight_vjp"))

register(Operation(
    name="hessian_diagonal_input", build=hessian_diagonal_input_network,
    arguments=("weight", ROLE),
    argument_shapes=lambda spec, batch: (spec.weight_shape, output_shape(spec, batch)),
    result_shape=input_shape, batch_argument=1,
    description="Hessian diagonal of the input from that of the output "
                "(Becker-LeCun / HesScale): Σ_{c_out,o} h · (Σ_k W Π)²"))
