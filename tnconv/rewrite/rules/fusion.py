"""Constant fusion: contract a sub-network of constants once, into one symbolic constant.

A group of constants linked by indices that only they carry (patterns sharing
legs, or one pattern with a leg nobody else carries, e.g. Σ_o Π in
KFAC-reduce) becomes one `FusedConstant`; its value is a hashable description
of the contraction, materialised (and cached) like a pattern. One pattern summed over
its output leg is counted from its tap table, so its size is K·I, however large the
dense [K, O, I] pattern would be (a 16,000-sample layer's: 3 GiB).

>>> from tnconv.spec.conv_spec import ConvSpec
>>> from tnconv.ops.convolution import unfold_network
>>> net = unfold_network(ConvSpec(1, 1, kernel_size=2, input_size=(4,)), 1)
>>> net = net.replace(output=("n", "g", "c_in", "k1")).pruned_sizes()   # Σ_o Π
>>> fused = constant_fusion(net)
>>> fused.tensors[-1].indices, to_numpy(fused.tensors[-1].value).tolist()
(('k1', 'i1'), [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Hashable, Optional

import networkx
import numpy as np
import opt_einsum

from tnconv.ir.constants import register_constant, to_numpy
from tnconv.ir.equation import canonical, spell, symbol_map, unbounded_symbol
from tnconv.lower import network_cost
from tnconv.ir.network import Network, Tensor
from tnconv.spec.index_pattern import IndexPattern

__all__ = ["FusedConstant", "constant_fusion", "FUSION_LIMIT"]

#: Largest dense constant (elements) fusion builds; larger groups are left to the selection rules.
FUSION_LIMIT = 2 ** 22


@dataclass(frozen=True)
class FusedConstant:
    """Σ over the legs not in `legs` of the product of `parts` ((value, legs) pairs)."""

    parts: tuple[tuple[Hashable, tuple[str, ...]], ...]
    sizes: tuple[tuple[str, int], ...]
    legs: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        sizes = dict(self.sizes)
        return tuple(sizes[i] for i in self.legs)

    def to_numpy(self) -> np.ndarray:
        counted = self._pattern_sum()
        if counted is not None:
            return counted
        symbols = symbol_map((i for i, _ in self.sizes), unbounded_symbol)
        equation = spell([legs for _, legs in self.parts], self.legs, symbols)
        return opt_einsum.contract(equation, *[to_numpy(v) for v, _ in self.parts])

    def sums_one_pattern(self) -> bool:
        """One index pattern summed over its output leg (KFAC-reduce's Σ_o Π): built from
        the pattern's tap table, never from its dense [K, O, I] form."""
        if len(self.parts) != 1 or not isinstance(self.parts[0][0], IndexPattern):
            return False
        k, _, i = self.parts[0][1]
        return sorted(self.legs) == sorted((k, i))

    def _pattern_sum(self) -> Optional[np.ndarray]:
        """Σ_o Π[k, o, i] as per-tap counts of the pixels read (`sums_one_pattern`)."""
        if not self.sums_one_pattern():
            return None
        pattern, (k, _, i) = self.parts[0]
        table = pattern.source_indices()  # [K, O]; -1 where the padding is read
        counts = np.zeros((pattern.kernel_size, pattern.input_size))
        for tap, sources in enumerate(table):
            read = sources[sources >= 0]
            counts[tap] = np.bincount(read, minlength=pattern.input_size)
        return counts if self.legs == (k, i) else counts.T

    def signature(self) -> tuple:
        """The contraction with its legs renamed by first appearance: copies of one fused
        constant (KFC's primed legs) share it."""
        legs = [legs for _, legs in self.parts]
        sizes = dict(self.sizes)
        order = list(dict.fromkeys([i for term in legs for i in term] + list(self.legs)))
        return ("fused", tuple(v for v, _ in self.parts), canonical(legs, self.legs),
                tuple(sizes[i] for i in order))

    def describe(self) -> str:
        summed = sorted({i for _, legs in self.parts for i in legs} - set(self.legs))
        return f"fused {len(self.parts)} constant(s), summed over {', '.join(summed)}"


register_constant(FusedConstant, FusedConstant.to_numpy)


def _groups(net: Network) -> list[list[Tensor]]:
    """Constants linked by indices no data tensor and no output carries: the connected
    components of the network's graph restricted to the constants and those indices,
    each in network order, ordered by their last tensor."""
    private = {("index", i) for i, _ in net.sizes if i not in net.output
               and not any(not t.is_constant for t in net.carriers(i))}
    constants = {("tensor", t.name) for t in net.constant_tensors}
    order = {t.name: n for n, t in enumerate(net.tensors)}
    groups = []
    for component in networkx.connected_components(net.graph.subgraph(constants | private)):
        names = sorted((name for kind, name in component if kind == "tensor"), key=order.get)
        if names:
            groups.append([net.tensor(name) for name in names])
    return sorted(groups, key=lambda g: order[g[-1].name])


def _fuse(net: Network, group: list[Tensor], name: Optional[str] = None) -> Optional[Network]:
    names = {t.name for t in group}
    outside = {i for t in net.tensors if t.name not in names for i in t.indices}
    legs = tuple(dict.fromkeys(i for t in group for i in t.indices
                               if i in outside or i in net.output))
    used = {i for t in group for i in t.indices}
    if not legs or len(legs) == len(used):
        return None  # nothing is summed inside the group
    sizes = tuple((i, s) for i, s in net.sizes if i in used)
    value = FusedConstant(tuple((t.value, t.indices) for t in group), sizes, legs)
    parts = () if value.sums_one_pattern() else tuple(prod(net.shape_of(t)) for t in group)
    if max((prod(value.shape), *parts)) > FUSION_LIMIT:
        return None
    name = name or "F(" + ",".join(t.name for t in group) + ")"
    fused = Tensor(name, legs, "constant", value)
    kept = tuple(t for t in net.tensors if t.name not in names)
    return net.replace(tensors=kept + (fused,)).pruned_sizes().validate()


def _with_twin(net: Network, fused: Network, group: list[Tensor],
               groups: list[list[Tensor]]) -> Optional[Network]:
    """`fused` with the group's copy (its tensors' names primed: the other half of a
    curvature or KFC network) fused too, named as the copy of the first fusion, so that the
    two halves stay copies the schedule computes once; None where there is no copy."""
    twins = [t.name + "'" for t in group]
    if not any([t.name for t in g] == twins for g in groups):
        return None
    first = next(t for t in fused.tensors if t.name.startswith("F(") and t.name not in
                 {u.name for u in net.tensors})
    return _fuse(fused, [fused.tensor(name) for name in twins], first.name + "'")


def constant_fusion(net: Network) -> Optional[Network]:
    """The first group of constants whose fusion does not make the network costlier; a
    group with a copy is fused together with it (fusing one half alone would break the
    sharing of the two halves and never pay)."""
    before = None
    groups = _groups(net)
    for group in groups:
        fused = _fuse(net, group)
        if fused is None:
            continue
        before = before or network_cost(net)
        for candidate in (_with_twin(net, fused, group, groups), fused):
            if candidate is not None and network_cost(candidate).not_worse_than(before):
                return candidate
    return None
