"""Lowering and scheduling as one call: `Network` -> `EinsumProgram` -> `Schedule`, priced.

`lower` plans opt_einsum's path and the alternatives the cost model may prefer: for a
network that holds a product and its copy, each copy contracted first (`copies_first`,
the copy's half then runs once), and where index patterns scatter, the path that meets
them last (a fold: one pass over the data); `build_schedule` builds the program's
`Schedule` (the step rules, then the passes); `network_cost` is the price of a network
as it would run, which the rewrite driver minimises. `cheap=True` plans paths greedily: fast enough to price every
candidate inside the rewrite search (a 17-d convolution has 19 operands).

>>> from tnconv.spec import ConvSpec
>>> from tnconv.ops.convolution import forward_network
>>> net = forward_network(ConvSpec(2, 3, 3, input_size=(6, 6)), 1)
>>> program = lower(net, ("input", "weight"), (1, 3, 4, 4))
>>> build_schedule(program).families
('select', 'select', 'einsum')
"""

from __future__ import annotations

from dataclasses import replace
from math import prod
from typing import Optional

from tnconv.cache import LRUCache
from tnconv.ir.network import Network
from tnconv.lower.copies import copies_first
from tnconv.lower.cost import Cost, program_cost
from tnconv.lower.program import EinsumProgram, fold_first, gather_first, lower_program
from tnconv.lower.schedule.builder import build_steps, operand_registers
from tnconv.lower.schedule.model import Schedule
from tnconv.lower.schedule.passes import run_passes

__all__ = ["lower", "build_schedule", "price", "network_cost", "FOLD_GROWTH_LIMIT"]

#: The fold-first path is taken only where the tensor it folds is at most this many
#: times the largest argument: a larger one (depthwise and 3×3 layers, ∏K·C_in > C_out)
#: measured slower than contracting with the dense patterns, whatever the FLOP count.
FOLD_GROWTH_LIMIT = 4


_SCHEDULES = LRUCache(name="schedules")


def build_schedule(program: EinsumProgram) -> Schedule:
    """The `Schedule` that runs `program` (cached, programs being hashable;
    `tnconv.clear_caches` empties the cache)."""
    return _SCHEDULES.get_or_create(program, lambda: run_passes(build_steps(program)))


def price(program: EinsumProgram, itemsize: int = 4, shared: bool = False) -> Cost:
    """The per-call cost of `program` as its schedule runs it (`shared`: a common
    sub-expression priced once, as the schedule runs it once)."""
    return program_cost(program, build_schedule(program), operand_registers(program), itemsize,
                        shared)


def lower(net: Network, arguments: tuple[str, ...], result_shape: tuple[int, ...],
          cheap: bool = False) -> EinsumProgram:
    """Lower `net` (data roles `arguments` in call order) to its cheapest program; a
    pattern left dense that selects from an argument is contracted with it first (a
    selection), so that no value outside a window meets a 0 of the pattern."""
    program = lower_program(net, arguments, result_shape, "greedy" if cheap else None)
    program = gather_first(program) or program
    copied = copies_first(net, program, arguments, "greedy" if cheap else None)
    if copied is not None and price(copied, shared=True).total < price(program).total:
        program = copied
    folding = fold_first(program)
    if folding is None:
        return program
    cost = price(folding)
    largest_argument = max(prod(op.shape) for op in folding.arguments)
    if (cost.total >= price(program).total
            or cost.largest_intermediate > FOLD_GROWTH_LIMIT * largest_argument):
        return program
    return replace(folding, flops=2 * cost.flops, largest_intermediate=cost.largest_intermediate)


_COSTS = LRUCache(name="network costs")


def network_cost(net: Network, itemsize: int = 4, cheap: bool = True) -> Cost:
    """Per-call cost of `net` as it would run (data roles in order of appearance); a common
    sub-expression (a copy's half) is priced once, as the schedule runs it once. Cached
    (`tnconv.clear_caches` empties it): the rewrite orders `best_rewrite` compares meet
    the same networks."""
    def build() -> Cost:
        roles = tuple(dict.fromkeys(t.role for t in net.data_tensors))
        return price(lower(net, roles, net.output_shape, cheap=cheap), itemsize, shared=True)

    return _COSTS.get_or_create((net, itemsize, cheap), build)
