"""Loading exported einsum files: malformed and hostile files raise TNConvError, never crash."""

from __future__ import annotations

import copy
import io
import json
import zipfile

import numpy as np
import pytest

import tnconv
from tnconv.errors import TNConvError

SPEC = tnconv.ConvSpec(2, 3, kernel_size=3, input_size=(6, 5), padding=1)


@pytest.fixture(scope="module")
def valid():
    """Metadata and members of a valid fixed-shape forward export (constants at operand
    positions 2, 3)."""
    exported = tnconv.compile("forward", SPEC, strategy="tn").to_einsum(batch_size=2)
    path = exported.save(_tmp_file())
    with np.load(path) as npz:
        members = {name: npz[name] for name in npz.files}
    metadata = json.loads(members.pop("metadata").tobytes().decode())
    return metadata, members


_COUNTER = iter(range(10 ** 6))


def _tmp_file():
    import tempfile

    return f"{tempfile.mkdtemp()}/e{next(_COUNTER)}.npz"


def _write(metadata, members, path):
    text = json.dumps(metadata).encode()
    np.savez(path, metadata=np.frombuffer(text, dtype=np.uint8), **members)
    return path


def _load_fails(path, match=None):
    with pytest.raises(TNConvError, match=match) as info:
        tnconv.load_einsum(path)
    assert info.value.__cause__ is None and "load_einsum" in str(info.value)


def test_valid_file_loads(valid, tmp_path):
    metadata, members = valid
    loaded = tnconv.load_einsum(_write(metadata, members, tmp_path / "ok.npz"))
    x, w = np.ones((2, 2, 6, 5)), np.ones((3, 2, 3, 3))
    assert loaded.evaluate(x, w).shape == (2, 3, 6, 5)
    assert metadata["version"] == 2 and metadata["batch"] is None and not loaded.batch_free


def test_version_1_files_still_load(valid, tmp_path):
    metadata, members = copy.deepcopy(valid)
    metadata["version"] = 1
    del metadata["batch"]
    loaded = tnconv.load_einsum(_write(metadata, members, tmp_path / "v1.npz"))
    x, w = np.arange(120.0).reshape(2, 2, 6, 5), np.arange(54.0).reshape(3, 2, 3, 3)
    expected = tnconv.load_einsum(_write(*valid, tmp_path / "v2.npz")).evaluate(x, w)
    assert loaded.batch is None
    np.testing.assert_array_equal(loaded.evaluate(x, w), expected)


def _set(key, value):
    def change(meta):
        meta[key] = value
    return change


def _operand(pos, key, value):
    def change(meta):
        meta["operands"][pos][key] = value
    return change


def _equation(text):
    return _set("equation", text)


