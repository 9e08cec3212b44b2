"""Export: a compiled operation as a framework-free einsum, saved to and loaded from one file
(no torch import: `load_einsum` works where torch is absent).

>>> from tnconv.export import load_einsum, ExportedEinsum
>>> callable(load_einsum)
True
"""

from tnconv.export.exported import (BACKENDS, ExportedEinsum, ExportedOperand, export_program,
                                    from_compiled, load_einsum)

__all__ = ["BACKENDS", "ExportedEinsum", "ExportedOperand", "export_program", "from_compiled",
           "load_einsum"]
