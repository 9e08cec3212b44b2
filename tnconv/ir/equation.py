"""The one einsum-equation speller: legs (index names) to subscripts.

Every place that writes an einsum equation calls `spell`: lowering (opt_einsum's
symbols, no 26- or 52-letter limit), the schedule's local steps (ASCII letters,
which `torch.einsum` needs), fused constants and common-subexpression keys
(`canonical`, letters by first appearance, so that renamed legs compare equal).

>>> spell([("n", "c"), ("c", "k")], ("n", "k"))
'ab,bc->ac'
>>> canonical([("x", "y")], ("y",)) == canonical([("p", "q")], ("q",))
True
"""

from __future__ import annotations

import string
from typing import Callable, Iterable, Optional, Sequence

import opt_einsum

from tnconv.errors import TNConvError

__all__ = ["spell", "canonical", "symbol_map", "ascii_symbol", "unbounded_symbol"]

Legs = Sequence[str]


def ascii_symbol(position: int) -> str:
    """The `position`-th ASCII letter (torch.einsum accepts only [a-zA-Z])."""
    if position >= len(string.ascii_letters):
        raise TNConvError(f"einsum step: {position + 1} distinct indices in one step; "
                          f"torch.einsum takes at most {len(string.ascii_letters)}")
    return string.ascii_letters[position]


def unbounded_symbol(position: int) -> str:
    """opt_einsum's symbol for `position` (unicode past the 52 ASCII letters)."""
    return opt_einsum.get_symbol(position)


def symbol_map(legs: Iterable[str], symbol: Callable[[int], str] = ascii_symbol) -> dict[str, str]:
    """A symbol per distinct leg, in order of first appearance."""
    order = dict.fromkeys(legs)
    return {leg: symbol(n) for n, leg in enumerate(order)}


def spell(inputs: Sequence[Legs], output: Legs, symbols: Optional[dict[str, str]] = None) -> str:
    """'ab,bc->ac' for the terms `inputs` and the result `output`.

    `symbols` maps legs to symbols (default: ASCII letters by first appearance).
    """
    if symbols is None:
        symbols = symbol_map([leg for term in inputs for leg in term] + list(output))
    terms = ",".join("".join(symbols[leg] for leg in term) for term in inputs)
    return terms + "->" + "".join(symbols[leg] for leg in output)


def canonical(inputs: Sequence[Legs], output: Legs) -> str:
    """The equation with symbols by first appearance and no letter limit (a comparison key)."""
    legs = [leg for term in inputs for leg in term] + list(output)
    return spell(inputs, output, symbol_map(legs, unbounded_symbol))
