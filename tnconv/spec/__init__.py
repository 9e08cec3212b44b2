"""Stage 1, the specification: `ConvSpec` and the symbolic `IndexPattern` per spatial dimension.

Pure Python (no torch import); `tnconv.spec.modules` reads torch modules and is
imported only by the torch-facing front-end.

>>> from tnconv.spec import ConvSpec
>>> ConvSpec(3, 8, kernel_size=3, input_size=(32, 32), padding=1).patterns()[0].describe()
'K=3 S=1 D=1 P=(1,1) I=32 O=32 zeros'
"""

from tnconv.spec.conv_spec import MAX_SIZE, ConvSpec, error_context
from tnconv.spec.index_pattern import PADDING_MODES, IndexPattern

__all__ = ["ConvSpec", "IndexPattern", "MAX_SIZE", "PADDING_MODES", "error_context"]
