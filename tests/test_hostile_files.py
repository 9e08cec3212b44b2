"""Hostile einsum files: each class of attack gets a `TNConvError` naming the file and the reason,
with bounded memory (tracemalloc's peak) and bounded work (bytes read from the file).

The files are crafted byte by byte (`_raw_zip`) where zipfile would refuse to
write them: encrypted flags, unsupported methods, directories that lie about
sizes, names with paths. Time is not asserted (no wall-clock limits in unit
tests); the work a load does is: the bytes it reads bound the bytes it can
decompress (deflate expands at most ~1032-fold), and validation of a 50,000-
operand chain finishes only because it is linear.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import threading
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

import tnconv
from tnconv.errors import TNConvError
from tnconv.export import file as einsum_file
from tnconv.export.archive import MAX_DIRECTORY_BYTES, MAX_MEMBERS
from tnconv.export.validate import MAX_DEPTH, MAX_OPERANDS, check_path

MiB = 1 << 20
#: Peak traced memory allowed while refusing a small hostile file: far below what any of
#: the attacks would cost (hundreds of MiB to GiB), far above the metadata they hold.
REFUSAL_MEMORY = 16 * MiB


# ------------------------------------------------------------------ crafting
def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
        "shape": shape})
    return buffer.getvalue()


def _metadata(meta: dict) -> bytes:
    return _npy(np.frombuffer(json.dumps(meta, ensure_ascii=False).encode(), np.uint8))


def _member(name, plain: bytes, *, method=0, flags=0, data=None, file_size=None,
            zip64_size=None) -> dict:
    """One zip entry: `plain` is what it decompresses to, `data` what is stored (default plain)."""
    data = plain if data is None else data
    return dict(name=name.encode() if isinstance(name, str) else name, data=data, method=method,
                flags=flags, crc=zlib.crc32(plain), file_size=len(plain) if file_size is None
                else file_size, zip64_size=zip64_size)


def _raw_zip(members: list[dict], *, directory_size=None, entries=None) -> bytes:
    """A zip archive written field by field, so every field can lie."""
    body, central = b"", b""
    for m in members:
        size = 0xFFFFFFFF if m["zip64_size"] is not None else m["file_size"]
        extra = b"" if m["zip64_size"] is None else struct.pack("<HHQ", 1, 8, m["zip64_size"])
        fields = (m["flags"], m["method"], 0, 0x21, m["crc"], len(m["data"]), size)
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 45, *fields, len(m["name"]),
                               len(extra), 0, 0, 0, 0, len(body)) + m["name"] + extra
        body += struct.pack("<4s5H3L2H", b"PK\x03\x04", 45, *fields[:-1],
                            min(m["file_size"], 0xFFFFFFFF), len(m["name"]), 0) + m["name"]
        body += m["data"]
    count = len(members) if entries is None else entries
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count,
                      len(central) if directory_size is None else directory_size, len(body), 0)
    return body + central + end


def _dot_metadata(n: int, *, operands: int = 2) -> dict:
    """`a,a->` of an input of n elements with a constant of n elements (a dot product)."""
    return {"format": "tnconv-einsum", "version": 2, "operation": "dot", "spec": "",
            "alphabet": "ascii", "equation": ",".join(["a"] * operands) + "->",
            "arguments": [{"role": "input", "shape": [n]}],
            "operands": [{"name": "X", "role": "input", "shape": [n], "argument": 0}]
            + [{"name": f"c{k}", "role": "constant", "shape": [n], "argument": None}
               for k in range(1, operands)],
            "output_shape": [], "result_shape": [], "path": [list(range(operands))],
            "index_names": [], "batch": None}


def _dot_file(constant: np.ndarray, **member) -> bytes:
    return _raw_zip([_member("metadata.npy", _metadata(_dot_metadata(constant.size))),
                     _member("constant_1.npy", _npy(constant), **member)])


def _deflated(plain: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(plain) + packer.flush()


# ------------------------------------------------------------------ measuring
class _CountingFile:
    """A file handle that counts the bytes read through it."""

    def __init__(self, handle):
        self.handle, self.bytes_read = handle, 0

    def read(self, count=-1):
        data = self.handle.read(count)
        self.bytes_read += len(data)
        return data

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


@pytest.fixture
def load(monkeypatch, tmp_path):
    """load(content, match, **kwargs): write `content`, load it expecting a TNConvError that
    matches; returns (peak traced bytes, bytes read from the file)."""
    opened = []

    def counting_open(path):
        opened.append(_CountingFile(original(path)))
        return opened[-1]

    original = einsum_file.open_regular
    monkeypatch.setattr(einsum_file, "open_regular", counting_open)

    def run(content: bytes, match: str, **kwargs):
        path = tmp_path / f"hostile{len(opened)}.npz"
        path.write_bytes(content)
        with _peak() as peak, pytest.raises(TNConvError, match=match) as info:
            tnconv.load_einsum(path, **kwargs)
        assert str(path) in str(info.value) and info.value.__cause__ is None
        return peak["bytes"], opened[-1].bytes_read if opened else 0

    return run


@contextlib.contextmanager
def _peak():
    tracemalloc.start()
    found = {}
    try:
        yield found
    finally:
        found["bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def _refused(load, content: bytes, match: str, **kwargs) -> int:
    """Refused within REFUSAL_MEMORY; returns the bytes read from the file."""
    peak, read = load(content, match, **kwargs)
    assert peak < REFUSAL_MEMORY, f"peak {peak} bytes"
    return read


# ------------------------------------------------------------------ the classes
def test_a_crafted_valid_file_loads(tmp_path):
    """The crafting helpers write files the loader accepts: the refusals below are real."""
    path = tmp_path / "dot.npz"
    path.write_bytes(_dot_file(np.arange(4.0)))
    assert tnconv.load_einsum(path).evaluate(np.ones(4)) == 6.0
    deflated = _npy(np.arange(4.0))
    path.write_bytes(_raw_zip([_member("metadata.npy", _metadata(_dot_metadata(4))),
                               _member("constant_1.npy", deflated, method=8,
                                       data=_deflated(deflated))]))
    assert tnconv.load_einsum(path).evaluate(np.ones(4)) == 6.0


@pytest.mark.parametrize("member", ["metadata.npy", "constant_1.npy"])
def test_encrypted_member(load, member):
    constant = _npy(np.arange(4.0))
    members = [_member("metadata.npy", _metadata(_dot_metadata(4))),
               _member("constant_1.npy", constant)]
    members = [dict(m, flags=1) if m["name"].decode() == member else m for m in members]
    _refused(load, _raw_zip(members), f"member '{member}' is encrypted")


@pytest.mark.parametrize("method", [98, 99, 12, 14, 1])
def test_unsupported_compression(load, method):
    content = _dot_file(np.arange(4.0), method=method)
    _refused(load, content, f"compression method {method}; allowed: 0 \\(stored\\), 8")


def test_a_small_file_claiming_4_gib(load):
    """The reproducer of the issue: a ~600-byte file whose directory claims a 4 GiB member."""
    content = _dot_file(np.zeros(2 ** 29, np.uint8)[:64], file_size=0xFFFFFFFE)
    assert len(content) < 1000
    read = _refused(load, content, "decompress to 4294967\\d+ bytes .*max_bytes=1073741824")
    assert read < 2000


def test_a_zip64_size_claim(load):
    content = _dot_file(np.arange(4.0), zip64_size=2 ** 40)
    _refused(load, content, f"decompress to {2 ** 40 + len(_metadata(_dot_metadata(4)))} bytes")


@pytest.mark.parametrize("lie, match", [(-8, "Bad CRC-32 for file 'constant_1.npy'"),
                                        (+8, "longer than its header")])
def test_a_directory_that_misstates_a_member_size(load, lie, match):
    constant = _npy(np.arange(4.0))
    _refused(load, _dot_file(np.arange(4.0), file_size=len(constant) + lie), match)


def test_a_header_that_claims_more_data_than_stored(load):
    """Header, metadata and directory agree on 2**20 float64, the member stores 64 bytes."""
    header = _npy_header((2 ** 20,), "<f8")
    content = _raw_zip([_member("metadata.npy", _metadata(_dot_metadata(2 ** 20))),
                        _member("constant_1.npy", header + bytes(64),
                                file_size=len(header) + 8 * 2 ** 20)])
    _refused(load, content, "ends after 64 of its 8388608 bytes")


@pytest.mark.parametrize("directory_size, entries, match", [
    (2 ** 31, None, f"zip directory claims 2147483648 bytes; allowed at most "
                    f"{MAX_DIRECTORY_BYTES}"),
    (None, 65535, f"zip directory claims 65535 members; allowed at most {MAX_MEMBERS}"),
])
def test_a_directory_that_lies_about_itself(load, directory_size, entries, match):
    content = _raw_zip([_member("metadata.npy", _metadata(_dot_metadata(4))),
                        _member("constant_1.npy", _npy(np.arange(4.0)))],
                       directory_size=directory_size, entries=entries)
    assert _refused(load, content, match) < 70_000  # the end record and its comment window


def test_the_issue_amplification_file(load):
    """195 KB deflating to 2e8 uint8 zeros (1.6 GB as float64): refused before it is read."""
    count, chunk = 2 * 10 ** 8, bytes(10 ** 6)
    header = _npy_header((count,), "|u1")
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = packer.compress(header) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(chunk) + packer.flush(zlib.Z_FULL_FLUSH)  # same bytes every time
    data = start + block * (count // len(chunk)) + packer.flush()
    crc = zlib.crc32(header)
    for _ in range(count // len(chunk)):
        crc = zlib.crc32(chunk, crc)
    member = dict(_member("constant_1.npy", b"", method=8, data=data), crc=crc,
                  file_size=len(header) + count)
    content = _raw_zip([_member("metadata.npy", _metadata(_dot_metadata(count))), member])
    assert len(content) < 250_000
    read = _refused(load, content, "constants take 1600000000 bytes as float64; allowed at "
                                   "most max_bytes=1073741824")
    assert read < 10_000  # the metadata and the directory, not the member


def test_amplification_within_a_lower_budget(load, tmp_path):
    zeros = _npy(np.zeros(2 * MiB, np.uint8))
    deflated = _raw_zip([_member("metadata.npy", _metadata(_dot_metadata(2 * MiB))),
                         _member("constant_1.npy", zeros, method=8, data=_deflated(zeros))])
    assert len(deflated) < 10_000
    _refused(load, deflated, "decompress to 2097\\d+ bytes .*max_bytes=1048576",
             max_bytes=MiB)
    _refused(load, deflated, "constants take 16777216 bytes as float64", max_bytes=4 * MiB)
    path = tmp_path / "accepted.npz"
    path.write_bytes(deflated)
    with _peak() as peak:
        loaded = tnconv.load_einsum(path, max_bytes=32 * MiB)
    assert loaded.constants[0].value.dtype == np.float64
    assert peak["bytes"] < 16 * MiB + 2 * MiB + 4 * MiB  # float64 + stored uint8 + slack
    for bad in (0, -1, 1.5, True, None):
        with pytest.raises(TNConvError, match="max_bytes"):
            tnconv.load_einsum(path, max_bytes=bad)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 100_000])
def test_deep_json(load, depth):
    nested = "[" * depth + "]" * depth
    meta = json.dumps(_dot_metadata(4))[:-1] + f', "extra": {nested}}}'
    content = _raw_zip([_member("metadata.npy", _npy(np.frombuffer(meta.encode(), np.uint8))),
                        _member("constant_1.npy", _npy(np.arange(4.0)))])
    _refused(load, content, "metadata nests")


@pytest.mark.parametrize("name", [
    "../constant_1.npy", "/tmp/constant_1.npy", "sub/constant_1.npy", "..\\constant_1.npy",
    "constant_1.npy/../metadata.npy", "constant_01.npy", "CONSTANT_1.NPY", "notes.txt",
    b"constant_1.npy\x00../../etc/passwd",
])
def test_member_names_with_paths_or_unknown(load, name):
    members = [_member("metadata.npy", _metadata(_dot_metadata(4))),
               _member("constant_1.npy", _npy(np.arange(4.0))), _member(name, b"x")]
    _refused(load, _raw_zip(members), "is not allowed: a tnconv einsum file holds only")


def test_duplicate_and_unexpected_members(load):
    meta = _member("metadata.npy", _metadata(_dot_metadata(4)))
    constant = _member("constant_1.npy", _npy(np.arange(4.0)))
    _refused(load, _raw_zip([meta, constant, constant]), "'constant_1.npy' appears twice")
    _refused(load, _raw_zip([meta, constant, _member("constant_7.npy", _npy(np.arange(4.0)))]),
             "differ from the expected")


@pytest.mark.parametrize("member, stored, match", [
    ("metadata.npy", _npy(np.zeros(8, "<u2")), "metadata of shape \\(8,\\) and dtype uint16"),
    ("constant_1.npy", _npy_header((4,), "<f8") + bytes(4), "shorter than its header"),
    ("constant_1.npy", _npy_header((4,), "|u1") + bytes(32), "longer than its header"),
    ("constant_1.npy", _npy_header((4,), "<M8[s]") + bytes(32), "dtype datetime64"),
    ("constant_1.npy", _npy_header((4,), "|O") + bytes(32), "dtype object"),
    ("constant_1.npy", _npy_header((4,), "<c16") + bytes(64), "dtype complex128"),
    ("constant_1.npy", _npy_header((2, 2), "<f8") + bytes(32), "shape \\(2, 2\\), the metadata"),
])
def test_dtype_and_header_lies(load, member, stored, match):
    members = {"metadata.npy": _metadata(_dot_metadata(4)),
               "constant_1.npy": _npy(np.arange(4.0)), member: stored}
    _refused(load, _raw_zip([_member(n, d) for n, d in members.items()]), match)


def test_fifo_is_refused_without_blocking(tmp_path):
    """A reader that blocks on the FIFO is let go by a writer opened after a grace period; it
    then reads an empty file and says so, which the test would catch."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    path = tmp_path / "pipe.npz"
    os.mkfifo(path)

    def unblock():
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    rescue = threading.Timer(10, unblock)
    rescue.start()
    try:
        with pytest.raises(TNConvError, match="not a regular file \\(a FIFO\\)"):
            tnconv.load_einsum(path)
    finally:
        rescue.cancel()


