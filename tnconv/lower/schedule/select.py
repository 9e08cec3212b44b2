"""The select family: an index pattern contracted over one of its legs is a selection.

Π[k, o, i] is one-hot: contracted with data over its input leg i, it picks input pixel
src[k, o] (or a padding zero) for every (k, o); with zero padding, contracted over k it
picks the one tap with o·S + k·D − P = i for every (o, i), and over o the one output
position. A `PatternGather` runs such a step as one `index_select` through a table of
those choices (a zero slot for "none"), where an einsum with the dense pattern would
multiply every element by a 0 or a 1: K·O·I multiply-adds where K·O reads do, and a
non-finite value outside a window turning 0·inf into NaN in the result. Where several
values are chosen for one place (reflect or replicate padding read one pixel twice),
they are summed by an `index_add_` instead: still no multiplication. The rewrite leaves
patterns dense where its cost model prefers, and this step keeps them exact.

>>> from tnconv.spec import IndexPattern
>>> from tnconv.lower.schedule.site import Operand, Site
>>> p = IndexPattern(3, 1, 1, (1, 1), input_size=4, output_size=4)
>>> site = Site((Operand(0, ("n", "i"), False), Operand(1, ("k", "o", "i"), True, p)),
...             ("n", "k", "o"), 2, {"n": 2, "i": 4, "k": 3, "o": 4})
>>> step = pattern_gather_rule(site)
>>> step.label()
'select through K=3 S=1 D=1 P=(1,1) I=4 O=4 zeros over i'
>>> step.table()[:, 0].tolist()          # taps of output pixel 0: the padding, then 0, 1
[-1, 0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from tnconv.lower.schedule.model import Step
from tnconv.lower.schedule.site import Site
from tnconv.spec.index_pattern import IndexPattern

__all__ = ["PatternGather", "pattern_gather_rule"]


@dataclass(frozen=True)
class PatternGather(Step):
    """out = the input's leg `dim` (the pattern's leg `summed`, 0: k, 1: o, 2: i) read
    through the pattern's table of choices for its two other legs (`table`), those two
    legs placed at `dim` in the pattern's order, then permuted by `permutation`."""

    family = "select"
    pattern: IndexPattern
    summed: int
    dim: int
    permutation: tuple[int, ...]

    @property
    def injective(self) -> bool:
        """Whether each place selects at most one value (one `index_select`), else a sum."""
        return _injective(self.pattern, self.summed)

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (summed index, flat place among the kept legs) that the pattern links."""
        src = self.pattern.source_indices()
        k, o = np.nonzero(src >= 0)
        i = src[k, o]
        legs = (k, o, i)
        kept = [n for n in range(3) if n != self.summed]
        sizes = self.pattern.shape
        return legs[self.summed], legs[kept[0]] * sizes[kept[1]] + legs[kept[1]]

    def table(self) -> np.ndarray:
        """[the two kept legs of the pattern, in its order] -> the summed leg's index, -1
        where nothing is selected (a padding zero)."""
        src = self.pattern.source_indices()  # [K, O]: input pixel or -1
        if self.summed == 2:
            return src
        k, o = np.nonzero(src >= 0)
        i = src[k, o]
        if self.summed == 0:  # [O, I] -> k
            table = np.full((self.pattern.output_size, self.pattern.input_size), -1)
            table[o, i] = k
        else:  # [K, I] -> o
            table = np.full((self.pattern.kernel_size, self.pattern.input_size), -1)
            table[k, i] = o
        return table

    def label(self) -> str:
        leg, how = "koi"[self.summed], "select" if self.injective else "select and sum"
        return f"{how} through {self.pattern.describe()} over {leg}"


def _injective(pattern: IndexPattern, summed: int) -> bool:
    """Whether each choice of the two kept legs selects at most one value of the summed one
    (always over i; over k or o where no two taps or positions read the same pixel)."""
    if summed == 2:
        return True
    src = pattern.source_indices()
    kept_axis = 1 if summed == 0 else 0  # o when k is summed, k when o is summed
    for line in np.moveaxis(src, kept_axis, 0):
        read = line[line >= 0]
        if len(np.unique(read)) != len(read):
            return False
    return True


def pattern_gather_rule(site: Site) -> Optional[PatternGather]:
    """An index pattern meeting data over exactly one of its legs (on the data, summed here),
    its two other legs kept and on no other operand: one selection."""
    for pattern, data in site.orders:
        if (not isinstance(pattern.value, IndexPattern) or pattern.register < 0
                or data.constant or len(pattern.legs) != 3):
            continue
        summed = [n for n, leg in enumerate(pattern.legs) if leg not in site.out]
        if len(summed) != 1 or pattern.legs[summed[0]] not in data.legs:
            continue
        kept = tuple(leg for n, leg in enumerate(pattern.legs) if n != summed[0])
        if any(leg in data.legs for leg in kept):
            continue
        dim = data.legs.index(pattern.legs[summed[0]])
        legs = data.legs[:dim] + kept + data.legs[dim + 1:]
        if sorted(legs) != sorted(site.out):
            continue
        return PatternGather((data.register,), site.output, pattern.value, summed[0], dim,
                             tuple(legs.index(leg) for leg in site.out))
    return None
