"""The rewrite rules, grouped by theme; each is `rule(net) -> Network | None`.

`tnconv.rewrite.driver` combines them into named rule sets and runs them.

>>> sorted(RULES)[:3]
['constant_fusion', 'downsampling', 'full_extent_kernel']
"""

from tnconv.rewrite.rules.cleanup import identity_pruning, merge_parallel_legs, squeeze_size_one
from tnconv.rewrite.rules.connectivity import (downsampling, full_extent_kernel, non_overlapping_patches,
                           one_by_one_kernel)
from tnconv.rewrite.rules.fusion import FusedConstant, constant_fusion
from tnconv.rewrite.rules.scatter import scatter_to_gather
from tnconv.rewrite.rules.selection import selection_lowering
from tnconv.rewrite.rules.slicing import SlicedConstant, slice_index

__all__ = [
    "RULES", "FusedConstant", "SlicedConstant", "constant_fusion", "downsampling",
    "full_extent_kernel", "identity_pruning", "merge_parallel_legs", "non_overlapping_patches",
    "one_by_one_kernel", "scatter_to_gather", "selection_lowering", "slice_index",
    "squeeze_size_one",
]

#: Every rule by name.
RULES = {rule.__name__: rule for rule in (
    identity_pruning, squeeze_size_one, merge_parallel_legs, non_overlapping_patches,
    downsampling, full_extent_kernel, one_by_one_kernel, constant_fusion, scatter_to_gather,
    selection_lowering)}
