"""Per-sample gradient statistics of the weight as networks: batch_l2, sum_grad_squared, variance.

With U[n, g, c, k…, o…] the unfolded input and V[n, g, c_out, o…] the output
cotangent (grad_output), the weight gradient of sample n is

    g[n, g, c_out, c, k…] = Σ_o V[n, g, c_out, o…] · U[n, g, c, k…, o…]

(`vjp_network` of the forward network, keeping n). Each statistic holds g
twice (`tnconv.ops.copies.with_copy`):

- batch_l2[n]        = Σ_w g[n, w]²                      (shared n, w; output n)
- sum_grad_squared[w] = Σ_n g[n, w]²                     (shared n, w; output w)
- variance[w]        = (1/N) Σ_{n,n'} C[n, n'] g[n, w] g[n', w],  C = I − 11ᵀ/N,

which is (1/N) Σ_n g_n² − ((1/N) Σ_n g_n)², BackPACK's `Variance`: the
population variance of the per-sample contributions g_n as the cotangent gives
them (with a mean-reduced loss they carry its 1/N). Whether g is formed first or
the Gram form Σ_{o,o'} (UᵀU')∘(VᵀV') runs is the contraction path's choice;
`Compiled.explain()` names it (`contraction_form`).

>>> from tnconv.spec.conv_spec import ConvSpec
>>> net = batch_l2_network(ConvSpec(2, 3, 3, input_size=(6,)), 4)
>>> net.output, sorted(t.role for t in net.tensors)[:2]
(('n',), ['grad_output', 'grad_output'])
>>> variance_network(ConvSpec(2, 3, 3, input_size=(6,)), 4).tensor("C").value.describe()
'centering I − 11ᵀ/4'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tnconv.ir.constants import register_constant
from tnconv.ir.network import Network, Tensor
from tnconv.ops.autodiff import vjp_network
from tnconv.ops.convolution import forward_network, input_shape, output_shape
from tnconv.ops.copies import FORMS, contraction_form, prime, with_copy
from tnconv.ops.registry import Operation, register
from tnconv.spec.conv_spec import ConvSpec

__all__ = ["Centering", "per_sample_gradient_network", "batch_l2_network",
           "sum_grad_squared_network", "variance_network", "explain_form"]


@dataclass(frozen=True)
class Centering:
    """The centering matrix I − 11ᵀ/size, a constant [size, size]."""

    size: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size)

    def to_numpy(self) -> np.ndarray:
        return np.eye(self.size) - 1.0 / self.size

    def describe(self) -> str:
        return f"centering I − 11ᵀ/{self.size}"


register_constant(Centering, Centering.to_numpy)


def per_sample_gradient_network(spec: ConvSpec, batch: int) -> Network:
    """g[n, *weight legs]: the weight VJP with the batch leg kept."""
    return vjp_network(forward_network(spec, batch), "weight", keep=("n",))


def batch_l2_network(spec: ConvSpec, batch: int) -> Network:
    """‖g_n‖² per sample: [n]."""
    g = per_sample_gradient_network(spec, batch)
    return with_copy(g, shared=g.output, output=("n",), name="batch_l2")


def sum_grad_squared_network(spec: ConvSpec, batch: int) -> Network:
    """Σ_n g_n² over the weight's legs."""
    g = per_sample_gradient_network(spec, batch)
    return with_copy(g, shared=g.output, output=g.output[1:], name="sum_grad_squared")


def variance_network(spec: ConvSpec, batch: int) -> Network:
    """(1/N) Σ_{n,n'} (I − 11ᵀ/N)[n, n'] g_n g_n' over the weight's legs."""
    g = per_sample_gradient_network(spec, batch)
    centering = Tensor("C", ("n", prime("n")), "constant", Centering(batch))
    return with_copy(g, shared=g.output[1:], output=g.output[1:], scale=1.0 / batch,
                     name="variance", extra=(centering,))


def explain_form(program) -> str:
    """The line `Compiled.explain` shows: which contraction form the path took."""
    form = contraction_form(program)
    return f"{form}: {FORMS[form]}"


def _arguments(spec: ConvSpec, batch: int) -> tuple[tuple[int, ...], ...]:
    return (input_shape(spec, batch), output_shape(spec, batch))


_COMMON = dict(arguments=("input", "grad_output"), argument_shapes=_arguments,
               explain_plan=explain_form)

register(Operation(
    name="batch_l2", build=batch_l2_network, result_shape=lambda spec, batch: (batch,),
    description="squared norm of each sample's weight gradient, [N]", **_COMMON))

register(Operation(
    name="sum_grad_squared", build=sum_grad_squared_network,
    result_shape=lambda spec, batch: spec.weight_shape,
    description="sum over samples of the squared per-sample weight gradients", **_COMMON))

register(Operation(
    name="variance", build=variance_network, result_shape=lambda spec, batch: spec.weight_shape,
    description="variance of the per-sample weight gradients (BackPACK's convention: "
                "(1/N) Σ g_n² − ((1/N) Σ g_n)²)", **_COMMON))
