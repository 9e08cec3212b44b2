"""Execution of an `EinsumProgram` on torch tensors.

opt_einsum planned the contraction path at lowering time; here the plan becomes
a list of pairwise `torch.einsum` calls on the caller's device and dtype.
Steps whose operands are all constants run once when the plan is built, so the
per-call work is only the steps that touch data. Two copies of one argument
meeting in a step (KFC) run as one Gram product (`tnconv.runtime.gram`); a scattering
index pattern is applied as a scatter-add and never built (`tnconv.runtime.fold_steps`); a chain that
repeats an earlier one is not run again (`tnconv.runtime.plan_signatures`); overlapping
window views meet the weight tap by tap, on the data in place (`tnconv.runtime.window_steps`); a result
that is only a view of the argument (an unpadded unfold) is one `as_strided` and a copy;
sums of one operand read an argument's view before its merging reshapes, and a dense enough
strided selection as one product with a mask (`tnconv.runtime.sum_steps`). Plain torch calls (no
opt_einsum machinery at run time) keep the path friendly to `torch.compile`.

>>> import torch
>>> from tnconv.spec.conv_spec import ConvSpec
>>> from tnconv.ops.convolution import forward_network
>>> from tnconv.lower.program import lower
>>> spec = ConvSpec(2, 3, kernel_size=3, input_size=(6, 6))
>>> prog = lower(forward_network(spec, 1), ("input", "weight"), (1, 3, 4, 4))
>>> plan = plan_for(prog, torch.device("cpu"), torch.float64)
>>> x, w = torch.rand(1, 2, 6, 6, dtype=torch.float64), torch.rand(3, 2, 3, 3, dtype=torch.float64)
>>> torch.allclose(plan(x, w), torch.nn.functional.conv2d(x, w))
True
"""

from __future__ import annotations

import string
from collections import Counter
from math import prod
from dataclasses import dataclass, replace
from typing import Any, Optional

import torch

from tnconv.cache import LRUCache
from tnconv.ir.constants import to_torch
from tnconv.runtime.fold_steps import FoldStep, fold_step
from tnconv.runtime.gram import GramStep, gram_step
from tnconv.runtime.plan_signatures import Signatures
from tnconv.runtime.sum_steps import MaskedSumStep, SumStep, masked, sum_step, unmerged
from tnconv.lower.program import EinsumProgram
from tnconv.runtime.matmul_step import MatmulStep, matmul_step
from tnconv.runtime.matrix_chain import MatrixChainStep, matrix_step
from tnconv.runtime.window_steps import window_step

__all__ = ["ExecutionPlan", "plan_for", "shares_memory"]

_PLANS = LRUCache(name="plans")


@dataclass(frozen=True)
class _Step:
    inputs: tuple[int, ...]
    equation: str

    def __call__(self, registers: list[Any]) -> torch.Tensor:
        return torch.einsum(self.equation, *[registers[r] for r in self.inputs])


@dataclass(frozen=True)
class _Alias:
    """A step whose result an earlier step already computed (a common sub-expression)."""

    inputs: tuple[int]

    def __call__(self, registers: list[Any]) -> torch.Tensor:
        return registers[self.inputs[0]]


def _local_equation(inputs: list[tuple[str, ...]], output: tuple[str, ...]) -> str:
    names = sorted({i for legs in inputs for i in legs})
    if len(names) > len(string.ascii_letters):
        raise NotImplementedError(f"one contraction step has {len(names)} distinct indices")
    letter = dict(zip(names, string.ascii_letters))
    ins = ",".join("".join(letter[i] for i in legs) for legs in inputs)
    return ins + "->" + "".join(letter[i] for i in output)


