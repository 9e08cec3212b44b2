"""Stage 6, the schedule: an `EinsumProgram` as an ordered list of typed steps.

Each step belongs to one family (einsum, reduce, product, windows, scatter), is chosen
by the first matching rule of `RULES` (`builder`), and the passes (`passes`) merge
chains, move sums and fold the scale. Pure: the runtime (`tnconv.runtime`) interprets
it on torch tensors.

>>> from tnconv.lower.schedule import RULES
>>> [rule.__name__ for rule in RULES][-1]
'einsum_rule'
"""

from tnconv.lower.schedule.builder import RULES, build_steps
from tnconv.lower.schedule.model import Argument, Constant, Schedule, Step
from tnconv.lower.schedule.passes import PASSES, run_passes

__all__ = ["Argument", "Constant", "PASSES", "RULES", "Schedule", "Step", "build_steps",
           "run_passes"]