METADATA_DEFECTS = {
    "missing key": lambda m: m.pop("path"),
    "extra key": _set("extra", 1),
    "format": _set("format", "other"),
    "version": _set("version", 3),
    "version 1 with a batch record": _set("version", 1),
    "version not int": _set("version", "2"),
    "alphabet": _set("alphabet", "klingon"),
    "two arrows": _equation("abcef,bdcgh,gie->hjf->abdij"),
    "no arrow": _equation("abcef,bdcgh,gie,hjf"),
    "term count": _equation("abcef,bdcgh,gie->abdie"),
    "unicode in ascii": _equation("abcef,bdcgh,gie,hjé->abdij"),
    "repeated symbol": _equation("abcef,bdcgh,gie,hjj->abdij"),
    "output not in inputs": _equation("abcef,bdcgh,gie,hjf->abdiz"),
    "ellipsis": _equation("abcef,bdcgh,gie,...->abdij"),
    "equation not text": _set("equation", ["abc"]),
    "term vs shape": _operand(2, "shape", [3, 6]),
    "inconsistent sizes": _operand(2, "shape", [3, 6, 4]),
    "zero size": _operand(0, "shape", [0, 1, 2, 6, 5]),
    "float size": _operand(0, "shape", [2.0, 1, 2, 6, 5]),
    "bool size": _operand(0, "shape", [True, 1, 2, 6, 5]),
    "string size": _operand(0, "shape", "abc"),
    "argument out of range": _operand(0, "argument", 7),
    "argument negative": _operand(0, "argument", -1),
    "argument role mismatch": _operand(0, "role", "weight"),
    "constant with argument": _operand(2, "argument", 0),
    "data without argument": _operand(0, "argument", None),
    "argument shape mismatch": lambda m: m["arguments"][0].update(shape=[2, 2, 6, 6]),
    "repeated roles": lambda m: m["arguments"].append(dict(m["arguments"][0])),
    "no arguments": _set("arguments", []),
    "operands not list": _set("operands", {"a": 1}),
    "output shape": _set("output_shape", [2, 1, 3, 6, 4]),
    "result shape": _set("result_shape", [2, 3, 6, 6]),
    "path position": _set("path", [[0, 9], [0, 2], [0, 1]]),
    "path repeated": _set("path", [[0, 0], [0, 2], [0, 1]]),
    "path leaves two": _set("path", [[0, 2], [0, 2]]),
    "path empty step": _set("path", [[], [0, 2], [0, 1]]),
    "path not list": _set("path", "greedy"),
    "path too long": _set("path", [[0]] * 100),
    "index names": _set("index_names", [["a"]]),
    "huge operand": lambda m: (m["arguments"][1].update(shape=[2 ** 20, 2 ** 12]),
                               m["operands"][1].update(shape=[1, 2 ** 20, 2 ** 12, 1, 1]),
                               m.update(equation="abcef,bdcgh,gie,hjf->abdij")),
    "huge intermediate": lambda m: m.update(  # operands of 2**16 elements, an a×b of 2**32
        equation="ac,bc,ad,bd->", output_shape=[], result_shape=[], path=[[0, 1], [0, 1, 2]],
        arguments=[{"role": "input", "shape": [2 ** 16, 1]},
                   {"role": "weight", "shape": [2 ** 16, 1]}],
        operands=[{"name": f"T{i}", "role": ("input", "weight")[i % 2], "shape": [2 ** 16, 1],
                   "argument": i % 2} for i in range(4)]),
}


@pytest.mark.parametrize("defect", sorted(METADATA_DEFECTS))
def test_metadata_defects(valid, tmp_path, defect):
    metadata, members = copy.deepcopy(valid)
    METADATA_DEFECTS[defect](metadata)
    if defect == "huge intermediate":
        members = {}
    _load_fails(_write(metadata, members, tmp_path / "bad.npz"))


MEMBER_DEFECTS = {
    "missing constant": lambda m: m.pop("constant_3"),
    "extra member": lambda m: m.update(extra=np.zeros(2)),
    "wrong shape": lambda m: m.update(constant_2=np.zeros((3, 6, 5))),
    "string dtype": lambda m: m.update(constant_2=np.full((3, 6, 6), "x")),
    "complex dtype": lambda m: m.update(constant_2=np.zeros((3, 6, 6), complex)),
    "object dtype": lambda m: m.update(constant_2=np.empty((3, 6, 6), object)),
    "structured dtype": lambda m: m.update(constant_2=np.zeros((3, 6, 6), "f8,f8")),
}


@pytest.mark.parametrize("defect", sorted(MEMBER_DEFECTS))
def test_member_defects(valid, tmp_path, defect):
    metadata, members = copy.deepcopy(valid)
    MEMBER_DEFECTS[defect](members)
    _load_fails(_write(metadata, members, tmp_path / "bad.npz"))


@pytest.fixture(scope="module")
def batch_free():
    """Metadata and members of a valid batch-free KFC export (a mean: scale power -1)."""
    exported = tnconv.compile("kfc", SPEC, strategy="tn").to_einsum()
    path = exported.save(_tmp_file())
    with np.load(path) as npz:
        members = {name: npz[name] for name in npz.files}
    metadata = json.loads(members.pop("metadata").tobytes().decode())
    return metadata, members


