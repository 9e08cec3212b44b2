"""The rewrite rules, grouped by theme; each is `rule(net) -> Network | None`.

`tnconv.rewrite.driver` combines them into named rule sets and runs them.

>>> from tnconv.spec import ConvSpec
>>> from tnconv.ops.convolution import forward_network
>>> identity_pruning(forward_network(ConvSpec(2, 3, 1, input_size=(5,)), 1)).tensors[-1].name
'W'
"""

from tnconv.rewrite.rules.cleanup import identity_pruning, merge_parallel_legs, squeeze_size_one
from tnconv.rewrite.rules.connectivity import (full_extent_kernel, non_overlapping_patches,
                                               one_by_one_kernel)
from tnconv.rewrite.rules.fusion import FusedConstant, constant_fusion
from tnconv.rewrite.rules.phases import stride_phases
from tnconv.rewrite.rules.scatter import scatter_to_gather
from tnconv.rewrite.rules.selection import selection_lowering
from tnconv.rewrite.rules.slicing import SlicedConstant, slice_index

__all__ = [
    "FusedConstant", "SlicedConstant", "constant_fusion", "full_extent_kernel",
    "identity_pruning", "merge_parallel_legs", "non_overlapping_patches", "one_by_one_kernel",
    "scatter_to_gather", "selection_lowering", "slice_index", "squeeze_size_one",
    "stride_phases",
]
