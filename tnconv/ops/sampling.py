"""Sampling a leg as a network transform (tensor dropout), and the sampled operations.

`sample_legs(net, legs, counts)` slices each leg L to a subset drawn at call
time: on every tensor t that carries L, L is renamed to a fresh leg L[t] and a
selection tensor R[s, L[t]] is added (one-hot rows of the caller's indices,
`tnconv.ir.selection`); an output leg L gets R[s, L] too, so the result is zero
off the subset. All selections of one leg share the new leg s (its size m is
the number of kept indices), and a weight vector w[s] carries the rescaling.
Summing over s gives Σ_s w_s · (the network with L fixed to idx_s): exactly the
sliced network, rescaled. Where the network holds `copies` identical copies of
a tensor that must stay identical (KFC's two copies of the unfolded input meet
in a Gram product), each copy gets its own weight tensor and the caller passes
w ** (1 / copies).

The sampled operations are ordinary registered operations on top of this
transform, so they rewrite, lower and schedule like any other:

- "sampled_weight_vjp": `leg="spatial"` slices the legs the kernel slides over
  (a convolution's output positions o_d; a transposed convolution's input
  positions i_d, where its patches are), each independently; `leg="channel"`
  slices the input channels per group (c_in, an output leg of the VJP).
- "sampled_kfc": `leg="spatial"` slices the output positions o_d, `leg="batch"`
  the batch leg n.

`counts` are the kept sizes, one per sliced leg (`sampled_legs`); legs of size 1
are never sliced. `spatial_dims` ("all", or a tuple of 0-based spatial dims) says
which spatial legs `leg="spatial"` slices (`tnconv.Sample` passes its own, by
default the leading one). The caller's arguments are the operation's data, then one
integer vector of all legs' indices (role "selection", leg after leg) and one
float vector of their weights (role "weights").

>>> from tnconv.spec.conv_spec import ConvSpec
>>> from tnconv.ops.kfac import kfc_network
>>> spec = ConvSpec(2, 4, kernel_size=3, input_size=(6,))
>>> sampled_legs("kfc", spec, 5, "spatial")
(('o1', 4),)
>>> net = sample_legs(kfc_network(spec, 5), ("o1",), (2,), copies=2)
>>> [(t.name, t.indices) for t in net.tensors if t.role == "selection"]
[('R_o1[Π1]', ('s_o1', 'o1[Π1]')), ("R_o1[Π1']", ('s_o1', "o1[Π1']"))]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from tnconv.cache import LRUCache
from tnconv.errors import TNConvError, argument_error
from tnconv.ir.network import Network, Tensor
from tnconv.ir.selection import SELECTION_ROLE, WEIGHTS_ROLE, SelectionView
from tnconv.ir.views import Slice, View
from tnconv.ops.autodiff import _weight_vjp_network, _weight_vjp_shape
from tnconv.ops.convolution import forward_network, input_shape, output_shape, spatial
from tnconv.ops.kfac import (REDUCTIONS, STRUCTURES, _FACTOR_DEFAULTS, factor_shape,
                             kfc_network)
from tnconv.ops.registry import Operation, register
from tnconv.spec.conv_spec import ConvSpec

__all__ = ["sample_legs", "sampled_legs", "check_spatial_dims", "sampling_of", "exact_network",
           "SAMPLED", "EXACT", "SampledOperation", "LEGS"]

#: The legs each sampled operation can slice.
LEGS = {"weight_vjp": ("spatial", "channel"), "kfc": ("spatial", "batch")}


@dataclass(frozen=True)
class SampledOperation:
    """How an exact operation is sampled: the registered sampled operation's name, and how
    many identical copies of each sliced tensor its network holds (weights w ** (1/copies))."""

    name: str
    copies: int


#: Exact operation -> its sampled form.
SAMPLED = {"weight_vjp": SampledOperation("sampled_weight_vjp", 1),
           "kfc": SampledOperation("sampled_kfc", 2)}
#: Sampled operation -> the exact one.
EXACT = {sampled.name: op for op, sampled in SAMPLED.items()}


def check_spatial_dims(operation: str, dims: Any,
                       ndim: Optional[int] = None) -> Any:
    """`dims` as "all" or a sorted tuple of distinct spatial dims (each below `ndim` where
    given), else a `TNConvError` naming `operation`."""
    if dims == "all":
        return "all"
    allowed = '"all" or a non-empty tuple of distinct spatial dims (0-based ints' + (
        f" below {ndim})" if ndim is not None else ")")
    if isinstance(dims, (list, tuple)) and dims and all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0
            and (ndim is None or d < ndim) for d in dims) and len(set(dims)) == len(dims):
        return tuple(sorted(dims))
    raise argument_error(operation, "spatial_dims", dims, allowed)


def _fresh(net: Network, name: str, taken: set[str]) -> str:
    while name in net.size_map or name in taken:
        name += "'"
    taken.add(name)
    return name


def _renamed(t: Tensor, old: str, new: str) -> Tensor:
    legs = tuple(new if leg == old else leg for leg in t.indices)
    return Tensor(t.name, legs, t.role, t.value, t.view)


def _weights_view(offset: int, count: int, total: int) -> Optional[View]:
    return None if count == total else View((total,), (Slice(0, offset, offset + count),))


def _sample_leg(net: Network, leg: str, count: int, offset: int, total: int,
                copies: int) -> Network:
    """`net` with `leg` sliced to `count` entries read from `offset` of the caller's vectors."""
    size = net.size(leg)
    carriers = net.carriers(leg)
    if copies > 1 and (leg in net.output or len(carriers) != copies):
        raise TNConvError(f"sample_legs: leg {leg!r} of {net.name!r} is carried by "
                          f"{len(carriers)} tensors; {copies} copies need one each")
    taken: set[str] = set()
    s = _fresh(net, f"s_{leg}", taken)
    selection = SelectionView(offset, count, size, total)
    weights_view = _weights_view(offset, count, total)
    renamed, added, sizes = {}, [], [(s, count)]
    for t in carriers:
        new = _fresh(net, f"{leg}[{t.name}]", taken)
        renamed[t.name] = _renamed(t, leg, new)
        sizes.append((new, size))
        added.append(Tensor(f"R_{leg}[{t.name}]", (s, new), SELECTION_ROLE, view=selection))
    if leg in net.output:
        added.append(Tensor(f"R_{leg}", (s, leg), SELECTION_ROLE, view=selection))
    names = [f"w_{leg}[{t.name}]" for t in carriers] if copies > 1 else [f"w_{leg}"]
    added += [Tensor(name, (s,), WEIGHTS_ROLE, view=weights_view) for name in names]
    tensors = tuple(renamed.get(t.name, t) for t in net.tensors) + tuple(added)
    return net.replace(tensors=tensors, sizes=net.sizes + tuple(sizes)).pruned_sizes()


