"""The portable file of an `ExportedEinsum`: one ``.npz`` with JSON metadata and the constants.

Members: ``metadata.npy`` (UTF-8 JSON as a uint8 array) and ``constant_<pos>.npy``
for each constant operand. Version 2 (written now) adds the ``"batch"`` record
of a batch-free export (null for a fixed-shape one); version 1 files still load.

Loading treats the file as hostile. It never unpickles, needs no torch, and
checks every size before it reads or allocates anything of that size, in this
order: a regular file (`tnconv.export.archive.open_regular`); the zip
directory's size; each member's name, encryption, method and stated size,
whose total must stay within ``max_bytes``; the metadata (at most
`MAX_METADATA_BYTES`, JSON nested at most `MAX_DEPTH` deep, then
`tnconv.export.validate.check_metadata`); the exact member list; the
constants' size as float64, also within ``max_bytes``; and each member's
``.npy`` header against the metadata before its data is read. Any defect,
and any error the zip or npy readers raise on a damaged file, becomes one
`TNConvError` naming the file and the reason.

>>> import os, tempfile, numpy as np, tnconv
>>> exported = tnconv.compile("unfold", tnconv.ConvSpec(1, 1, kernel_size=2, input_size=(3,))
...                           ).to_einsum()
>>> path = save(exported, os.path.join(tempfile.mkdtemp(), "unfold.npz"))
>>> load(path).evaluate(np.array([[[1.0, 2.0, 3.0]]])).tolist()
[[[1.0, 2.0], [2.0, 3.0]]]
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
import zlib
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

from tnconv.errors import TNConvError, path_argument, positive_int
from tnconv.export.archive import (MAX_BYTES, check_end_record, check_members, open_regular,
                                   read_npy)
from tnconv.export.exported import BatchLegs, ExportedEinsum, ExportedOperand
from tnconv.export.validate import MAX_DEPTH, check_metadata

__all__ = ["save", "load", "FORMAT", "VERSION", "VERSIONS", "MAX_METADATA_BYTES", "MAX_BYTES"]

FORMAT = "tnconv-einsum"
#: The version `save` writes; `load` reads every version in `VERSIONS`.
VERSION = 2
VERSIONS = (1, 2)
#: Largest metadata member (bytes of JSON).
MAX_METADATA_BYTES = 1 << 20
_NUMERIC_KINDS = "biuf"
#: What the zip and npy readers raise on a damaged file (beyond TNConvError).
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error,
                struct.error, OverflowError, NotImplementedError, RuntimeError, RecursionError)


def _metadata(exported: ExportedEinsum) -> dict[str, Any]:
    batch = exported.batch
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
        "batch": None if batch is None else {
            "symbols": batch.symbols, "arguments": [list(a) for a in batch.arguments],
            "result": list(batch.result), "scale_power": batch.scale_power},
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


def load(path: str | Path, *, max_bytes: int = MAX_BYTES) -> ExportedEinsum:
    """Read and validate a file written by `save` (see the module docstring for the checks)."""
    path = path_argument("load_einsum", path)
    positive_int("load_einsum", "max_bytes", max_bytes)
    where = f"load_einsum({str(path)!r})"
    try:
        with open_regular(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            if handle.read(4) != b"PK\x03\x04":  # a plain .npy or garbage: say so plainly
                raise TNConvError("not an .npz archive")
            check_end_record(handle, size)
            with zipfile.ZipFile(handle) as archive:
                return _read(archive, max_bytes)
    except TNConvError as err:
        raise TNConvError(f"{where}: {err}") from None
    except _READ_ERRORS as err:
        raise TNConvError(f"{where}: not a readable tnconv einsum file "
                          f"({type(err).__name__}: {err})") from None


def _read(archive: zipfile.ZipFile, max_bytes: int) -> ExportedEinsum:
    members = check_members(archive, max_bytes)
    if "metadata.npy" not in members:
        raise TNConvError("the archive has no 'metadata' member")
    metadata = _metadata_from(archive, members["metadata.npy"])
    check_metadata(metadata, FORMAT, VERSIONS)
    constants = {pos: tuple(op["shape"]) for pos, op in enumerate(metadata["operands"])
                 if op["argument"] is None}
    expected = {"metadata.npy"} | {f"constant_{pos}.npy" for pos in constants}
    if set(members) != expected:
        raise TNConvError(f"archive members {sorted(members)!r:.300} differ from the expected "
                          f"{sorted(expected)!r:.300}")
    converted = 8 * sum(prod(shape) for shape in constants.values())
    if converted > max_bytes:
        raise TNConvError(f"the constants take {converted} bytes as float64; allowed at most "
                          f"max_bytes={max_bytes}")
    values = {pos: _constant(archive, members[f"constant_{pos}.npy"], shape)
              for pos, shape in constants.items()}
    return _build(metadata, values)


def _expect(shape: tuple[int, ...], kinds: str, name: str):
    def check(stored: tuple[int, ...], dtype: np.dtype) -> None:
        if dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
            raise TNConvError(f"member {name!r} has dtype {dtype}; allowed kinds: {kinds!r}")
        if stored != shape:
            raise TNConvError(f"member {name!r} has shape {stored}, the metadata says {shape}")
    return check


def _constant(archive: zipfile.ZipFile, info: zipfile.ZipInfo,
              shape: tuple[int, ...]) -> np.ndarray:
    value = read_npy(archive, info, _expect(shape, _NUMERIC_KINDS, info.filename))
    value = value.astype(np.float64)
    value.setflags(write=False)
    return value


def _metadata_from(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict[str, Any]:
    def check(shape: tuple[int, ...], dtype: np.dtype) -> None:
        if len(shape) != 1 or shape[0] > MAX_METADATA_BYTES or dtype != np.uint8:
            raise TNConvError(f"metadata of shape {shape} and dtype {dtype}: allowed 1-d "
                              f"uint8, at most {MAX_METADATA_BYTES} bytes")

    raw = read_npy(archive, info, check)
    try:
        metadata = json.loads(raw.tobytes().decode("utf-8"))
    except RecursionError:
        raise TNConvError(f"metadata nests too deeply; allowed at most {MAX_DEPTH} "
                          "levels") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise TNConvError(f"metadata is not UTF-8 JSON ({err})") from None
    if not isinstance(metadata, dict):
        raise TNConvError("metadata is not a JSON object")
    return metadata


def _build(metadata: dict[str, Any], values: dict[int, np.ndarray]) -> ExportedEinsum:
    terms = metadata["equation"].split("->")[0].split(",")
    operands = [ExportedOperand(op["name"], op["role"], term, tuple(op["shape"]),
                                op["argument"], values.get(pos))
                for pos, (op, term) in enumerate(zip(metadata["operands"], terms))]
    batch = metadata.get("batch")
    return ExportedEinsum(
        equation=metadata["equation"], alphabet=metadata["alphabet"], operands=tuple(operands),
        arguments=tuple(a["role"] for a in metadata["arguments"]),
        argument_shapes=tuple(tuple(a["shape"]) for a in metadata["arguments"]),
        output_shape=tuple(metadata["output_shape"]),
        result_shape=tuple(metadata["result_shape"]),
        path=tuple(tuple(step) for step in metadata["path"]),
        index_names=tuple(tuple(pair) for pair in metadata["index_names"]),
        operation=metadata["operation"], spec=metadata["spec"],
        batch=None if batch is None else BatchLegs(
            symbols=batch["symbols"], arguments=tuple(tuple(a) for a in batch["arguments"]),
            result=tuple(batch["result"]), scale_power=batch["scale_power"]))
