"""tnconv: convolutions compiled into tensor networks.

>>> import torch, tnconv
>>> x, w = torch.rand(1, 2, 7), torch.rand(3, 2, 3)
>>> tnconv.conv(x, w, padding=1).shape
torch.Size([1, 3, 7])
"""

from .cache import cache_info, clear_caches, set_cache_size
from .compiler import Compiled, compile
from .errors import TNConvError
from .index_pattern import IndexPattern
from .lower import EinsumProgram
from .network import Network, Tensor
from .nn.functional import conv, unfold
from .spec import ConvSpec

__version__ = "0.1.0"

__all__ = [
    "Compiled", "ConvSpec", "EinsumProgram", "IndexPattern", "Network", "TNConvError", "Tensor",
    "cache_info", "clear_caches", "compile", "conv", "set_cache_size", "unfold",
]