def sample_legs(net: Network, legs: Sequence[str], counts: Sequence[int],
                copies: int = 1) -> Network:
    """`net` with each of `legs` sliced to `counts` entries (see the module docstring).

    The caller passes the indices of all legs as one vector, leg after leg, and
    their weights as another.
    """
    if len(legs) != len(counts):
        raise argument_error("sample_legs", "counts", tuple(counts),
                             f"one count per leg of {tuple(legs)}")
    total, offset = sum(counts), 0
    for leg, count in zip(legs, counts):
        net = _sample_leg(net, leg, count, offset, total, copies)
        offset += count
    return net.replace(name=f"{net.name}_sampled").validate()


# ------------------------------------------------------------------ operations
#: The sampled operations are rewritten as their exact network, then sampled
#: (`tnconv.rewrite.sampling`): the cost model never prices a one-hot selection.
_REWRITER = "tnconv.rewrite.sampling:rewrite_sampled"

def _pattern_out_legs(spec: ConvSpec) -> tuple[str, ...]:
    """The legs the kernel slides over: o_d, or i_d for a transposed convolution."""
    return spatial("i" if spec.transposed else "o", spec)


def _leg_names(op: str, spec: ConvSpec, leg: str,
               spatial_dims: Any = "all") -> tuple[str, ...]:
    where = f"compile({SAMPLED[op].name!r})"
    if leg not in LEGS[op]:
        raise argument_error(where, "leg", leg, ", ".join(repr(name) for name in LEGS[op]))
    if leg == "spatial":
        names = _pattern_out_legs(spec) if op == "weight_vjp" else spatial("o", spec)
        dims = check_spatial_dims(where, spatial_dims, spec.ndim)
        return names if dims == "all" else tuple(names[d] for d in dims)
    return ("c_in",) if leg == "channel" else ("n",)


_LEGS = LRUCache(name="sampled legs")


def sampled_legs(op: str, spec: ConvSpec, batch: int, leg: str,
                 spatial_dims: Any = "all") -> tuple[tuple[str, int], ...]:
    """(name, size) of each leg that `leg` of exact operation `op` ("weight_vjp" or "kfc")
    slices: those of size above 1 (nothing is left to drop from a leg of size 1); a
    spatial leg only along `spatial_dims` ("all", or a tuple of 0-based spatial dims).
    Cached (`tnconv.clear_caches` empties it)."""
    return _LEGS.get_or_create((op, spec, batch, leg, spatial_dims),
                               lambda: _sampled_legs(op, spec, batch, leg, spatial_dims))


