"""Rewriting a sampled network: the exact network's rewrite, then the sampling transform.

A selection R[s, L] (`tnconv.ir.selection`) is applied by an index operation,
which the cost model cannot price (it sees a dense one-hot [m, L] tensor and a
window view it thinks is copied whole). So the rewrite rules run on the exact
operation's network, where every choice is priced as usual, and the sampling
transform (`tnconv.ops.sampling.sample_legs`) is applied to the result: the
selections then meet the rewritten tensors, e.g. a window view of the input,
from which only the kept patches are gathered. Slicing a leg commutes with the
rules as long as they keep that leg (same name, same size: pads, windows and
splits keep a window-start leg); where one does not (legs merged into one,
patterns fused over the leg, a leg dilated), the sampled network is rewritten
as built instead.

>>> import tnconv
>>> spec = tnconv.ConvSpec(3, 8, kernel_size=3, input_size=(16, 16), padding=1)
>>> net = tnconv.compile("sampled_weight_vjp", spec, counts=(8, 8), batch_size=2).network()
>>> [t.indices for t in net.tensors if t.name == "X"]
[('n', 'c_in', 'o1[X]', 'k1', 'o2[X]', 'k2')]
"""

from __future__ import annotations

from typing import Any

from tnconv.cache import LRUCache
from tnconv.errors import TNConvError
from tnconv.lower import network_cost
from tnconv.ops.sampling import sample_legs, sampling_of
from tnconv.rewrite.driver import RewriteResult, best_rewrite
from tnconv.spec.conv_spec import ConvSpec

__all__ = ["rewrite_sampled"]

#: The exact networks' rewrites, shared by every count of a draw (a Bernoulli leg has
#: up to 17 programs, each sliced from the same rewrite).
_EXACT = LRUCache(name="exact_rewrites")


def rewrite_sampled(operation: Any, spec: ConvSpec, batch: int, options: dict) -> RewriteResult:
    """The rewrite of sampled operation `operation` (see the module docstring)."""
    exact, legs, counts, copies = sampling_of(operation.name, spec, batch, options)
    original = sample_legs(exact, legs, counts, copies)
    result = _EXACT.get_or_create(exact, lambda: best_rewrite(exact))
    sizes = result.network.size_map
    if all(sizes.get(leg) == exact.size(leg) for leg in legs):
        try:
            sampled = sample_legs(result.network, legs, counts, copies)
        except TNConvError:  # the copies of a sliced tensor were merged or split
            return best_rewrite(original)
        return RewriteResult(sampled, result.steps, original, network_cost(sampled))
    return best_rewrite(original)
