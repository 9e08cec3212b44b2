"""Strict validation of an exported einsum's metadata (read from an untrusted file).

`check_metadata` returns nothing or raises `TNConvError` naming the defect; after
it passes, every field has the expected type, the equation matches the
operands, index sizes agree, the path is a valid contraction order, and no
operand, intermediate or result exceeds `MAX_ELEMENTS` elements (for a
batch-free export: at batch size 1). Its work is linear in the size of the
metadata (the path walk keeps the live operands in a Fenwick tree and counts
where each index is still needed), so a long chain costs no more per operand
than a short one.

>>> meta = {"format": "f", "version": 1, "operation": "", "spec": "", "alphabet": "ascii",
...         "equation": "ab,b->a", "arguments": [{"role": "input", "shape": [2, 3]}],
...         "operands": [{"name": "X", "role": "input", "shape": [2, 3], "argument": 0},
...                      {"name": "c", "role": "constant", "shape": [4], "argument": None}],
...         "output_shape": [2], "result_shape": [2], "path": [[0, 1]], "index_names": []}
>>> check_metadata(meta, "f", (1, 2))
Traceback (most recent call last):
...
tnconv.errors.TNConvError: index 'b' has sizes 3 and 4 in different operands
"""

from __future__ import annotations

import string
from math import prod
from typing import Any, Collection, Sequence

from tnconv.errors import TNConvError

__all__ = ["check_metadata", "check_path", "json_depth", "MAX_ELEMENTS", "MAX_OPERANDS",
           "MAX_TEXT", "MAX_DIMS", "MAX_DEPTH", "MAX_SCALE_POWER"]

#: Largest number of elements of any operand, intermediate or result a loaded file may ask for.
MAX_ELEMENTS = 2 ** 31
#: Most operands (and arguments, and index names) a file may list.
MAX_OPERANDS = 10_000
#: Longest text field (the equation, the spec, ...), in characters.
MAX_TEXT = 100_000
#: Most dimensions of any shape, and most indices of any intermediate.
MAX_DIMS = 64
#: Deepest nesting of JSON arrays and objects in the metadata.
MAX_DEPTH = 8
#: Largest |power| of the batch size a batch-free export's result is scaled by.
MAX_SCALE_POWER = 8
_RESERVED = set(",->.")
_KEYS = {"format", "version", "operation", "spec", "alphabet", "equation", "arguments",
         "operands", "output_shape", "result_shape", "path", "index_names"}
_BATCH_KEYS = {"symbols", "arguments", "result", "scale_power"}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise TNConvError(message)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any, what: str, limit: int = MAX_TEXT) -> str:
    _require(isinstance(value, str) and len(value) <= limit,
             f"{what} must be a string of at most {limit} characters, got {type(value).__name__}")
    return value


def _ints(value: Any, what: str, minimum: int = 1, limit: int = MAX_DIMS) -> list[int]:
    ok = isinstance(value, list) and len(value) <= limit and all(
        _integer(v) and v >= minimum for v in value)
    _require(ok, f"{what} must be a list of at most {limit} ints >= {minimum}, got {value!r:.80}")
    return value


def _records(value: Any, what: str, keys: set[str]) -> list[dict]:
    ok = isinstance(value, list) and 1 <= len(value) <= MAX_OPERANDS and all(
        isinstance(v, dict) and set(v) == keys for v in value)
    _require(ok, f"{what} must be a non-empty list of at most {MAX_OPERANDS} objects with keys "
                 f"{sorted(keys)}")
    return value


def _elements(shape: Sequence[int], what: str) -> int:
    count = prod(shape)
    _require(count <= MAX_ELEMENTS, f"{what} has {count} elements, more than {MAX_ELEMENTS}")
    return count


def json_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of JSON arrays and objects in `value` (iterative; stops past `limit`)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        stack.extend((child, depth + 1) for child in
                     (item.values() if isinstance(item, dict) else item))
    return deepest


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
        _require(len(set(term)) == len(term), f"equation term {term!r:.80} repeats a symbol")
    missing = set(output) - set(inputs)
    _require(not missing, f"output symbols {sorted(missing)!r:.80} appear in no operand")
    return terms, output