def _sampled_legs(op: str, spec: ConvSpec, batch: int, leg: str,
                  spatial_dims: Any) -> tuple[tuple[str, int], ...]:
    forward = forward_network(spec, batch)
    sizes = dict(forward.sizes)
    return tuple((name, sizes[name]) for name in _leg_names(op, spec, leg, spatial_dims)
                 if sizes.get(name, 1) > 1)


def _counts(op: str, spec: ConvSpec, batch: int, leg: str, counts: Any,
            spatial_dims: Any = "all") -> tuple[int, ...]:
    """`counts` checked against the legs it slices (None: every index kept)."""
    legs = sampled_legs(op, spec, batch, leg, spatial_dims)
    if counts is None:
        return tuple(size for _, size in legs)
    ok = (isinstance(counts, tuple) and len(counts) == len(legs)
          and all(isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= size
                  for c, (_, size) in zip(counts, legs)))
    if not ok:
        sizes = ", ".join(f"{name} ≤ {size}" for name, size in legs) or "none"
        raise argument_error(f"compile({SAMPLED[op].name!r})", "counts", counts,
                             f"None or a tuple of positive ints, one per sliced leg ({sizes})")
    return counts


def exact_network(op: str, spec: ConvSpec, batch: int, options: dict) -> Network:
    """The network of exact operation `op` ("weight_vjp" or "kfc") with its `options`."""
    if op == "weight_vjp":
        return _weight_vjp_network(spec, batch, options.get("per_sample", False))
    return kfc_network(spec, batch, **options)


def sampling_of(name: str, spec: ConvSpec, batch: int, options: dict) -> tuple:
    """For sampled operation `name` with `options`: (the exact network, the names of the
    legs it slices, their counts, the copies of each sliced tensor)."""
    op = EXACT[name]
    exact = {k: v for k, v in options.items() if k not in ("leg", "counts", "spatial_dims")}
    dims = options.get("spatial_dims", "all")
    counts = _counts(op, spec, batch, options["leg"], options["counts"], dims)
    names = tuple(leg for leg, _ in sampled_legs(op, spec, batch, options["leg"], dims))
    return exact_network(op, spec, batch, exact), names, counts, SAMPLED[op].copies


def _build(name: str, spec: ConvSpec, batch: int, **options: Any) -> Network:
    exact, names, counts, copies = sampling_of(name, spec, batch, options)
    return sample_legs(exact, names, counts, copies)


def _index_shapes(op: str, spec: ConvSpec, batch: int, leg: str, counts: Any,
                  spatial_dims: Any) -> tuple:
    total = (sum(_counts(op, spec, batch, leg, counts, spatial_dims)),)
    return (total, total)


register(Operation(
    name="sampled_weight_vjp",
    build=lambda spec, batch, **options: _build("sampled_weight_vjp", spec, batch, **options),
    arguments=("input", "grad_output", SELECTION_ROLE, WEIGHTS_ROLE),
    argument_shapes=lambda spec, batch, leg, counts, per_sample, spatial_dims: (
        input_shape(spec, batch), output_shape(spec, batch),
        *_index_shapes("weight_vjp", spec, batch, leg, counts, spatial_dims)),
    result_shape=lambda spec, batch, leg, counts, per_sample, spatial_dims: _weight_vjp_shape(
        spec, batch, per_sample),
    description="weight VJP from a subset of one leg (tensor dropout): selections pick the "
                "kept indices, weights rescale them",
    defaults=(("leg", "spatial"), ("counts", None), ("per_sample", False),
              ("spatial_dims", "all")),
    choices=(("leg", LEGS["weight_vjp"]), ("per_sample", (False, True))),
    rewriter=_REWRITER,
    native="tnconv.runtime.native:sampled_weight_vjp",
))

register(Operation(
    name="sampled_kfc",
    build=lambda spec, batch, **options: _build("sampled_kfc", spec, batch, **options),
    arguments=("input", SELECTION_ROLE, WEIGHTS_ROLE),
    argument_shapes=lambda spec, batch, leg, counts, spatial_dims, **_: (
        input_shape(spec, batch), *_index_shapes("kfc", spec, batch, leg, counts,
                                                 spatial_dims)),
    result_shape=lambda spec, batch, leg, counts, spatial_dims, **options: factor_shape(
        spec, batch, **options),
    description="KFC input factor from a subset of output positions or samples (tensor "
                "dropout); selections pick them, weights rescale",
    defaults=(("leg", "spatial"), ("counts", None), ("spatial_dims", "all"))
    + _FACTOR_DEFAULTS,
    choices=(("leg", LEGS["kfc"]), ("reduction", REDUCTIONS["kfc"]), ("structure", STRUCTURES),
             ("group_average", (False, True))),
    rewriter=_REWRITER,
))