def _batch(key, value):
    def change(meta):
        meta["batch"][key] = value
    return change


BATCH_DEFECTS = {
    "not an object": _set("batch", [1]),
    "missing key": lambda m: m["batch"].pop("result"),
    "unknown symbol": _batch("symbols", "Z"),
    "empty symbols": _batch("symbols", ""),
    "repeated symbol": lambda m: m["batch"].update(symbols=2 * m["batch"]["symbols"]),
    "symbols not text": _batch("symbols", 1),
    "argument count": _batch("arguments", []),
    "axis out of range": _batch("arguments", [[7]]),
    "axis repeated": _batch("arguments", [[0, 0]]),
    "no argument carries it": _batch("arguments", [[]]),
    "operand carries it twice": _batch("arguments", [[0, 1]]),
    "result axes": _batch("result", [0]),
    "power too large": _batch("scale_power", 99),
    "power not int": _batch("scale_power", -1.0),
    "power bool": _batch("scale_power", True),
    "constant carries it": lambda m: m["batch"].update(symbols=m["batch"]["symbols"] + next(
        s for s in m["equation"].split("->")[0].split(",")[-1]
        if s not in m["batch"]["symbols"])),
}


def test_batch_free_file_loads(batch_free, tmp_path):
    metadata, members = batch_free
    assert metadata["version"] == 2 and metadata["batch"]["scale_power"] == -1
    loaded = tnconv.load_einsum(_write(metadata, members, tmp_path / "ok.npz"))
    assert loaded.batch_free and loaded.evaluate(np.ones((5, 2, 6, 5))).shape == (1, 18, 18)


@pytest.mark.parametrize("defect", sorted(BATCH_DEFECTS))
def test_batch_record_defects(batch_free, tmp_path, defect):
    metadata, members = copy.deepcopy(batch_free)
    BATCH_DEFECTS[defect](metadata)
    _load_fails(_write(metadata, members, tmp_path / "bad.npz"), match="batch|constant")


def _zip(path, entries):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_truncated_member_with_a_large_header(valid, tmp_path):
    metadata, members = copy.deepcopy(valid)
    metadata["operands"][2]["shape"] = [3, 6, 6]
    big = _npy(np.zeros((3, 6, 6)))
    entries = {"metadata.npy": _npy(np.frombuffer(json.dumps(metadata).encode(), np.uint8)),
               "constant_2.npy": big[:200], "constant_3.npy": _npy(members["constant_3"])}
    _load_fails(_zip(tmp_path / "bad.npz", entries), match="shorter")


@pytest.mark.parametrize("content", [
    b"", b"not a file at all", b"PK\x03\x04garbage", _npy(np.zeros((2, 2))),
    b"\x80\x04\x95" + b"\x00" * 20,  # a pickle stream
])
def test_not_an_archive(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    _load_fails(path)


@pytest.mark.parametrize("metadata", [
    b"not json", b"[1, 2]", b"\xff\xfe", b"[" * 100_000, b"{}",
])
def test_bad_metadata_bytes(tmp_path, metadata):
    entries = {"metadata.npy": _npy(np.frombuffer(metadata, np.uint8))}
    _load_fails(_zip(tmp_path / "bad.npz", entries))


def test_metadata_dtype_and_size(tmp_path):
    _load_fails(_zip(tmp_path / "a.npz", {"metadata.npy": _npy(np.zeros(4, np.float32))}))
    _load_fails(_zip(tmp_path / "b.npz", {"metadata.npy": _npy(np.zeros((2, 2), np.uint8))}))
    _load_fails(_zip(tmp_path / "c.npz", {"metadata.npy": _npy(np.zeros(2 ** 21, np.uint8))}))
    _load_fails(_zip(tmp_path / "d.npz", {"other.npy": _npy(np.zeros(2))}))


def test_missing_file(tmp_path):
    _load_fails(tmp_path / "nothing.npz")
    _load_fails(tmp_path)