def _sizes(terms: list[str], operands: list[dict], arguments: list[dict]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for pos, (term, op) in enumerate(zip(terms, operands)):
        name = _text(op["name"], f"operand {pos} name", 1000)
        shape = _ints(op["shape"], f"operand {name!r} shape")
        _require(len(shape) == len(term),
                 f"operand {name!r} has shape {shape} for term {term!r:.80}")
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
    ok = _integer(argument) and 0 <= argument < len(arguments)
    _require(ok, f"operand {name!r} reads argument {argument!r}; there are {len(arguments)}")
    source = arguments[argument]
    _require(role == source["role"], f"operand {name!r} has role {role!r} but reads argument "
                                     f"{source['role']!r}")
    _require(prod(op["shape"]) == prod(source["shape"]),
             f"operand {name!r} of shape {op['shape']} cannot be read from argument shape "
             f"{source['shape']}")


def _check_arguments(arguments: list[dict]) -> None:
    roles = [_text(a["role"], "argument role", 1000) for a in arguments]
    _require(len(set(roles)) == len(roles), f"argument roles repeat: {roles!r:.200}")
    for a in arguments:
        _elements(_ints(a["shape"], f"argument {a['role']!r} shape"), f"argument {a['role']!r}")


class _LiveOperands:
    """The operands alive along a path, addressed by position as opt_einsum does (the taken
    ones leave, each result joins at the end): a Fenwick tree over slots, O(log n) a step."""

    def __init__(self, terms: list[str], steps: int) -> None:
        self.terms = list(terms) + [""] * steps
        self.size, self.count, self.used = len(self.terms), len(terms), len(terms)
        self.top = 1 << (self.size.bit_length() - 1)
        self.tree = [0] + [1 if slot < len(terms) else 0 for slot in range(self.size)]
        for node in range(1, self.size + 1):  # linear build
            parent = node + (node & -node)
            if parent <= self.size:
                self.tree[parent] += self.tree[node]

    def _slot(self, position: int) -> int:
        """The slot of the operand at `position` among the live ones."""
        tree, size = self.tree, self.size
        node, rest, step = 0, position + 1, self.top
        while step:
            ahead = node + step
            if ahead <= size and tree[ahead] < rest:
                node, rest = ahead, rest - tree[ahead]
            step >>= 1
        return node

    def _add(self, slot: int, delta: int) -> None:
        tree, size, node = self.tree, self.size, slot + 1
        while node <= size:
            tree[node] += delta
            node += node & -node

    def take(self, positions: list[int]) -> list[str]:
        """Remove the operands at `positions` (positions before the removal); return their terms."""
        slots = [self._slot(p) for p in positions]
        for slot in slots:
            self._add(slot, -1)
        self.count -= len(slots)
        return [self.terms[slot] for slot in slots]

    def append(self, term: str) -> None:
        self.terms[self.used] = term
        self._add(self.used, 1)
        self.used, self.count = self.used + 1, self.count + 1


def _positions(step: Any, number: int, live: int) -> list[int]:
    ok = isinstance(step, list) and 0 < len(step) <= live and all(
        type(p) is int and 0 <= p < live for p in step) and len(set(step)) == len(step)
    _require(ok, f"path step {number} {step!r:.80} is not a set of positions below {live}")
    return step


def check_path(path: Any, terms: list[str], output: str, sizes: dict[str, int]) -> None:
    """`path` is a contraction order over `terms` whose intermediates stay within the limits.

    Linear in the total length of the terms and the path (times log n for the
    positions): an index stays in an intermediate while some live operand or
    the output still carries it.
    """
    limit = 2 * len(terms) + 2
    _require(isinstance(path, list) and 1 <= len(path) <= limit,
             f"path must be a list of 1 to {limit} steps")
    live = _LiveOperands(terms, len(path))
    needed: dict[str, int] = {}
    for term in terms + [output]:
        for symbol in term:
            needed[symbol] = needed.get(symbol, 0) + 1
    last = len(path) - 1
    for number, step in enumerate(path):
        taken = live.take(_positions(step, number, live.count))
        for term in taken:
            for symbol in term:
                needed[symbol] -= 1
        result = output if number == last else "".join(dict.fromkeys(
            s for term in taken for s in term if needed[s] > 0))
        _require(len(result) <= MAX_DIMS, f"the intermediate of path step {number} has "
                                          f"{len(result)} indices, more than {MAX_DIMS}")
        _elements([sizes[s] for s in result], f"the intermediate of path step {number}")
        for symbol in result:
            needed[symbol] += 1
        live.append(result)
    _require(live.count == 1, f"the path leaves {live.count} operands instead of one")


def _axes(value: Any, what: str, rank: int) -> list[int]:
    axes = _ints(value, what, minimum=0)
    _require(len(set(axes)) == len(axes) and all(a < rank for a in axes),
             f"{what} must be distinct axes below {rank}, got {axes}")
    return axes


def _check_batch(batch: Any, meta: dict[str, Any], terms: list[str], output: str) -> None:
    """The batch record of a batch-free export: which symbols and axes scale with the batch."""
    if batch is None:
        return
    _require(isinstance(batch, dict) and set(batch) == _BATCH_KEYS,
             f"batch must be null or an object with keys {sorted(_BATCH_KEYS)}")
    symbols = _text(batch["symbols"], "batch symbols", MAX_DIMS)
    used = set(output).union(*map(set, terms))
    _require(symbols != "" and len(set(symbols)) == len(symbols) and set(symbols) <= used,
             f"batch symbols {symbols!r} must be distinct symbols of the equation")
    arguments = batch["arguments"]
    _require(isinstance(arguments, list) and len(arguments) == len(meta["arguments"]),
             f"batch arguments must list the batch axes of each of the "
             f"{len(meta['arguments'])} arguments")
    axes = [_axes(a, f"batch axes of argument {n}", len(meta["arguments"][n]["shape"]))
            for n, a in enumerate(arguments)]
    _require(any(axes), "batch arguments: no argument carries the batch")
    for op, term in zip(meta["operands"], terms):
        if op["argument"] is None:
            _require(not set(term) & set(symbols), f"constant {op['name']!r} carries the batch")
        else:
            carried = sum(s in symbols for s in term)
            _require(carried == len(axes[op["argument"]]),
                     f"operand {op['name']!r} carries the batch {carried} times, its argument "
                     f"{len(axes[op['argument']])} times")
    result = _axes(batch["result"], "batch axes of the result", len(meta["result_shape"]))
    _require(len(result) == sum(s in symbols for s in output),
             "batch axes of the result do not match the batch symbols of the output")
    power = batch["scale_power"]
    _require(_integer(power) and abs(power) <= MAX_SCALE_POWER,
             f"batch scale_power {power!r:.20} must be an int of at most {MAX_SCALE_POWER} in "
             "absolute value")


def check_metadata(meta: dict[str, Any], file_format: str, versions: Collection[int]) -> None:
    """Validate the metadata of an exported einsum; raise `TNConvError` on any defect.

    Version 1 has no batch record; later versions have ``"batch"`` (null for a
    fixed-shape export).
    """
    depth = json_depth(meta)
    _require(depth <= MAX_DEPTH, f"metadata nests {depth} or more levels deep; allowed at most "
                                 f"{MAX_DEPTH}")
    version = meta.get("version")
    _require(meta.get("format") == file_format and _integer(version) and version in versions,
             f"format {meta.get('format')!r:.40} version {version!r:.20}; allowed: "
             f"{file_format!r} version {' or '.join(map(str, sorted(versions)))}")
    keys = _KEYS if version == 1 else _KEYS | {"batch"}
    _require(set(meta) == keys, f"metadata keys {sorted(meta)!r:.300} differ from {sorted(keys)}")
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
             f"output_shape {output_shape} does not match the equation's output {output!r:.80}")
    result_shape = _ints(meta["result_shape"], "result_shape")
    _require(prod(result_shape) == prod(output_shape),
             f"result_shape {result_shape} does not fit output_shape {output_shape}")
    _elements(output_shape, "the result")
    check_path(meta["path"], terms, output, sizes)
    pairs = meta["index_names"]
    ok = isinstance(pairs, list) and len(pairs) <= MAX_OPERANDS and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) and len(s) <= 1000
                                                    for s in p) for p in pairs)
    _require(ok, "index_names must be a list of [symbol, name] string pairs")
    _check_batch(meta.get("batch"), meta, terms, output)