@pytest.mark.parametrize("path, kind", [("/dev/null", "a device"), (None, "a folder")])
def test_devices_and_folders_are_refused(tmp_path, path, kind):
    if path is not None and not os.path.exists(path):
        pytest.skip(f"{path} does not exist here")
    with pytest.raises(TNConvError, match=f"not a regular file \\({kind}\\)"):
        tnconv.load_einsum(path or tmp_path)


def _symbols(count: int) -> list[str]:
    return [chr(0x4E00 + i) for i in range(count)]  # CJK ideographs: no spaces, no reserved


def _chain(count: int) -> dict:
    """A chain of `count` 2×2 operands, each reading the one argument, contracted pairwise."""
    s = _symbols(count + 1)
    meta = _dot_metadata(4)
    meta.update(alphabet="unicode", arguments=[{"role": "input", "shape": [2, 2]}],
                equation=",".join(s[i] + s[i + 1] for i in range(count)) + "->" + s[0] + s[-1],
                operands=[{"name": f"T{i}", "role": "input", "shape": [2, 2], "argument": 0}
                          for i in range(count)],
                output_shape=[2, 2], result_shape=[4], path=[[0, 1]] * (count - 1))
    return meta


def _chain_file(meta: dict) -> bytes:
    plain = _metadata(meta)
    return _raw_zip([_member("metadata.npy", plain, method=8, data=_deflated(plain))])


