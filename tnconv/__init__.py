"""tnconv: convolutions compiled into tensor networks.

>>> import torch, tnconv
>>> x, w = torch.rand(1, 2, 7), torch.rand(3, 2, 3)
>>> tnconv.conv(x, w, padding=1).shape
torch.Size([1, 3, 7])
"""

from importlib import import_module
from typing import Any

from tnconv.cache import cache_info, clear_caches, set_cache_size
from tnconv.errors import TNConvError
from tnconv.limits import set_size_limit
from tnconv.export.exported import ExportedEinsum, load_einsum
from tnconv.spec.index_pattern import IndexPattern
from tnconv.lower.program import EinsumProgram
from tnconv.ir.network import Network, Tensor
from tnconv.spec.conv_spec import ConvSpec

__version__ = "0.1.0"

__all__ = [
    "Compiled", "ConvSpec", "EinsumProgram", "ExportedEinsum", "IndexPattern", "Network",
    "TNConvError", "Tensor", "cache_info", "clear_caches", "compile", "conv", "load_einsum",
    "set_cache_size", "set_size_limit", "unfold",
]
__all__ += [
    "conv_input_jvp", "conv_input_vjp", "conv_transpose", "conv_transpose_input_vjp",
    "conv_transpose_weight_vjp", "conv_weight_jvp", "conv_weight_vjp", "fold", "unfold_transpose",
]
__all__ += ["averaged_patches", "kfac_reduce", "kfc", "patches"]
__all__ += ["Sample"]

# Names whose modules import torch are loaded on first use, so that `import tnconv`
# (e.g. to call `load_einsum`) works where torch is not installed.
_LAZY = {"Compiled": "compiler", "compile": "compiler", "Sample": "sampling",
         "conv": "nn.functional", "unfold": "nn.functional", "nn": "nn",
         "distributed": "distributed", "curvature": "curvature"}
_LAZY.update({name: "nn.derivatives" for name in (
    "conv_input_jvp", "conv_input_vjp", "conv_weight_jvp", "conv_weight_vjp")})
_LAZY.update({name: "nn.transposed" for name in (
    "conv_transpose", "conv_transpose_input_vjp", "conv_transpose_weight_vjp", "fold",
    "unfold_transpose")})
_LAZY.update({name: "nn.kfac" for name in ("averaged_patches", "kfac_reduce", "kfc", "patches")})


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'tnconv' has no attribute {name!r}")
    module = import_module(f".{_LAZY[name]}", __name__)
    value = module if name in ("nn", "distributed", "curvature") else getattr(module, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
