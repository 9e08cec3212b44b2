"""Strict validation of an exported einsum's metadata (read from an untrusted file).

`check_metadata` returns nothing or raises `TNConvError` naming the defect; after
it passes, every field has the expected type, the equation matches the
operands, index sizes agree, the path is a valid contraction order, and no
operand, intermediate or result exceeds `MAX_ELEMENTS` elements.

>>> meta = {"format": "f", "version": 1, "operation": "", "spec": "", "alphabet": "ascii",
...         "equation": "ab,b->a", "arguments": [{"role": "input", "shape": [2, 3]}],
...         "operands": [{"name": "X", "role": "input", "shape": [2, 3], "argument": 0},
...                      {"name": "c", "role": "constant", "shape": [4], "argument": None}],
...         "output_shape": [2], "result_shape": [2], "path": [[0, 1]], "index_names": []}
>>> check_metadata(meta, "f", 1)
Traceback (most recent call last):
...
tnconv.errors.TNConvError: index 'b' has sizes 3 and 4 in different operands
"""

from __future__ import annotations

import string
from math import prod
from typing import Any

from tnconv.errors import TNConvError

__all__ = ["check_metadata", "MAX_ELEMENTS"]

#: Largest number of elements of any operand, intermediate or result a loaded file may ask for.
MAX_ELEMENTS = 2 ** 31
_MAX_COUNT = 10_000
_MAX_TEXT = 100_000
_RESERVED = set(",->.")
_KEYS = {"format", "version", "operation", "spec", "alphabet", "equation", "arguments",
         "operands", "output_shape", "result_shape", "path", "index_names"}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise TNConvError(message)


def _text(value: Any, what: str, limit: int = _MAX_TEXT) -> str:
    _require(isinstance(value, str) and len(value) <= limit,
             f"{what} must be a string of at most {limit} characters, got {type(value).__name__}")
    return value


def _ints(value: Any, what: str, minimum: int = 1, limit: int = 64) -> list[int]:
    ok = isinstance(value, list) and len(value) <= limit and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value)
    _require(ok, f"{what} must be a list of at most {limit} ints >= {minimum}, got {value!r:.80}")
    return value


def _records(value: Any, what: str, keys: set[str]) -> list[dict]:
    ok = isinstance(value, list) and 1 <= len(value) <= _MAX_COUNT and all(
        isinstance(v, dict) and set(v) == keys for v in value)
    _require(ok, f"{what} must be a non-empty list of objects with keys {sorted(keys)}")
    return value


def _elements(shape: list[int], what: str) -> int:
    count = prod(shape)
    _require(count <= MAX_ELEMENTS, f"{what} has {count} elements, more than {MAX_ELEMENTS}")
    return count


def _terms(equation: str, alphabet: str, count: int) -> tuple[list[str], str]:
    _require(equation.count("->") == 1, f"equation {equation!r:.80} needs exactly one '->'")
    inputs, output = equation.split("->")
    terms = inputs.split(",")
    _require(len(terms) == count, f"equation has {len(terms)} terms for {count} operands")
    allowed = (lambda s: s in string.ascii_letters) if alphabet == "ascii" else (
        lambda s: s not in _RESERVED and not s.isspace())
    for term in terms + [output]:
        bad = [s for s in term if not allowed(s)]
        _require(not bad, f"equation uses symbols {bad!r:.80} outside the {alphabet} alphabet")
        _require(len(set(term)) == len(term), f"equation term {term!r} repeats a symbol")
    missing = set(output) - set(inputs)
    _require(not missing, f"output symbols {sorted(missing)} appear in no operand")
    return terms, output