def test_the_longest_chain_a_file_may_hold_loads(tmp_path):
    """The issue's 8,500-operand chain took 9 s to validate (quadratic); 10,000 now load."""
    content = _chain_file(_chain(MAX_OPERANDS))
    assert len(content) < 200_000
    path = tmp_path / "chain.npz"
    path.write_bytes(content)
    loaded = tnconv.load_einsum(path)
    assert len(loaded.operands) == MAX_OPERANDS
    assert loaded.path == ((0, 1),) * (MAX_OPERANDS - 1)


def test_a_chain_broken_at_its_last_step_is_walked_and_refused(load):
    meta = _chain(1000)
    meta["path"][-1] = [0, 2]
    _refused(load, _chain_file(meta), "path step 998 \\[0, 2\\] is not a set of positions "
                                      "below 2")
    meta = _chain(MAX_OPERANDS + 1)
    _refused(load, _chain_file(meta), f"at most {MAX_OPERANDS} objects")


def test_path_validation_is_linear():
    """50,000 operands in a chain, contracted in the order that made the old check quadratic
    (the first two live operands, every step): a quadratic walk would take minutes."""
    count = 50_000
    s = [chr(0x10000 + i) for i in range(count + 1)]
    terms = [s[i] + s[i + 1] for i in range(count)]
    sizes = {symbol: 2 for symbol in s}
    check_path([[0, 1]] * (count - 1), terms, s[0] + s[-1], sizes)
    with pytest.raises(TNConvError, match="leaves 2 operands"):
        check_path([[0, 1]] * (count - 2), terms, s[0] + s[-1], sizes)
    wide = ["".join(s[:70])] + terms[70:80]  # the output keeps 70 indices alive
    with pytest.raises(TNConvError, match="step 0 has 71 indices, more than 64"):
        check_path([[0, 1]] * 10, wide, "".join(s[:70]), sizes)


