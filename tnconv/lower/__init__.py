"""Stage 5, lowering and scheduling (pure Python: no torch).

`lower` turns a `Network` into an `EinsumProgram` (equation, operands, contraction
path); `build_schedule` turns the program into a `Schedule` (typed steps over registers,
chosen by rules and passes); the cost model (`price`, `network_cost`) prices a program
as its schedule runs it, for the rewrite driver and the path choice alike.

>>> from tnconv.spec import ConvSpec
>>> from tnconv.ops.convolution import forward_network
>>> lower(forward_network(ConvSpec(2, 3, 3, input_size=(6,)), 1), ("input", "weight"),
...       (1, 3, 4)).equation
'abce,bdcf,fge->abdg'
"""

from tnconv.lower.cost import Cost
from tnconv.lower.lowering import build_schedule, lower, network_cost, price
from tnconv.lower.paths import walk_path
from tnconv.lower.program import EinsumProgram, Operand
from tnconv.lower.schedule.model import Schedule

__all__ = ["Cost", "EinsumProgram", "Operand", "Schedule", "lower", "network_cost", "price",
           "build_schedule", "walk_path"]
