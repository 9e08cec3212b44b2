"""Structural signatures of an execution plan's registers: common sub-expressions.

Two registers with equal signatures hold equal tensors whose legs correspond
by position: the same view of the same argument, constants with equal values,
or the same contraction of registers with equal signatures. KFAC-reduce's
network averages two copies of the input in two identical chains; with
signatures the plan computes the chain once and the copies meet in a Gram
product.

>>> import torch
>>> sigs = Signatures()
>>> sigs.argument(0, ("input",)); sigs.argument(1, ("input",))
>>> sigs.constant(2, torch.ones(3)); sigs.constant(3, torch.ones(3))
>>> sigs.step(4, sigs.order([(0, ("n", "i"), False), (2, ("i",), False)]), ("n",)) is None
True
>>> sigs.step(5, sigs.order([(3, ("j",), False), (1, ("m", "j"), False)]), ("m",))  # renamed
4
"""

from __future__ import annotations

from typing import Any, Hashable, Optional

import torch

__all__ = ["Signatures", "canonical_equation"]

Taken = list  # [(register, legs, is_constant)]


def canonical_equation(legs: list[tuple[str, ...]], out: tuple[str, ...]) -> str:
    """The equation with letters given by first appearance, so renamed legs compare equal."""
    letter: dict[str, str] = {}
    for leg in [i for term in legs for i in term] + list(out):
        letter.setdefault(leg, chr(ord("a") + len(letter)) if len(letter) < 26
                          else f"<{len(letter)}>")
    terms = ",".join("".join(letter[i] for i in term) for term in legs)
    return terms + "->" + "".join(letter[i] for i in out)


class Signatures:
    """Signatures of registers, recorded as a plan is built."""

    def __init__(self) -> None:
        self._of: dict[int, Hashable] = {}
        self._constants: list[tuple[torch.Tensor, int]] = []
        self._steps: dict[Hashable, int] = {}

    def of(self, register: int) -> Hashable:
        return self._of[register]

    def argument(self, register: int, key: Hashable) -> None:
        self._of[register] = ("argument", key)

    def symbolic(self, register: int, value: Hashable) -> None:
        """A constant left symbolic (a folded index pattern): equal values, equal signatures."""
        self._of[register] = ("symbolic", value)

    def constant(self, register: int, value: torch.Tensor) -> None:
        """Constants with equal shape, dtype and values share a signature (meta tensors
        have no values: none is shared)."""
        for other, first in self._constants:
            if other.shape == value.shape and other.dtype == value.dtype \
                    and value.device.type != "meta" and torch.equal(other, value):
                self._of[register] = ("constant", first)
                return
        self._constants.append((value, register))
        self._of[register] = ("constant", register)

    def order(self, taken: Taken) -> Taken:
        """The operands in a canonical order, so equal steps list them alike."""
        return sorted(taken, key=lambda item: repr(self._of[item[0]]))

    def step(self, register: int, taken: Taken, out: tuple[str, ...]) -> Optional[int]:
        """Record a step's result; return an earlier register that holds the same, if any."""
        key: Any = ("step", tuple(self._of[r] for r, _, _ in taken),
                    canonical_equation([legs for _, legs, _ in taken], out))
        self._of[register] = key
        earlier = self._steps.setdefault(key, register)
        return None if earlier == register else earlier
