"""The rewrite driver: named rule sets applied to a fixed point, every step recorded.

A rule is a function `rule(net) -> Network | None` (None: it does not apply).
A `RuleSet` is a named tuple of rules; `rewrite` runs the sets in order, each
to a fixed point: it applies the first rule (in the set's order) whose result
is not costlier than the current network (`tnconv.lower.cost`), records the step
and starts over, until no rule changes anything. Where no single step pays,
it looks ahead along a short chain of steps and keeps the chain if its end is
not costlier than its start.

>>> from tnconv.spec.conv_spec import ConvSpec
>>> from tnconv.ops.convolution import forward_network
>>> result = rewrite(forward_network(ConvSpec(3, 8, kernel_size=16, stride=16,
...                                           input_size=(224, 224)), 1))
>>> [step.rule for step in result.steps]
['non_overlapping_patches', 'non_overlapping_patches', 'squeeze_size_one', 'squeeze_size_one']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

from tnconv.lower import Cost, network_cost
from tnconv.ir.network import Network
from tnconv.rewrite.rules import (constant_fusion, full_extent_kernel, identity_pruning,
                     merge_parallel_legs, non_overlapping_patches, one_by_one_kernel,
                     scatter_to_gather, selection_lowering, squeeze_size_one,
                     stride_phases)

__all__ = ["Rule", "RuleSet", "Step", "RewriteResult", "rewrite", "CLEANUP", "CONNECTIVITY",
           "FUSION", "SELECTION", "SCATTER", "GATHER",
           "GATHER_ORDER", "DEFAULT_RULES", "EXPORT_RULES", "REWRITE_ORDERS", "best_rewrite"]

Rule = Callable[[Network], Optional[Network]]


@dataclass(frozen=True)
class RuleSet:
    """Rules run together to a fixed point; earlier rules are preferred. An unpriced
    set (`priced=False`) applies its rules whatever the cost: a form the schedule may run
    by a kernel the network cost cannot see (`GATHER`)."""

    name: str
    rules: tuple[Rule, ...]
    priced: bool = True


CLEANUP = RuleSet("cleanup", (identity_pruning, squeeze_size_one, merge_parallel_legs))
CONNECTIVITY = RuleSet("connectivity", (
    identity_pruning, one_by_one_kernel, full_extent_kernel, non_overlapping_patches,
) + CLEANUP.rules[1:])
FUSION = RuleSet("fusion", (constant_fusion,) + CLEANUP.rules)
SELECTION = RuleSet("selection", (selection_lowering,) + CLEANUP.rules)
#: Selection lowering that also turns scattering patterns into gathering ones (input VJPs,
#: transposed convolutions): a strided one per output phase (stride-1 windows of the
#: padded cotangent, then the phases interleaved), or as window views of the dilated,
#: padded cotangent with the flipped kernel; tap loops and shift-GEMMs run them in place.
SCATTER = RuleSet("scatter", (selection_lowering, stride_phases, scatter_to_gather)
                  + CLEANUP.rules)
#: Every scattering pattern as a gathering one, whatever the network cost: the cotangent
#: dilated and padded under stride-1 windows, the kernel flipped. Its dilated legs are
#: mostly zeros, which the network cost counts and torch's transposed convolution kernel
#: skips (`tnconv.lower.schedule.conv_views`); compile keeps it only where the schedule
#: runs it by kernels (`GATHER_ORDER`).
GATHER = RuleSet("gather", (selection_lowering, scatter_to_gather) + CLEANUP.rules,
                 priced=False)

#: Everything, cheapest rewrites first; the general window views last.
DEFAULT_RULES = (CONNECTIVITY, FUSION, SELECTION)
#: Phase orders `best_rewrite` compares: fusing patterns first can block the
#: window views that make KFC a single Gram product, and the other way round; the
#: third gathers where the others scatter.
REWRITE_ORDERS = (DEFAULT_RULES, (CONNECTIVITY, SELECTION, FUSION),
                  (CONNECTIVITY, SCATTER, FUSION))
#: The order that gathers everything (`GATHER`), for networks that scatter.
GATHER_ORDER = (CONNECTIVITY, GATHER, FUSION)
#: The rules that introduce no data views: a plain dense einsum for export.
EXPORT_RULES = (CLEANUP, FUSION)


@dataclass(frozen=True)
class Step:
    """One applied rule: what it touched and the cost before and after."""

    rule: str
    tensors: tuple[str, ...]
    indices: tuple[str, ...]
    before: Cost
    after: Cost

    def describe(self) -> str:
        return (f"{self.rule}: tensors {', '.join(self.tensors) or '-'}; "
                f"indices {', '.join(self.indices) or '-'}\n"
                f"      cost {self.before.describe()}\n"
                f"        -> {self.after.describe()}")


@dataclass(frozen=True)
class RewriteResult:
    """The rewritten network, the network it came from, the steps in order, the final cost."""

    network: Network
    steps: tuple[Step, ...]
    original: Network
    cost: Cost

    def describe(self) -> str:
        if not self.steps:
            return "no rule applied"
        return "\n".join(f"  {n + 1}. {s.describe()}" for n, s in enumerate(self.steps))


def _carriers(net: Network) -> dict[str, tuple]:
    return {i: (size, tuple(t.name for t in net.carriers(i)), i in net.output)
            for i, size in net.sizes}


def _touched(before: Network, after: Network) -> tuple[tuple[str, ...], tuple[str, ...]]:
    old, new = set(before.tensors), set(after.tensors)
    tensors = tuple(dict.fromkeys(t.name for t in before.tensors + after.tensors
                                  if (t in old) != (t in new)))
    a, b = _carriers(before), _carriers(after)
    indices = tuple(i for i in dict.fromkeys(list(a) + list(b)) if a.get(i) != b.get(i))
    return tensors, indices


def _as_sets(rules: Union[RuleSet, Sequence[RuleSet], Sequence[Rule]]) -> tuple[RuleSet, ...]:
    if isinstance(rules, RuleSet):
        return (rules,)
    rules = tuple(rules)
    if all(isinstance(r, RuleSet) for r in rules):
        return rules  # type: ignore[return-value]
    return (RuleSet("rules", rules),)  # type: ignore[arg-type]


def _first_step(net: Network, cost: Cost,
                rule_set: RuleSet) -> Optional[tuple[Rule, Network, Cost]]:
    for rule in rule_set.rules:
        candidate = rule(net)
        if candidate is None or candidate == net:
            continue
        after = network_cost(candidate)
        if after.not_worse_than(cost):
            return rule, candidate, after
    return None


def _any_step(net: Network, rule_set: RuleSet) -> Optional[tuple[Rule, Network, Cost]]:
    """The first rule of an unpriced set that changes `net`, whatever the cost."""
    for rule in rule_set.rules:
        candidate = rule(net)
        if candidate is not None and candidate != net:
            return rule, candidate, network_cost(candidate)
    return None


def _chain(net: Network, cost: Cost, rule_set: RuleSet,
           limit: int = 16) -> list[tuple[Rule, Network, Cost]]:
    """Look ahead: apply the set's rules regardless of cost, up to `limit` steps.

    Selection lowering pays off only once every spatial dimension is a view
    (one dense pattern left still forces the contraction); a chain is kept
    when it ends no costlier than it started, else nothing is returned.
    """
    chain: list[tuple[Rule, Network, Cost]] = []
    current = net
    for _ in range(limit):
        applied = next(((rule, candidate) for rule in rule_set.rules
                        for candidate in [rule(current)]
                        if candidate is not None and candidate != current), None)
        if applied is None:
            break
        current = applied[1]
        chain.append((applied[0], current, network_cost(current)))
        if chain[-1][2].not_worse_than(cost):
            return chain
    return []


def rewrite(net: Network, rules: Union[RuleSet, Sequence[RuleSet], Sequence[Rule]] = DEFAULT_RULES,
            *, max_steps: int = 200) -> RewriteResult:
    """Apply `rules` (rule sets in order, or one list of rules) to a fixed point."""
    original, steps = net, []
    cost = network_cost(net)
    for rule_set in _as_sets(rules):
        while len(steps) < max_steps:
            found = (_first_step(net, cost, rule_set) if rule_set.priced
                     else _any_step(net, rule_set))
            chain = [found] if found is not None else _chain(net, cost, rule_set)
            if not chain:
                break
            for rule, candidate, after in chain:
                tensors, indices = _touched(net, candidate)
                steps.append(Step(rule.__name__, tensors, indices, cost, after))
                net, cost = candidate, after
    return RewriteResult(net, tuple(steps), original, cost)


#: Dense constants larger than this (elements; 64 MiB in fp32) are avoided where a
#: rewrite can avoid them, even at some cost in time.
DENSE_LIMIT = 2 ** 24


def best_rewrite(net: Network, orders: Sequence[Sequence[RuleSet]] = REWRITE_ORDERS) -> RewriteResult:
    """Rewrite with each phase order and keep the cheapest result (the first on a tie).

    If that still holds a dense constant above `DENSE_LIMIT` elements (a pattern
    that no step can fold), scattering patterns are turned into gathering ones
    too, and that result is kept when its constants are smaller.
    """
    results = [rewrite(net, order) for order in orders]
    best = min(results, key=lambda r: (r.cost.total, r.cost.largest_intermediate))
    if best.cost.largest_constant > DENSE_LIMIT:
        lean = rewrite(net, (CONNECTIVITY, SCATTER, FUSION))
        if lean.cost.largest_constant < best.cost.largest_constant:
            return lean
    return best
