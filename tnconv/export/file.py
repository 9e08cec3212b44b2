"""The portable file of an `ExportedEinsum`: one ``.npz`` with JSON metadata and the constants.

Members: ``metadata`` (UTF-8 JSON as a uint8 array) and ``constant_<pos>`` for
each constant operand. Loading never unpickles (``allow_pickle=False``), needs
no torch, and validates everything before it allocates: the equation's syntax,
operands against terms, consistent index sizes, numeric dtypes, every array
header against the metadata, and sizes (operands, intermediates along the
path, the result) below `MAX_ELEMENTS`. Any defect raises `TNConvError`.

>>> import os, tempfile, numpy as np, tnconv
>>> exported = tnconv.compile("unfold", tnconv.ConvSpec(1, 1, kernel_size=2, input_size=(3,))
...                           ).to_einsum()
>>> path = save(exported, os.path.join(tempfile.mkdtemp(), "unfold.npz"))
>>> load(path).evaluate(np.array([[[1.0, 2.0, 3.0]]])).tolist()
[[[1.0, 2.0], [2.0, 3.0]]]
"""

from __future__ import annotations

import json
import zipfile
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

from tnconv.export.validate import MAX_ELEMENTS, check_metadata
from tnconv.errors import TNConvError, path_argument
from tnconv.export.exported import ExportedEinsum, ExportedOperand

__all__ = ["save", "load", "FORMAT", "VERSION", "MAX_METADATA_BYTES"]

FORMAT = "tnconv-einsum"
VERSION = 1
MAX_METADATA_BYTES = 1 << 20
_NUMERIC_KINDS = "biuf"


def _metadata(exported: ExportedEinsum) -> dict[str, Any]:
    return {
        "format": FORMAT, "version": VERSION,
        "operation": exported.operation, "spec": exported.spec,
        "equation": exported.equation, "alphabet": exported.alphabet,
        "arguments": [{"role": r, "shape": list(s)}
                      for r, s in zip(exported.arguments, exported.argument_shapes)],
        "operands": [{"name": op.name, "role": op.role, "shape": list(op.shape),
                      "argument": op.argument} for op in exported.operands],
        "output_shape": list(exported.output_shape),
        "result_shape": list(exported.result_shape),
        "path": [list(step) for step in exported.path],
        "index_names": [list(pair) for pair in exported.index_names],
    }


def save(exported: ExportedEinsum, path: str | Path) -> Path:
    """Write `exported` to `path` (exactly that name) with `numpy.savez`."""
    path = path_argument("ExportedEinsum.save", path)
    text = json.dumps(_metadata(exported), ensure_ascii=False, sort_keys=True)
    arrays = {f"constant_{pos}": op.value for pos, op in enumerate(exported.operands)
              if op.argument is None}
    try:
        with open(path, "wb") as handle:
            np.savez(handle, metadata=np.frombuffer(text.encode("utf-8"), dtype=np.uint8),
                     **arrays)
    except OSError as err:
        raise TNConvError(f"ExportedEinsum.save: cannot write {str(path)!r}: {err}") from None
    return path


def load(path: str | Path) -> ExportedEinsum:
    """Read and validate a file written by `save`."""
    path = path_argument("load_einsum", path)
    where = f"load_einsum({str(path)!r})"
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != b"PK\x03\x04":  # checked first: np.load reads .npy eagerly
                raise TNConvError("not an .npz archive")
        with np.load(path, allow_pickle=False) as npz:
            return _read(npz)
    except TNConvError as err:
        raise TNConvError(f"{where}: {err}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise TNConvError(f"{where}: not a readable tnconv einsum file "
                          f"({type(err).__name__}: {err})") from None


def _read(npz: Any) -> ExportedEinsum:
    members = set(npz.zip.namelist())
    metadata = _metadata_from(npz)
    check_metadata(metadata, FORMAT, VERSION)
    constants = {pos: op for pos, op in enumerate(metadata["operands"])
                 if op["argument"] is None}
    expected = {"metadata.npy"} | {f"constant_{pos}.npy" for pos in constants}
    if members != expected:
        raise TNConvError(f"archive members {sorted(members)} differ from the expected "
                          f"{sorted(expected)}")
    total = sum(prod(op["shape"]) for op in constants.values())
    if total > MAX_ELEMENTS:
        raise TNConvError(f"constants hold {total} elements in all, more than {MAX_ELEMENTS}")
    values = {pos: _array(npz, f"constant_{pos}", tuple(op["shape"]))
              for pos, op in constants.items()}
    return _build(metadata, values)


def _header(npz: Any, name: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data size of member `name`, read from its header only."""
    info = npz.zip.getinfo(name + ".npy")
    with npz.zip.open(info) as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise TNConvError(f"member {name!r} has unsupported .npy version {version}")
        available = info.file_size - handle.tell()
    return tuple(shape), dtype, available


def _array(npz: Any, name: str, shape: tuple[int, ...], kinds: str = _NUMERIC_KINDS) -> np.ndarray:
    stored_shape, dtype, available = _header(npz, name)
    if dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
        raise TNConvError(f"member {name!r} has dtype {dtype}; allowed kinds: {kinds!r}")
    if stored_shape != shape:
        raise TNConvError(f"member {name!r} has shape {stored_shape}, the metadata says {shape}")
    if prod(shape) * dtype.itemsize > available:
        raise TNConvError(f"member {name!r} is shorter than its shape {shape} needs")
    return npz[name]


def _metadata_from(npz: Any) -> dict[str, Any]:
    if "metadata.npy" not in npz.zip.namelist():
        raise TNConvError("the archive has no 'metadata' member")
    size = _header(npz, "metadata")[0]
    if len(size) != 1 or size[0] > MAX_METADATA_BYTES:
        raise TNConvError(f"metadata of shape {size}: allowed 1-d, at most "
                          f"{MAX_METADATA_BYTES} bytes")
    raw = _array(npz, "metadata", size, kinds="u")
    if raw.dtype != np.uint8:
        raise TNConvError(f"metadata has dtype {raw.dtype}; allowed: uint8")
    try:
        metadata = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise TNConvError(f"metadata is not UTF-8 JSON ({err})") from None
    if not isinstance(metadata, dict):
        raise TNConvError("metadata is not a JSON object")
    return metadata


def _build(metadata: dict[str, Any], values: dict[int, np.ndarray]) -> ExportedEinsum:
    terms = metadata["equation"].split("->")[0].split(",")
    operands = []
    for pos, (op, term) in enumerate(zip(metadata["operands"], terms)):
        value = values.get(pos)
        if value is not None:
            value = value.astype(np.float64)
            value.setflags(write=False)
        operands.append(ExportedOperand(op["name"], op["role"], term, tuple(op["shape"]),
                                        op["argument"], value))
    return ExportedEinsum(
        equation=metadata["equation"], alphabet=metadata["alphabet"], operands=tuple(operands),
        arguments=tuple(a["role"] for a in metadata["arguments"]),
        argument_shapes=tuple(tuple(a["shape"]) for a in metadata["arguments"]),
        output_shape=tuple(metadata["output_shape"]),
        result_shape=tuple(metadata["result_shape"]),
        path=tuple(tuple(step) for step in metadata["path"]),
        index_names=tuple(tuple(pair) for pair in metadata["index_names"]),
        operation=metadata["operation"], spec=metadata["spec"])
