"""The scatter family: an index pattern that scatters, applied without building it.

A contraction R[…, i] = Σ_{k,o} Π[k, o, i] Y[…, o, k], where a pattern meets one data
operand holding both its o and k legs, is the scatter-add of
`torch.nn.functional.fold`: each (o, k) entry of Y lands on at most one i. As an
einsum it needs the dense [K, O, I] pattern (2 GiB for the input VJP of a
16,000-sample 1d layer) and O·I·K multiply-adds per row; as a fold it reads Y once
(one strided add per tap with zero padding, one `index_add_` otherwise). Lowering
marks such steps (`tnconv.lower.paths.find_folds`); the pattern is never materialised.

>>> from tnconv.spec import IndexPattern
>>> from tnconv.lower.schedule.site import Operand, Site
>>> p = IndexPattern(3, 2, 1, (1, 1), input_size=7, output_size=4)
>>> site = Site((Operand(0, ("n", "o", "k"), False), Operand(-1, ("k", "o", "i"), True, p)),
...             ("n", "i"), 1, {"n": 2, "o": 4, "k": 3, "i": 7})
>>> fold_rule(site).label()
'fold (scatter-add through K=3 S=2 D=1 P=(1,1) I=7 O=4 zeros)'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tnconv.lower.paths import is_fold
from tnconv.lower.schedule.model import Step
from tnconv.lower.schedule.site import Site
from tnconv.spec.index_pattern import IndexPattern

__all__ = ["Fold", "fold_rule"]


@dataclass(frozen=True)
class Fold(Step):
    """Scatter-add of the input through `pattern`: the input permuted to (rest…, o, k)
    by `permutation`, the result (rest…, i) permuted by `out_permutation`."""

    family = "scatter"
    pattern: IndexPattern
    permutation: tuple[int, ...]
    out_permutation: tuple[int, ...]

    def label(self) -> str:
        return f"fold (scatter-add through {self.pattern.describe()})"


def fold_rule(site: Site) -> Optional[Fold]:
    """A pattern (left symbolic: register -1) meeting data that holds its k and o legs,
    its i leg kept: one pass over the data."""
    for pattern, data in site.orders:
        if pattern.register >= 0 or data.constant:
            continue
        if not is_fold(pattern.legs, pattern.value, getattr(pattern.value, "shape", ()),
                       data.legs, site.out):
            continue
        k, o, i = pattern.legs
        rest = [leg for leg in data.legs if leg not in (k, o)]
        permutation = tuple(data.legs.index(leg) for leg in rest + [o, k])
        out_permutation = tuple((rest + [i]).index(leg) for leg in site.out)
        return Fold((data.register,), site.output, pattern.value, permutation, out_permutation)
    return None
