"""GGN / Fisher networks of the weight from a symmetric factorisation of the output Hessian.

With the loss Hessian with respect to the layer's output written as S Sᵀ,
S[c, n, g, c_out, o…] (C columns: classes for the exact GGN, Monte-Carlo samples
for the Fisher), the GGN of the weight is Σ_{c,n} φ_{c,n} φ_{c,n}ᵀ with

    φ[c, n, g, c_out, c_in, k…] = Σ_o S[c, n, g, c_out, o…] · U[n, g, c_in, k…, o…]

(the weight VJP of every column of S, the batch leg kept). Then

- ggn_diagonal[w]            = Σ_{c,n} φ[c, n, w]²     (shared c, n, w; output w)
- ggn_gram[(c, n), (c', n')] = Σ_w φ[c, n, w] φ[c', n', w]   (ViViT: its non-zero
  eigenvalues are the GGN's; shared w, output (c, n, c', n'), read as [C·N, C·N])

both holding φ twice (`tnconv.ops.copies.with_copy`); the path decides whether φ
is formed or the Gram form Σ_{o,o'} (UᵀU')∘(SᵀS') runs, and `explain()` says which.
The pull-back of S to the layer's input (for the layer before) is the input VJP
of every column: the "input_vjp" operation on a batch of C·N.

>>> from tnconv.spec.conv_spec import ConvSpec
>>> net = ggn_gram_network(ConvSpec(2, 3, 3, input_size=(6,)), 4, classes=5)
>>> net.output, net.output_shape
(('c', 'n', "c'", "n'"), (5, 4, 5, 4))
"""

from __future__ import annotations

from typing import Any

from tnconv.errors import argument_error
from tnconv.ir.network import Network, Tensor
from tnconv.ops.autodiff import vjp_network
from tnconv.ops.convolution import forward_network, input_shape, output_shape
from tnconv.ops.registry import Operation, register
from tnconv.ops.statistics import explain_form
from tnconv.ops.copies import prime, with_copy
from tnconv.spec.conv_spec import ConvSpec

__all__ = ["sqrt_factor_network", "ggn_diagonal_network", "ggn_gram_network", "CLASS_LEG"]

#: The leg of the sqrt factor's columns (classes or Monte-Carlo samples).
CLASS_LEG = "c"


def _classes(operation: str, classes: Any) -> int:
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise argument_error(f"compile({operation!r})", "classes", classes, "an int >= 1")
    return classes


def sqrt_factor_network(spec: ConvSpec, batch: int, classes: int) -> Network:
    """φ[c, n, *weight legs]: the weight VJP of every column of the sqrt factor S."""
    vjp = vjp_network(forward_network(spec, batch), "weight", cotangent_role="sqrt_factor",
                      keep=("n",), name="S")
    factor = vjp.tensor("S")
    widened = Tensor(factor.name, (CLASS_LEG, *factor.indices), factor.role)
    return vjp.replace(
        tensors=tuple(widened if t is factor else t for t in vjp.tensors),
        sizes=((CLASS_LEG, classes), *vjp.sizes), output=(CLASS_LEG, *vjp.output),
        name="sqrt_factor_vjp").validate()


def ggn_diagonal_network(spec: ConvSpec, batch: int, classes: int = 1) -> Network:
    """Σ_{c,n} φ[c, n, w]² over the weight's legs w."""
    phi = sqrt_factor_network(spec, batch, _classes("ggn_diagonal", classes))
    return with_copy(phi, shared=phi.output, output=phi.output[2:], name="ggn_diagonal")


def ggn_gram_network(spec: ConvSpec, batch: int, classes: int = 1) -> Network:
    """Σ_w φ[c, n, w] φ[c', n', w]: [c, n, c', n']."""
    phi = sqrt_factor_network(spec, batch, _classes("ggn_gram", classes))
    columns = (CLASS_LEG, "n")
    return with_copy(phi, shared=phi.output[2:],
                     output=columns + tuple(prime(i) for i in columns), name="ggn_gram")


def _arguments(spec: ConvSpec, batch: int, classes: int = 1) -> tuple[tuple[int, ...], ...]:
    return (input_shape(spec, batch), (classes, *output_shape(spec, batch)))


register(Operation(
    name="ggn_diagonal", build=ggn_diagonal_network, arguments=("input", "sqrt_factor"),
    argument_shapes=_arguments, result_shape=lambda spec, batch, classes: spec.weight_shape,
    description="GGN diagonal of the weight from the output Hessian's sqrt factor "
                "[C, N, C_out, O…]: Σ_{c,n} (J_nᵀ S_{c,n})²",
    defaults=(("classes", 1),), explain_plan=explain_form))

register(Operation(
    name="ggn_gram", build=ggn_gram_network, arguments=("input", "sqrt_factor"),
    argument_shapes=_arguments,
    result_shape=lambda spec, batch, classes: (classes * batch, classes * batch),
    description="GGN Gram matrix [C·N, C·N] (ViViT): (Jᵀ S)ᵀ (Jᵀ S), c-major",
    defaults=(("classes", 1),), explain_plan=explain_form))