def test_the_docstring_states_every_limit():
    """Each limit is named in load_einsum's docstring with the value it has."""
    from tnconv.export import archive, validate

    doc = " ".join(tnconv.load_einsum.__doc__.split())
    stated = {
        (archive, "MAX_DIRECTORY_BYTES"): (2 ** 20, "at most 1 MiB"),
        (archive, "MAX_MEMBERS"): (10_001, "at most 10,001 members"),
        (archive, "MAX_BYTES"): (2 ** 30, "default 2**30 bytes"),
        (archive, "MAX_HEADER_BYTES"): (10_000, "at most 10,000 bytes"),
        (einsum_file, "MAX_METADATA_BYTES"): (2 ** 20, "metadata is at most 1 MiB"),
        (validate, "MAX_DEPTH"): (8, "nested at most 8 levels"),
        (validate, "MAX_OPERANDS"): (10_000, "at most 10,000 operands"),
        (validate, "MAX_TEXT"): (100_000, "at most 100,000 characters"),
        (validate, "MAX_DIMS"): (64, "at most 64 dimensions"),
        (validate, "MAX_SCALE_POWER"): (8, "at most 8 in absolute value"),
        (validate, "MAX_ELEMENTS"): (2 ** 31, "at most 2**31 elements"),
    }
    for (module, name), (value, text) in stated.items():
        assert getattr(module, name) == value, name
        assert text in doc and f"``{module.__name__.split('.')[-1]}.{name}``" in doc, name
    assert "regular file" in doc and "stored or deflated" in doc and "encrypted" in doc