class ExecutionPlan:
    """A program bound to a device and dtype: constants built, constant steps done."""

    def __init__(self, program: EinsumProgram, device: torch.device, dtype: torch.dtype) -> None:
        self.program = program
        roles = program.roles
        self.argument_shapes = tuple(op.shape for op in program.arguments)
        self.argument_of = tuple(roles.index(op.role) for op in program.arguments)
        self.argument_views = tuple(op.view for op in program.arguments)
        self.result_shape = program.result_shape
        self.scale = program.scale
        self._registers: list[Any] = [None] * len(self.argument_shapes)
        self._steps: list[Any] = []
        self._sizes = {i: n for op in program.operands for i, n in zip(op.indices, op.shape)}
        #: Data operands that are the same view of the same argument as an earlier one.
        self._same_as: dict[int, int] = {}
        #: Registers of the index patterns that fold steps apply (left unmaterialised).
        self._patterns: dict[int, Any] = {}
        self._device = device
        self._build(device, dtype)

    def _build(self, device: torch.device, dtype: torch.dtype) -> None:
        prog, sigs = self.program, Signatures()
        live = []  # (register, indices, is_constant) in opt_einsum's operand order
        first_of: dict[tuple, int] = {}
        folded = set(prog.folds)
        for pos, op in enumerate(prog.operands):
            if pos in folded:  # applied by a fold step, never materialised
                self._registers.append(None)
                self._patterns[len(self._registers) - 1] = op.value
                sigs.symbolic(len(self._registers) - 1, op.value)
                live.append((len(self._registers) - 1, op.indices, True))
            elif op.is_constant:
                self._registers.append(to_torch(op.value, device, dtype))
                sigs.constant(len(self._registers) - 1, self._registers[-1])
                live.append((len(self._registers) - 1, op.indices, True))
            else:
                key = (self.argument_of[pos], op.shape, op.view)
                if first_of.setdefault(key, pos) != pos:
                    self._same_as[pos] = first_of[key]
                sigs.argument(pos, key)
                live.append((pos, op.indices, False))
        for step_no, contract in enumerate(prog.path):
            taken = [live.pop(p) for p in sorted(contract, reverse=True)]
            ordered = sigs.order(taken)  # canonical: equal chains get equal output legs
            rest = {i for _, legs, _ in live for i in legs} | set(prog.output_indices)
            if step_no == len(prog.path) - 1:
                out = prog.output_indices
            else:
                seen = dict.fromkeys(i for _, legs, _ in ordered for i in legs)
                out = tuple(i for i in seen if i in rest)
            constant = all(c for _, _, c in taken)
            self._registers.append(self._einsum(taken, out) if constant else None)
            register = len(self._registers) - 1
            if constant:
                sigs.constant(register, self._registers[register])
            else:
                self._steps.append(self._data_step(taken, out, sigs.step(register, ordered, out),
                                                   sigs, final=step_no == len(prog.path) - 1))
            live.append((register, out, constant))
        self._step_outputs = [
            len(self._registers) - len(prog.path) + n for n, _ in enumerate(prog.path)]
        self._data_step_outputs = [
            reg for reg in self._step_outputs if self._registers[reg] is None]
        self._prune_and_chain()
        self._argument_sums(device, dtype)
        # Only permutations / sums of (views of) arguments: the result may alias an argument.
        self._may_alias = all(isinstance(s, (SumStep, _Alias)) for s in self._steps)
        self._scaled_argument = self._fold_scale()
        self._bind_chains()
        self._strided = self._strided_result()

    def _strided_result(self) -> Optional[tuple]:
        """(size, stride, offset) of the result where it is a strided view of a contiguous argument.

        Found by running the plan on a meta tensor (no data): if the result is
        still a view of it, a call needs only one `as_strided` and the copy,
        not the chain of view calls (about 15 µs less on a small unfold).
        """
        if not self._may_alias or self.program.scale != 1 or len(self.program.roles) != 1:
            return None
        probe = torch.empty(prod(self.argument_shapes[0]) if self.argument_views[0] is None
                            else prod(self.argument_views[0].base_shape), device="meta")
        result = self._evaluate((probe,))
        if result is not probe and result._base is not probe:
            return None  # a step copied (padding, a sum): no single view
        return tuple(result.shape), result.stride(), result.storage_offset()

    def _fold_scale(self) -> Optional[int]:
        """Apply the scale where it is cheapest: a constant (once), else a small argument.

        Every operand enters the contraction linearly, so scaling any one of
        them scales the result; a pass over a large result is the expensive
        choice. Returns the argument to scale per call, if that is the choice.
        """
        if self.scale == 1:
            return None
        last = self._steps[-1] if self._steps else None
        if isinstance(last, GramStep) and self._data_step_outputs[-1] == len(self._registers) - 1:
            # √scale on a constant feeding both copies: a plain bmm, with no `alpha` (whose
            # `baddbmm` path costs tens of µs more than `bmm` in a cold cache)
            if not (self.scale > 0 and self._scale_source(last.register, self.scale ** 0.5)):
                self._steps[-1] = replace(last, alpha=last.alpha * self.scale)  # in the product
            self.scale = 1.0
            return None
        # An operand that enters the product twice (a Gram step's, or an argument fed to
        # two copies) would carry the scale squared.
        if any(isinstance(step, _Alias) for step in self._steps):
            return None  # a shared sub-expression: scaling inside it would scale twice
        twice = {r for step in self._steps if isinstance(step, GramStep) for r in step.inputs}
        twice |= set(self._same_as) | set(self._same_as.values())
        inputs = [r for step in self._steps for r in step.inputs if r not in twice]
        constants = [r for r in inputs if self._registers[r] is not None]
        if constants:
            smallest = min(constants, key=lambda r: self._registers[r].numel())
            self._registers[smallest] = self._registers[smallest] * self.scale
            self.scale = 1.0
            return None
        for n, (step, out) in enumerate(zip(self._steps, self._data_step_outputs)):
            if isinstance(step, MaskedSumStep) and out not in twice:
                self._steps[n] = step.scaled(self.scale)
                self.scale = 1.0
                return None
        plain = [r for r in inputs if r < len(self.argument_shapes)
                 and self.argument_views[r] is None]
        smallest = min(plain, key=lambda r: prod(self.argument_shapes[r]), default=None)
        if smallest is not None and prod(self.argument_shapes[smallest]) < prod(self.result_shape):
            self.scale = 1.0
            return smallest
        return None

    def _scale_source(self, register: int, factor: float) -> bool:
        """Put `factor` on a constant that only the step computing `register` reads (a matrix
        chain's matrix, a masked sum's mask), so that it scales `register` alone; False
        where there is none."""
        readers = Counter(r for step in self._steps for r in step.inputs)
        producer = dict(zip(self._data_step_outputs, range(len(self._steps))))
        while (register in producer and isinstance(self._steps[producer[register]], _Alias)
               and readers[register] == 1):
            register = self._steps[producer[register]].inputs[0]
        if register not in producer or readers[register] != 1:
            return False
        n = producer[register]
        step = self._steps[n]
        if isinstance(step, (MaskedSumStep, SumStep)):
            scaled = step.scaled(factor)
            if scaled is not None:
                self._steps[n] = scaled
            return scaled is not None
        if not isinstance(step, MatrixChainStep):
            return False
        matrix = next((matrix for matrix, _, _ in step.matrices
                       if readers[matrix] == 1 and self._registers[matrix] is not None), None)
        if matrix is None:
            return False
        self._registers[matrix] = self._registers[matrix] * factor
        return True

    def _einsum(self, taken: list, out: tuple[str, ...]) -> torch.Tensor:
        equation = _local_equation([legs for _, legs, _ in taken], out)
        return torch.einsum(equation, *[self._registers[r] for r, _, _ in taken])

    def _data_step(self, taken: list, out: tuple[str, ...], earlier: Optional[int],
                   sigs: Signatures, final: bool = False) -> Any:
        """The cheapest way to run one per-call step (`final`: the one writing the result)."""
        if earlier is not None:
            return _Alias((earlier,))
        if len(taken) == 1:
            return sum_step(taken[0][0], taken[0][1], out)
        equation = _local_equation([legs for _, legs, _ in taken], out)
        return (self._fold(taken, out) or self._gram(taken, out, sigs)
                or self._window(taken, out) or self._matrix(taken, out)
                or (self._matmul(taken, out) if final else None)
                or _Step(tuple(r for r, _, _ in taken), equation))

    def _matmul(self, taken: list, out: tuple[str, ...]) -> Optional[MatmulStep]:
        """The result's own layout from one batched product (`tnconv.runtime.matmul_step`): einsum
        would lay it out its way and the plan copy it whole."""
        if len(taken) != 2:
            return None
        (first, first_legs, _), (second, second_legs, _) = taken
        return matmul_step(first, first_legs, second, second_legs, out, self._sizes)

    def _fold(self, taken: list, out: tuple[str, ...]) -> Optional[FoldStep]:
        """A fold step where lowering marked the pattern of this step as folded."""
        for (reg, legs, _), (other, other_legs, _) in (taken, taken[::-1]):
            if reg in self._patterns:
                return fold_step(other, other_legs, self._patterns[reg], legs, out,
                                 self._device)
        return None

    def _gram(self, taken: list, out: tuple[str, ...], sigs: Signatures) -> Optional[GramStep]:
        """A Gram step where two copies of one operand meet (KFC's Uᵀ U, KFAC-reduce's ūᵀ ū)."""
        if len(taken) != 2:
            return None
        (first, legs, _), (second, copy_legs, _) = taken
        if sigs.of(first) != sigs.of(second):
            return None
        shape = tuple(self._sizes[i] for i in legs)
        return gram_step(legs, copy_legs, shape, out, register=first)

    def _window(self, taken: list, out: tuple[str, ...]) -> Optional[Any]:
        """A step that runs a window view of an argument in place (`tnconv.runtime.window_steps`)."""
        if len(taken) != 2:
            return None
        for (reg, legs, _), (other, other_legs, _) in (taken, taken[::-1]):
            view = self.argument_views[reg] if reg < len(self.argument_views) else None
            step = window_step(reg, legs, view, other, other_legs, out, self._sizes)
            if step is not None:
                return step
        return None

    def _matrix(self, taken: list, out: tuple[str, ...]) -> Optional[MatrixChainStep]:
        """A matrix step where a constant [K, I] matrix replaces one leg of a data operand."""
        if len(taken) != 2:
            return None
        for (reg, legs, constant), (other, other_legs, other_constant) in (taken, taken[::-1]):
            if constant and not other_constant and self._registers[reg] is not None:
                return matrix_step(other, other_legs, reg, legs, out)
        return None

    def _prune_and_chain(self) -> None:
        """Drop steps whose result nothing reads (aliases of a chain's inner results), then
        merge consecutive matrix steps into chains (`tnconv.runtime.matrix_chain`)."""
        final = len(self._registers) - 1
        steps, outs = self._steps, self._data_step_outputs
        while True:
            read = {r for step in steps for r in step.inputs} | {final}
            kept = [n for n, out in enumerate(outs) if out in read]
            if len(kept) == len(steps):
                break
            steps, outs = [steps[n] for n in kept], [outs[n] for n in kept]
        readers = Counter(r for step in steps for r in step.inputs)
        chained, chained_outs = [], []
        for step, out in zip(steps, outs):
            if (isinstance(step, MatrixChainStep) and chained
                    and isinstance(chained[-1], MatrixChainStep)
                    and step.data == chained_outs[-1] and readers[step.data] == 1):
                merged = chained[-1].then(step)
                if merged is not None:
                    chained[-1], chained_outs[-1] = merged, out
                    continue
            chained.append(step)
            chained_outs.append(out)
        self._steps, self._data_step_outputs = chained, chained_outs

    def _bind_chains(self) -> None:
        """Matrix chains with their constant matrices and data shape fixed (after the scale
        is folded into the matrices): operands and shapes laid out once per plan."""
        self._steps = [step.bind(self._registers, tuple(self._sizes[leg] for leg in step.legs))
                       if isinstance(step, MatrixChainStep) else step for step in self._steps]

    def _argument_sums(self, device: torch.device, dtype: torch.dtype) -> None:
        """Sum steps on an argument's view, where that argument is read by nothing else,
        read the view before its merging reshapes (`tnconv.runtime.sum_steps.unmerged`), and a
        strided selection runs as one product with a mask (`tnconv.runtime.sum_steps.masked`)."""
        readers = Counter(r for step in self._steps for r in step.inputs)
        shared = {r for pair in self._same_as.items() if readers[pair[0]] for r in pair}
        views, shapes = list(self.argument_views), list(self.argument_shapes)
        for n, step in enumerate(self._steps):
            register = step.inputs[0]
            if (not isinstance(step, SumStep) or register >= len(views)
                    or views[register] is None or readers[register] != 1
                    or register in shared):
                continue
            found = unmerged(views[register], step)
            if found is not None:
                views[register], step = found
                self._steps[n] = step
            found = masked(views[register], step, device, dtype)
            if found is not None:
                (shapes[register], self._steps[n]), views[register] = found, None
        self.argument_views, self.argument_shapes = tuple(views), tuple(shapes)

    def __call__(self, *arguments: torch.Tensor) -> torch.Tensor:
        if self._strided is not None:
            x = arguments[0]
            if x.is_contiguous() and not x.requires_grad:
                size, stride, offset = self._strided
                view = x.as_strided(size, stride, x.storage_offset() + offset)
                return view.clone(memory_format=torch.contiguous_format).view(self.result_shape)
        result = self._evaluate(arguments)
        if self.scale != 1:  # in place unless the result may be a view of an argument
            result = result * self.scale if self._may_alias else result.mul_(self.scale)
        if self._may_alias and shares_memory(result, arguments):
            return result.clone(memory_format=torch.contiguous_format).view(self.result_shape)
        return result.contiguous().view(self.result_shape)

    def _evaluate(self, arguments: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The last step's register (before the scale and the final layout)."""
        registers = list(self._registers)
        for pos, (which, shape, view) in enumerate(
                zip(self.argument_of, self.argument_shapes, self.argument_views)):
            if pos in self._same_as:
                registers[pos] = registers[self._same_as[pos]]
                continue
            argument = arguments[which]
            registers[pos] = argument.reshape(shape) if view is None else view.apply_torch(argument)
        if self._scaled_argument is not None:
            registers[self._scaled_argument] = registers[self._scaled_argument] * self.program.scale
        for step, out in zip(self._steps, self._data_step_outputs):
            registers[out] = step(registers)
        return registers[-1]


def shares_memory(result: torch.Tensor, arguments: tuple[torch.Tensor, ...]) -> bool:
    """Whether `result` lies in the storage of one of `arguments` (is a view of it)."""
    storage = result.untyped_storage().data_ptr()
    return any(storage == a.untyped_storage().data_ptr() for a in arguments)


def plan_for(program: EinsumProgram, device: Any, dtype: torch.dtype) -> ExecutionPlan:
    """The cached `ExecutionPlan` of `program` on `device` / `dtype`."""
    device = torch.device(device)
    return _PLANS.get_or_create((program, str(device), dtype),
                                lambda: ExecutionPlan(program, device, dtype))
