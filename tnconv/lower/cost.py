"""Cost model of a network: per-call FLOPs, largest intermediate, bytes moved.

The network is lowered (`tnconv.lower.program`, which plans the contraction path with
opt_einsum) and the path is walked as execution runs it: steps whose operands
are all constants run once per plan and cost nothing per call; a fold
(`tnconv.runtime.fold_steps`) costs one pass over its data operand; every other step costs
the product of the sizes of the indices it touches. A window view that its step
reads in place (`tnconv.runtime.window_steps`) moves the data it views, not the windows.
Memory is the
largest intermediate, dense constant or materialised view. Bytes moved counts
the operands and results of the per-call steps plus what views copy
(padding, gathers, overlapping windows), at `itemsize` bytes per element.

>>> from tnconv.spec.conv_spec import ConvSpec
>>> from tnconv.ops.convolution import unfold_network
>>> cost = network_cost(unfold_network(ConvSpec(1, 1, kernel_size=2, input_size=(4,)), 1))
>>> cost.flops, cost.largest_intermediate
(24, 24)
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from tnconv.lower.program import EinsumProgram, lower, walk_path
from tnconv.ir.network import Network

__all__ = ["Cost", "network_cost", "program_cost"]


@dataclass(frozen=True)
class Cost:
    """Per-call cost of one network or program."""

    flops: int
    largest_intermediate: int
    bytes_moved: int
    #: Elements of the largest constant execution materialises.
    largest_constant: int = 0

    @property
    def total(self) -> int:
        """The quantity the rewrite driver minimises: FLOPs plus bytes moved."""
        return self.flops + self.bytes_moved

    def not_worse_than(self, other: "Cost") -> bool:
        """No more work than `other`; at equal work, no more memory."""
        return ((self.total, self.largest_intermediate)
                <= (other.total, other.largest_intermediate))

    def describe(self) -> str:
        return (f"{self.flops:,} flops (multiply-adds), largest "
                f"{self.largest_intermediate:,} elements, {self.bytes_moved:,} bytes moved")


def program_cost(program: EinsumProgram, itemsize: int = 4) -> Cost:
    """Walk `program`'s path as execution does; see the module docstring."""
    sizes = dict(zip((i for op in program.operands for i in op.indices),
                     (s for op in program.operands for s in op.shape)))
    sizes.update(zip(program.output_indices, program.output_shape))
    largest = dense = max((prod(op.shape) for op in program.dense_constants), default=0)
    folds = program.folds or (-1,) * len(program.path)
    steps = list(walk_path(program.operands, program.path, program.output_indices))
    in_place = _windows_read_in_place(program, steps, sizes)
    moved = 0
    for pos, op in enumerate(program.operands):
        if op.view is not None:
            copied = op.view.copied_elements(windows=pos not in in_place)
            moved += copied
            largest = max(largest, copied if pos in in_place else prod(op.shape) if copied else 0)
    flops = 0
    for step_no, taken, out, constant in steps:
        if constant:
            continue
        result = prod(sizes[i] for i in out)
        windowed = [pos for pos, _, _ in taken if pos in in_place]
        if windowed:  # the windows are read in place: the data once, the output once
            flops += prod(sizes[i] for i in dict.fromkeys(i for _, legs, _ in taken
                                                          for i in legs))
            moved += sum(prod(program.operands[pos].view.base_shape) if pos in in_place
                         else prod(sizes[i] for i in legs) for pos, legs, _ in taken) + result
        elif folds[step_no] >= 0:  # a scatter-add: one pass over the data operand
            data = max(prod(sizes[i] for i in legs) for _, legs, c in taken if not c)
            flops += data
            moved += data + result
        else:
            flops += prod(sizes[i] for i in dict.fromkeys(i for _, legs, _ in taken
                                                          for i in legs))
            moved += sum(prod(sizes[i] for i in legs) for _, legs, _ in taken) + result
        largest = max(largest, result)
    return Cost(flops, largest, moved * itemsize, dense)


def _windows_read_in_place(program: EinsumProgram, steps: list,
                           sizes: dict[str, int]) -> set[int]:
    """Positions of the windowed arguments that their step (of the walked `steps`) reads
    in place, as execution will (`tnconv.runtime.window_steps`)."""
    from tnconv.runtime.window_steps import reads_in_place, window_step  # the step types need torch

    found = set()
    for _, taken, out, constant in steps:
        if constant or len(taken) != 2:
            continue
        for (pos, legs, _), (_, other_legs, _) in (taken, taken[::-1]):
            view = program.operands[pos].view if pos >= 0 else None
            if view is not None and reads_in_place(
                    window_step(0, legs, view, 1, other_legs, out, sizes)):
                found.add(pos)
    return found


def network_cost(net: Network, itemsize: int = 4) -> Cost:
    """Per-call cost of contracting `net` (data roles in order of appearance)."""
    roles = tuple(dict.fromkeys(t.role for t in net.data_tensors))
    return program_cost(lower(net, roles, net.output_shape), itemsize)
