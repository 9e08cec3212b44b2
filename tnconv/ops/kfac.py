"""Networks for the Kronecker factors of KFAC: KFC (KFAC-expand), KFAC-reduce, patches.

With U[n, g, c, k…, o…] = Σ_i X[n, g, c, i…] · ∏_d Π_d (the unfold network),
the KFC factor of group g is one network with two copies of X and of every Π:

    S[g, c, k…, c', k'…] = Σ_{n, o} U[n, g, c, k…, o…] · U[n, g, c', k'…, o…]

(the copies share n, g and o; their channel, kernel and input legs are primed).
KFAC-reduce averages U over o before the outer product, so each copy keeps its
own o legs; those are dangling on the pattern copies, and lowering sums them
out once per plan (Σ_o Π is a constant). `structure="diagonal"` identifies the
primed channel and kernel legs with the unprimed ones, so no D×D matrix is
formed; `group_average=True` gives each copy its own, summed, group leg.
Normalisations live in `Network.scale`, computed in Python floats.
Transposed convolutions need no special case: their patterns already carry
the legs (k, i, o) with i the transposed input.

>>> from tnconv.spec.conv_spec import ConvSpec
>>> net = kfc_network(ConvSpec(2, 4, kernel_size=3, input_size=(6,)), 5)
>>> net.output, net.scale == 1 / (5 * 4)
(('g', 'c_in', 'k1', "c_in'", "k1'"), True)
"""

from __future__ import annotations

from math import prod
from typing import Any

from tnconv.errors import argument_error
from tnconv.ir.network import Network, Tensor
from tnconv.spec.conv_spec import ConvSpec
from tnconv.ops.convolution import conv_sizes, input_shape, spatial, unfold_network
from tnconv.ops.registry import Operation, register

__all__ = ["kfc_network", "kfac_reduce_network", "patches_network",
           "averaged_patches_network", "REDUCTIONS", "STRUCTURES"]

#: Allowed `reduction` values per operation.
REDUCTIONS = {"kfc": ("mean", "batch", "sum"), "kfac_reduce": ("mean", "sum")}
STRUCTURES = ("full", "diagonal")


def _prime(name: str) -> str:
    return name + "'"


def _copy(tensor: Tensor, primed: set[str]) -> Tensor:
    """A copy of `tensor` (name and chosen legs primed)."""
    legs = tuple(_prime(i) if i in primed else i for i in tensor.indices)
    return Tensor(_prime(tensor.name), legs, tensor.role, tensor.value)


def _check(op: str, spec: ConvSpec, reduction: str, structure: str) -> None:
    if reduction not in REDUCTIONS[op]:
        raise argument_error(op, "reduction", reduction,
                             ", ".join(repr(r) for r in REDUCTIONS[op]))
    if structure not in STRUCTURES:
        raise argument_error(op, "structure", structure, ", ".join(repr(s) for s in STRUCTURES))


def _factor_network(spec: ConvSpec, batch: int, *, share_o: bool, structure: str,
                    group_average: bool, scale: float, name: str) -> Network:
    """Two copies of the unfold network contracted over n (and o when `share_o`)."""
    unfold = unfold_network(spec, batch)
    kept = ("c_in", *spatial("k", spec))
    primed = set(spatial("i", spec))
    if structure == "full":
        primed |= set(kept)
    if not share_o:
        primed |= set(spatial("o", spec))
    if group_average:
        primed.add("g")
    copies = tuple(_copy(t, primed) for t in unfold.tensors)
    sizes = dict(conv_sizes(spec, batch))
    sizes.update({_prime(i): sizes[i] for i in sorted(primed)})
    groups = () if group_average else ("g",)
    output = (*groups, *kept) + (tuple(_prime(i) for i in kept) if structure == "full" else ())
    if group_average:
        scale /= spec.groups ** 2
    return Network(
        tensors=unfold.tensors + copies, sizes=tuple(sizes.items()), output=output,
        scale=scale, name=name,
    ).pruned_sizes().validate()