def _sizes(terms: list[str], operands: list[dict], arguments: list[dict]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for pos, (term, op) in enumerate(zip(terms, operands)):
        name = _text(op["name"], f"operand {pos} name", 1000)
        shape = _ints(op["shape"], f"operand {name!r} shape")
        _require(len(shape) == len(term), f"operand {name!r} has shape {shape} for term {term!r}")
        _elements(shape, f"operand {name!r}")
        for symbol, size in zip(term, shape):
            known = sizes.setdefault(symbol, size)
            _require(known == size, f"index {symbol!r} has sizes {known} and {size} in "
                                    "different operands")
        _source(op, name, arguments)
    return sizes


def _source(op: dict, name: str, arguments: list[dict]) -> None:
    role, argument = _text(op["role"], f"operand {name!r} role", 1000), op["argument"]
    if argument is None:
        _require(role == "constant", f"operand {name!r} has no argument but role {role!r}")
        return
    ok = isinstance(argument, int) and not isinstance(argument, bool) and (
        0 <= argument < len(arguments))
    _require(ok, f"operand {name!r} reads argument {argument!r}; there are {len(arguments)}")
    source = arguments[argument]
    _require(role == source["role"], f"operand {name!r} has role {role!r} but reads argument "
                                     f"{source['role']!r}")
    _require(prod(op["shape"]) == prod(source["shape"]),
             f"operand {name!r} of shape {op['shape']} cannot be read from argument shape "
             f"{source['shape']}")


def _check_arguments(arguments: list[dict]) -> None:
    roles = [_text(a["role"], "argument role", 1000) for a in arguments]
    _require(len(set(roles)) == len(roles), f"argument roles repeat: {roles}")
    for a in arguments:
        _elements(_ints(a["shape"], f"argument {a['role']!r} shape"), f"argument {a['role']!r}")


def _check_path(path: Any, terms: list[str], output: str, sizes: dict[str, int]) -> None:
    _require(isinstance(path, list) and 1 <= len(path) <= 2 * len(terms) + 2,
             f"path must be a list of 1 to {2 * len(terms) + 2} steps")
    live = list(terms)
    for number, step in enumerate(path):
        positions = _ints(step, f"path step {number}", minimum=0, limit=len(live))
        ok = positions and len(set(positions)) == len(positions) and max(positions) < len(live)
        _require(bool(ok), f"path step {number} {positions} is not a set of positions below "
                           f"{len(live)}")
        taken = [live[p] for p in positions]
        live = [t for p, t in enumerate(live) if p not in positions]
        if number == len(path) - 1:
            result = output
        else:
            rest = set("".join(live)) | set(output)
            result = "".join(dict.fromkeys(s for t in taken for s in t if s in rest))
        _elements([sizes[s] for s in result], f"the intermediate of path step {number}")
        live.append(result)
    _require(len(live) == 1, f"the path leaves {len(live)} operands instead of one")


def check_metadata(meta: dict[str, Any], file_format: str, version: int) -> None:
    """Validate the metadata of an exported einsum; raise `TNConvError` on any defect."""
    _require(set(meta) == _KEYS, f"metadata keys {sorted(meta)} differ from {sorted(_KEYS)}")
    _require(meta["format"] == file_format and meta["version"] == version,
             f"format {meta['format']!r:.40} version {meta['version']!r:.20}; "
             f"allowed: {file_format!r} version {version}")
    _text(meta["operation"], "operation")
    _text(meta["spec"], "spec")
    _require(meta["alphabet"] in ("ascii", "unicode"),
             f"alphabet {meta['alphabet']!r:.40}; allowed: 'ascii', 'unicode'")
    arguments = _records(meta["arguments"], "arguments", {"role", "shape"})
    _check_arguments(arguments)
    operands = _records(meta["operands"], "operands", {"name", "role", "shape", "argument"})
    terms, output = _terms(_text(meta["equation"], "equation"), meta["alphabet"], len(operands))
    sizes = _sizes(terms, operands, arguments)
    output_shape = _ints(meta["output_shape"], "output_shape")
    _require(output_shape == [sizes[s] for s in output],
             f"output_shape {output_shape} does not match the equation's output {output!r}")
    result_shape = _ints(meta["result_shape"], "result_shape")
    _require(prod(result_shape) == prod(output_shape),
             f"result_shape {result_shape} does not fit output_shape {output_shape}")
    _elements(output_shape, "the result")
    _check_path(meta["path"], terms, output, sizes)
    pairs = meta["index_names"]
    ok = isinstance(pairs, list) and len(pairs) <= _MAX_COUNT and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) and len(s) <= 1000
                                                    for s in p) for p in pairs)
    _require(ok, "index_names must be a list of [symbol, name] string pairs")
