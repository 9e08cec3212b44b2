"""Export: a compiled operation as a framework-free einsum, saved to and loaded from one file
(no torch import: `load_einsum` works where torch is absent).

`exported` holds the einsum and its evaluation, `batch_free` the export whose
batch leg stays open, `file` the portable format, `archive` and `validate`
the defensive reading of an untrusted file.

>>> from tnconv.export import load_einsum, ExportedEinsum
>>> callable(load_einsum)
True
"""

from tnconv.export.exported import (BACKENDS, BatchLegs, ExportedEinsum, ExportedOperand,
                                    export_program, from_compiled, load_einsum)

__all__ = ["BACKENDS", "BatchLegs", "ExportedEinsum", "ExportedOperand", "export_program",
           "from_compiled", "load_einsum"]
