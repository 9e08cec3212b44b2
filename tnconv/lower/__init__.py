"""Stage 5, lowering: `Network` -> `EinsumProgram` (equation, operands, contraction path),
and the cost model that prices programs and networks (pure Python: no torch).

>>> from tnconv.spec import ConvSpec
>>> from tnconv.ops.convolution import forward_network
>>> lower(forward_network(ConvSpec(2, 3, 3, input_size=(6,)), 1), ("input", "weight"),
...       (1, 3, 4)).equation
'abce,bdcf,fge->abdg'
"""

from tnconv.lower.program import EinsumProgram, Operand, find_folds, lower, plan_path, walk_path

__all__ = ["EinsumProgram", "Operand", "find_folds", "lower", "plan_path", "walk_path"]
