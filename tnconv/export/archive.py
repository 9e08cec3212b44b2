"""Reading the zip archive of an untrusted file, boringly: every size is bounded before it is read.

`open_regular` opens regular files only (a FIFO, a device or a folder is
refused without blocking). `check_end_record` reads the archive's end record
and refuses a central directory larger than `MAX_DIRECTORY_BYTES` before
`zipfile` parses it. `check_members` then checks the directory's entries:
the allowed names (no folders, no paths, each once), no encryption, method
stored or deflated, and the sizes the directory states, against the caller's
byte budget, before any member is read. `read_npy` reads one ``.npy`` member
into a preallocated array after its header has been checked, and insists
that the member holds exactly the bytes its header needs (``zipfile``
decompresses at most the stated size, and checks the CRC at the end).

>>> import io, zipfile
>>> buffer = io.BytesIO()
>>> with zipfile.ZipFile(buffer, "w") as archive:
...     archive.writestr("../constant_0.npy", b"")
>>> with zipfile.ZipFile(buffer) as archive:
...     check_members(archive, 1 << 20)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
tnconv.errors.TNConvError: member name '../constant_0.npy' is not allowed: ...
"""

from __future__ import annotations

import os
import re
import stat
import struct
import zipfile
from math import prod
from typing import BinaryIO, Callable

import numpy as np

from tnconv.errors import TNConvError

__all__ = ["open_regular", "check_end_record", "check_members", "read_npy", "MAX_BYTES",
           "MAX_DIRECTORY_BYTES", "MAX_MEMBERS", "MAX_HEADER_BYTES", "METHODS"]

#: Default byte budget of `tnconv.load_einsum` (its ``max_bytes``): the most bytes the
#: members may decompress to in all, and the most the constants may take as float64.
MAX_BYTES = 1 << 30
#: Largest central directory (bytes) read: ~22,000 entries at most.
MAX_DIRECTORY_BYTES = 1 << 20
#: Most members an archive may list (metadata plus up to 10,000 constants).
MAX_MEMBERS = 10_001
#: Largest ``.npy`` header read (numpy's own default).
MAX_HEADER_BYTES = 10_000
#: Compression methods read: zip method number -> name.
METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}

_MEMBER_NAME = re.compile(r"metadata\.npy|constant_(?:0|[1-9][0-9]{0,5})\.npy")
_END = struct.Struct("<4s4H2LH")          # end of central directory record
_LOCATOR = struct.Struct("<4sLQL")        # zip64 end of central directory locator
_END64 = struct.Struct("<4sQ2H2L4Q")      # zip64 end of central directory record
_CHUNK = 1 << 20


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise TNConvError(message)