def kfc_network(spec: ConvSpec, batch: int, reduction: str = "mean", structure: str = "full",
                group_average: bool = False) -> Network:
    """KFC / KFAC-expand input factor S[g, c, k…, c', k'…] (or its diagonal [g, c, k…])."""
    _check("kfc", spec, reduction, structure)
    count = {"mean": batch * prod(spec.output_size), "batch": batch, "sum": 1}[reduction]
    return _factor_network(spec, batch, share_o=True, structure=structure,
                           group_average=group_average, scale=1.0 / count, name="kfc")


def kfac_reduce_network(spec: ConvSpec, batch: int, reduction: str = "mean",
                        structure: str = "full", group_average: bool = False) -> Network:
    """KFAC-reduce input factor (1/N) Σ_n ū ūᵀ with ū the patch averaged over o."""
    _check("kfac_reduce", spec, reduction, structure)
    count = prod(spec.output_size) ** 2 * (batch if reduction == "mean" else 1)
    return _factor_network(spec, batch, share_o=False, structure=structure,
                           group_average=group_average, scale=1.0 / count, name="kfac_reduce")


def patches_network(spec: ConvSpec, batch: int) -> Network:
    """Patch matrix P[n, g, o…, c, k…] (reshaped to [N, G, ∏O, D])."""
    unfold = unfold_network(spec, batch)
    output = ("n", "g", *spatial("o", spec), "c_in", *spatial("k", spec))
    return unfold.replace(output=output, name="patches").validate()


def averaged_patches_network(spec: ConvSpec, batch: int) -> Network:
    """Patches averaged over output positions, ū[n, g, c, k…] (reshaped to [N, G, D])."""
    unfold = unfold_network(spec, batch)
    output = ("n", "g", "c_in", *spatial("k", spec))
    return unfold.replace(output=output, scale=1.0 / prod(spec.output_size),
                          name="averaged_patches").pruned_sizes().validate()


def _patch_length(spec: ConvSpec) -> int:
    return spec.in_channels // spec.groups * prod(spec.kernel_size)  # type: ignore[arg-type]


def factor_shape(spec: ConvSpec, batch: int, reduction: str = "mean", structure: str = "full",
                 group_average: bool = False) -> tuple[int, ...]:
    """[G, D, D] ([G, D] for the diagonal); without the G axis when `group_average`."""
    d = _patch_length(spec)
    groups = () if group_average else (spec.groups,)
    return (*groups, d, d) if structure == "full" else (*groups, d)



def _input_shapes(spec: ConvSpec, batch: int, **_: object) -> tuple[tuple[int, ...], ...]:
    return (input_shape(spec, batch),)


_FACTOR_DEFAULTS = (("reduction", "mean"), ("structure", "full"), ("group_average", False))


def _factor_choices(name: str) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    return (("reduction", REDUCTIONS[name]), ("structure", STRUCTURES),
            ("group_average", (False, True)))


register(Operation(
    name="kfc",
    build=kfc_network,
    arguments=("input",),
    argument_shapes=_input_shapes,
    result_shape=factor_shape,
    description="KFC (KFAC-expand) input factor [G, D, D]: Σ_{n,o} u uᵀ, normalised",
    defaults=_FACTOR_DEFAULTS,
    choices=_factor_choices("kfc"),
))

register(Operation(
    name="kfac_reduce",
    build=kfac_reduce_network,
    arguments=("input",),
    argument_shapes=_input_shapes,
    result_shape=factor_shape,
    description="KFAC-reduce input factor [G, D, D]: (1/N) Σ_n ū ūᵀ, ū = mean_o u",
    defaults=_FACTOR_DEFAULTS,
    choices=_factor_choices("kfac_reduce"),
))

register(Operation(
    name="patches",
    build=patches_network,
    arguments=("input",),
    argument_shapes=_input_shapes,
    result_shape=lambda spec, batch: (batch, spec.groups, prod(spec.output_size),
                                      _patch_length(spec)),
    description="patch matrix [N, G, ∏O, D] (unfolded input, per group)",
))

register(Operation(
    name="averaged_patches",
    build=averaged_patches_network,
    arguments=("input",),
    argument_shapes=_input_shapes,
    result_shape=lambda spec, batch: (batch, spec.groups, _patch_length(spec)),
    description="patches averaged over output positions [N, G, D]",
))
