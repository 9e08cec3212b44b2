"""Differentiation by graph surgery, and the VJP / JVP operations it yields.

A convolution network is linear in each data tensor it holds once. Removing
that tensor leaves its Jacobian, whose open legs are the removed tensor's legs
plus the old output legs; contracting the old output legs with a cotangent is
the vector-Jacobian product (`vjp_network`). Feeding a tangent in place of the
tensor is the Jacobian-vector product (`jvp_network`). The same surgery works
on every network, so the transposed convolution's VJPs come for free.

>>> from tnconv.spec.conv_spec import ConvSpec
>>> from tnconv.ops.convolution import forward_network
>>> fwd = forward_network(ConvSpec(2, 3, kernel_size=3, input_size=(6,)), batch=4)
>>> vjp = vjp_network(fwd, "input")
>>> vjp.output, vjp.with_role("grad_output").indices
(('n', 'g', 'c_in', 'i1'), ('n', 'g', 'c_out', 'o1'))
>>> vjp_network(fwd, "weight", keep=("n",)).output   # per-sample weight gradients
('n', 'g', 'c_out', 'c_in', 'k1')
>>> jvp_network(fwd, "input", "input_tangent").with_role("input_tangent").name
'dX'
"""

from __future__ import annotations

from typing import Any, Sequence

from tnconv.errors import TNConvError, argument_error
from tnconv.ir.network import Network, Tensor
from tnconv.spec.conv_spec import ConvSpec
from tnconv.ops.convolution import forward_network, input_shape, output_shape
from tnconv.ops.registry import Operation, register

__all__ = ["vjp_network", "jvp_network"]


def _linear_tensor(net: Network, role: str, operation: str) -> Tensor:
    """The one tensor with `role`; the network must be linear in it."""
    found = [t for t in net.tensors if t.role == role]
    if len(found) != 1:
        raise TNConvError(
            f"{operation}: network {net.name!r} holds {len(found)} tensors with role {role!r}; "
            f"differentiation needs exactly one (a network linear in that role)")
    return found[0]


def vjp_network(net: Network, wrt_role: str, cotangent_role: str = "grad_output",
                keep: Sequence[str] = (), name: str = "V") -> Network:
    """VJP of a network linear in `wrt_role`: cut that tensor out, contract with a cotangent.

    The result's legs are the removed tensor's legs (in its order), preceded by
    the indices in `keep` (old output legs left open, e.g. ``("n",)`` for
    per-sample gradients). The cotangent tensor `name` carries the old output legs.
    """
    removed = _linear_tensor(net, wrt_role, "vjp_network")
    outside = [i for i in keep if i not in net.output]
    if outside:
        raise argument_error("vjp_network", "keep", tuple(keep),
                             f"indices of the network's output {net.output}")
    kept = tuple(i for i in keep if i not in removed.indices)
    cotangent = Tensor(name, net.output, cotangent_role)
    rest = net.without(removed.name)
    return rest.replace(
        tensors=(*rest.tensors, cotangent),
        output=kept + removed.indices,
        name=f"{net.name}_vjp_{wrt_role}",
    ).validate()


def jvp_network(net: Network, wrt_role: str, tangent_role: str) -> Network:
    """JVP of a network linear in `wrt_role`: the tangent takes that tensor's place."""
    replaced = _linear_tensor(net, wrt_role, "jvp_network")
    tangent = Tensor(f"d{replaced.name}", replaced.indices, tangent_role)
    return net.with_tensors(
        tangent if t is replaced else t for t in net.tensors
    ).replace(name=f"{net.name}_jvp_{wrt_role}").validate()


# ------------------------------------------------------------------ operations
def _per_sample_flag(per_sample: Any) -> bool:
    if not isinstance(per_sample, bool):
        raise argument_error("compile('weight_vjp')", "per_sample", per_sample, "True or False")
    return per_sample


def _weight_vjp_network(spec: ConvSpec, batch: int, per_sample: Any) -> Network:
    keep = ("n",) if _per_sample_flag(per_sample) else ()
    return vjp_network(forward_network(spec, batch), "weight", keep=keep)


def _weight_vjp_shape(spec: ConvSpec, batch: int, per_sample: Any) -> tuple[int, ...]:
    return ((batch,) if _per_sample_flag(per_sample) else ()) + spec.weight_shape



register(Operation(
    name="input_vjp",
    build=lambda spec, batch: vjp_network(forward_network(spec, batch), "input"),
    arguments=("weight", "grad_output"),
    argument_shapes=lambda spec, batch: (spec.weight_shape, output_shape(spec, batch)),
    result_shape=input_shape,
    description="vector-Jacobian product with respect to the input (cotangent grad_output)",
    batch_argument=1,
    native="tnconv.runtime.native:conv_input_vjp",
))

register(Operation(
    name="weight_vjp",
    build=_weight_vjp_network,
    arguments=("input", "grad_output"),
    argument_shapes=lambda spec, batch, per_sample: (input_shape(spec, batch),
                                                      output_shape(spec, batch)),
    result_shape=_weight_vjp_shape,
    description="vector-Jacobian product with respect to the weight "
                "(per_sample=True keeps the batch leg: [N, *weight_shape])",
    defaults=(("per_sample", False),),
    choices=(("per_sample", (False, True)),),
    native="tnconv.runtime.native:conv_weight_vjp",
))

register(Operation(
    name="input_jvp",
    build=lambda spec, batch: jvp_network(forward_network(spec, batch), "input", "input_tangent"),
    arguments=("input_tangent", "weight"),
    argument_shapes=lambda spec, batch: (input_shape(spec, batch), spec.weight_shape),
    result_shape=output_shape,
    description="Jacobian-vector product with respect to the input",
    native="tnconv.runtime.native:conv_forward",
))

register(Operation(
    name="weight_jvp",
    build=lambda spec, batch: jvp_network(forward_network(spec, batch), "weight",
                                          "weight_tangent"),
    arguments=("input", "weight_tangent"),
    argument_shapes=lambda spec, batch: (input_shape(spec, batch), spec.weight_shape),
    result_shape=output_shape,
    description="Jacobian-vector product with respect to the weight",
    native="tnconv.runtime.native:conv_forward",
))