def open_regular(path: os.PathLike | str) -> BinaryIO:
    """Open `path` for reading if it is a regular file (never blocks on a FIFO)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    descriptor = os.open(path, flags)
    try:
        mode = os.fstat(descriptor).st_mode
        _require(stat.S_ISREG(mode), f"not a regular file ({_kind(mode)}); only regular "
                                     "files are read")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _kind(mode: int) -> str:
    kinds = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
             (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")]
    return next((name for test, name in kinds if test(mode)), "not a plain file")


def _end_record(handle: BinaryIO, size: int) -> tuple[int, bytes]:
    """Offset and bytes of the end record, found as `zipfile` finds it: last in the file, or
    (after a comment) the last signature in the final 64 KiB."""
    last = _read_at(handle, size - _END.size, _END.size, size)
    if last[:4] == b"PK\x05\x06" and last[-2:] == b"\0\0":
        return size - _END.size, last
    tail_size = min(size, _END.size + 0xFFFF)
    tail = _read_at(handle, size - tail_size, tail_size, size)
    start = tail.rfind(b"PK\x05\x06")
    _require(start >= 0 and tail_size - start >= _END.size,
             "not a zip archive (no end of central directory record)")
    return size - tail_size + start, tail[start:start + _END.size]


def _read_at(handle: BinaryIO, offset: int, count: int, size: int) -> bytes:
    if offset < 0 or offset + count > size:
        return b""
    handle.seek(offset)
    return handle.read(count)


def _zip64_records(handle: BinaryIO, end: int, size: int) -> list[tuple[int, int]]:
    """(entries, directory bytes) of the zip64 records `zipfile` may read instead."""
    locator = _read_at(handle, end - _LOCATOR.size, _LOCATOR.size, size)
    if len(locator) != _LOCATOR.size or locator[:4] != b"PK\x06\x07":
        return []
    offset = _LOCATOR.unpack(locator)[2]
    found = []
    for at in {end - _LOCATOR.size - _END64.size, offset}:  # where 3.11 looks, where it says
        record = _read_at(handle, at, _END64.size, size)
        if len(record) == _END64.size and record[:4] == b"PK\x06\x06":
            fields = _END64.unpack(record)
            found.append((fields[7], fields[8]))
    return found


def check_end_record(handle: BinaryIO, size: int) -> None:
    """Refuse an archive whose central directory is larger than `MAX_DIRECTORY_BYTES`."""
    end, record = _end_record(handle, size)
    fields = _END.unpack(record)
    for entries, directory in [(fields[4], fields[5])] + _zip64_records(handle, end, size):
        _require(directory <= MAX_DIRECTORY_BYTES,
                 f"the zip directory claims {directory} bytes; allowed at most "
                 f"{MAX_DIRECTORY_BYTES}")
        _require(entries <= MAX_MEMBERS,
                 f"the zip directory claims {entries} members; allowed at most {MAX_MEMBERS}")
    handle.seek(0)


def _check_member(info: zipfile.ZipInfo) -> None:
    name = info.filename
    _require(_MEMBER_NAME.fullmatch(name) is not None and info.orig_filename == name,
             f"member name {info.orig_filename!r:.200} is not allowed: a tnconv einsum file "
             "holds only 'metadata.npy' and 'constant_<n>.npy' (no folders)")
    _require(not info.flag_bits & 0x1,
             f"member {name!r} is encrypted; encrypted members are not read")
    _require(info.compress_type in METHODS,
             f"member {name!r} uses compression method {info.compress_type}; allowed: "
             + ", ".join(f"{number} ({label})" for number, label in METHODS.items()))


def check_members(archive: zipfile.ZipFile, max_bytes: int) -> dict[str, zipfile.ZipInfo]:
    """The members by name, after checking names, encryption, methods and the stated sizes."""
    infos = archive.infolist()
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        _check_member(info)
        _require(info.filename not in members, f"member {info.filename!r} appears twice")
        members[info.filename] = info
    total = sum(info.file_size for info in infos)
    _require(total <= max_bytes,
             f"the members decompress to {total} bytes in all (as the zip directory states); "
             f"allowed at most max_bytes={max_bytes}")
    return members


def _npy_header(handle: BinaryIO, name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(handle)
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    _require(version in readers, f"member {name!r} has .npy version {version}; "
                                 "allowed: (1, 0), (2, 0)")
    return readers[version](handle, max_header_size=MAX_HEADER_BYTES)


def read_npy(archive: zipfile.ZipFile, info: zipfile.ZipInfo,
             check: Callable[[tuple[int, ...], np.dtype], None]) -> np.ndarray:
    """Member `info` as an array; `check(shape, dtype)` vets its header before anything is
    allocated."""
    name = info.filename
    with archive.open(info) as handle:
        shape, fortran_order, dtype = _npy_header(handle, name)
        check(tuple(shape), dtype)
        need, available = prod(shape) * dtype.itemsize, info.file_size - handle.tell()
        _require(need == available,
                 f"member {name!r} is {'shorter' if available < need else 'longer'} than its "
                 f"header says: {available} bytes of data where shape {tuple(shape)} of "
                 f"{dtype} needs {need}")
        array = np.empty(prod(shape), dtype)
        view, done = memoryview(array).cast("B"), 0
        while done < need:
            count = handle.readinto(view[done:done + _CHUNK])
            _require(count > 0, f"member {name!r} ends after {done} of its {need} bytes")
            done += count
        _require(handle.read(1) == b"", f"member {name!r} holds more bytes than it states")
    return array.reshape(shape, order="F" if fortran_order else "C")
