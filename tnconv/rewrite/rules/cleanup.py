"""Clean-up rules: identity pruning, squeezing size-1 indices, merging legs that travel together.

>>> from tnconv.spec.conv_spec import ConvSpec
>>> from tnconv.ops.convolution import forward_network
>>> net = forward_network(ConvSpec(2, 3, kernel_size=1, input_size=(5,)), 1)
>>> [t.name for t in identity_pruning(net).tensors]
['X', 'W']
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from tnconv.ir.layout import view_strides
from tnconv.ir.network import Network, Tensor
from tnconv.ir.selection import is_sampling
from tnconv.ir.views import Reshape
from tnconv.rewrite.rules._common import Site, add_view, drop_from_output, rename_index, sites

__all__ = ["identity_pruning", "prune_identity", "squeeze_size_one", "merge_parallel_legs"]


def prune_identity(net: Network, site: Site) -> Optional[Network]:
    """Remove the site when it is the identity δ(o, i) (one tap, stride 1, no offset)."""
    p = site.pattern
    if p.kernel_size != 1 or p.input_size != p.output_size:
        return None
    if not np.array_equal(p.source_indices()[0], np.arange(p.output_size)):
        return None
    others = [t for t in net.tensors if t.name != site.tensor.name]
    if any(site.i in t.indices and site.o in t.indices for t in others):
        return None
    if site.i in net.output and site.o in net.output:
        return None
    pruned = rename_index(net.without(site.tensor.name), site.i, site.o)
    return drop_from_output(pruned, site.k).validate()


def identity_pruning(net: Network) -> Optional[Network]:
    """A pattern that is the identity δ(o, i) is a renaming of i to o."""
    for site in sites(net):
        pruned = prune_identity(net, site)
        if pruned is not None:
            return pruned
    return None


def _reshaped(net: Network, t: Tensor, legs: tuple[str, ...], sizes: dict[str, int]) -> Tensor:
    """Data tensor `t` with new legs of the same row-major layout (a free reshape)."""
    if t.view is None:
        return Tensor(t.name, legs, t.role, t.value)
    shape = tuple(sizes[i] for i in legs)
    return add_view(net, t, (Reshape(shape),), legs)


def squeeze_size_one(net: Network) -> Optional[Network]:
    """Drop a size-1 index from the data tensors and the output (constants must not carry it,
    nor selections or sample weights: their legs (s, L) are what the gather steps read)."""
    for index, size in net.sizes:
        carriers = net.carriers(index)
        if size != 1 or not carriers or any(t.is_constant or is_sampling(t) for t in carriers):
            continue
        sizes = net.size_map
        tensors = tuple(
            _reshaped(net, t, tuple(i for i in t.indices if i != index), sizes)
            if index in t.indices else t for t in net.tensors)
        output = tuple(i for i in net.output if i != index)
        return net.replace(tensors=tensors, output=output).pruned_sizes().validate()
    return None


def _adjacent(legs: tuple[str, ...], a: str, b: str) -> bool:
    return a in legs and legs.index(a) + 1 < len(legs) and legs[legs.index(a) + 1] == b


def _merges_in_place(t: Tensor, a: str) -> bool:
    """Leg a and the next leg of t's view merge without a copy (a window view's output leg
    and the leg before it do not: the padded rows between them are no part of the view,
    and merging them copied I3D's 1x3x3 windows whole, 9x its input)."""
    if t.view is None:
        return True
    layout = t.view.layout()
    at = t.indices.index(a)
    merged = layout.shape[:at] + (layout.shape[at] * layout.shape[at + 1],) + layout.shape[at + 2:]
    return view_strides(layout.shape, layout.strides, merged) is not None


def _travel_together(net: Network, a: str, b: str) -> bool:
    carriers = set(net.carriers(a)) | set(net.carriers(b))
    if not carriers or any(t.is_constant for t in carriers):
        return False
    if not all(_adjacent(t.indices, a, b) and _merges_in_place(t, a) for t in carriers):
        return False
    return _adjacent(net.output, a, b) or (a not in net.output and b not in net.output)


def _merged_name(net: Network, a: str, b: str) -> str:
    name = f"{a}*{b}"
    while name in net.size_map:
        name += "'"
    return name


def merge_parallel_legs(net: Network) -> Optional[Network]:
    """Two indices next to each other, in the same order, on every data tensor carrying them
    (and in the output, or in neither) become one index of their product size."""
    for t in net.tensors:
        for a, b in zip(t.indices, t.indices[1:]):
            if not _travel_together(net, a, b):
                continue
            merged = _merged_name(net, a, b)
            sizes = dict(net.sizes)
            sizes[merged] = sizes[a] * sizes[b]

            def fuse(legs: tuple[str, ...]) -> tuple[str, ...]:
                if a not in legs:
                    return legs
                at = legs.index(a)
                return legs[:at] + (merged,) + legs[at + 2:]

            tensors = tuple(_reshaped(net, u, fuse(u.indices), sizes) if a in u.indices else u
                            for u in net.tensors)
            return net.replace(tensors=tensors, sizes=tuple(sizes.items()),
                               output=fuse(net.output)).pruned_sizes().validate()
    return None

