"""`ConvSpec`: the frozen, hashable description of one convolution of any dimension.

>>> spec = ConvSpec(in_channels=3, out_channels=8, kernel_size=3, input_size=(32, 32),
...                 stride=2, padding=1)
>>> spec.ndim, spec.output_size
(2, (16, 16))
>>> ConvSpec(3, 8, kernel_size=4, input_size=(9,), padding="same").padding
((1, 2),)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

from tnconv.errors import TNConvError, argument_error
from tnconv.spec.index_pattern import PADDING_MODES, IndexPattern

__all__ = ["ConvSpec", "SpecError", "error_context", "MAX_SIZE"]

IntOrTuple = Union[int, Sequence[int]]
PaddingArg = Union[int, str, Sequence[int], Sequence[Sequence[int]]]
_SPEC = "ConvSpec"


class SpecError(TNConvError):
    """A `ConvSpec` field's error, kept as data (field, value, allowed) so that a public
    function can restate it in its caller's terms (`error_context`)."""

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        super().__init__(str(argument_error(_SPEC, field, value, allowed)))
        self.field, self.value, self.allowed = field, value, allowed


#: For `error_context`: ConvSpec field -> (the caller's argument, what the caller passed).
FieldNames = Mapping[str, tuple[str, Any]]


@contextlib.contextmanager
def error_context(operation: str, fields: Optional[FieldNames] = None) -> Iterator[None]:
    """Prefix any `TNConvError` raised inside with the public operation's name.

    A `ConvSpec` error is restated in the caller's terms: the field as the
    argument `fields` says it came from (a weight's shape gives kernel_size and
    out_channels), else under its own name (a stride is the caller's stride).

    >>> with error_context("tnconv.conv", {"kernel_size": ("weight", "tensor (1, 1, 5)")}):
    ...     ConvSpec(1, 1, kernel_size=5, input_size=(4,))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
      ...
    tnconv.errors.TNConvError: tnconv.conv: argument 'weight' got 'tensor (1, 1, 5)'; ...
    """
    try:
        yield
    except SpecError as err:
        argument, shown = (fields or {}).get(err.field, (err.field, err.value))
        allowed = err.allowed if argument == err.field else \
            f"{err.allowed} (for its {err.field}, {err.value!r})"
        raise argument_error(operation, argument, shown, allowed) from None
    except TNConvError as err:
        message = str(err)
        if message.startswith(f"{operation}:"):
            raise
        raise TNConvError(f"{operation}: {message}") from None


#: Largest size, stride, padding… accepted: torch's kernels index with 32-bit ints in
#: places, and the patterns are built as arrays (10**30 would overflow them).
MAX_SIZE = 2 ** 31 - 1


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_SIZE


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if not _is_int(value) or value < minimum:
        allowed = ("a positive int" if minimum == 1 else f"an int >= {minimum}") \
            + f" (at most {MAX_SIZE})"
        raise SpecError(name, value, allowed)
    return value


def _tuple(name: str, value: Any, ndim: int, minimum: int) -> tuple[int, ...]:
    """Broadcast an int to an `ndim`-tuple and check every entry is an int >= minimum."""
    allowed = (
        f"an int >= {minimum} or a tuple of {ndim} such ints" if ndim
        else f"an int >= {minimum} or a tuple of such ints"
    ) + f" (at most {MAX_SIZE})"
    values = (value,) * ndim if _is_int(value) else value
    if not isinstance(values, (tuple, list)) or len(values) != ndim:
        raise SpecError(name, value, allowed)
    if not all(_is_int(v) and v >= minimum for v in values):
        raise SpecError(name, value, allowed)
    return tuple(int(v) for v in values)


def _infer_ndim(*values: Any) -> int:
    """The number of spatial dimensions: input_size's length where it is a tuple (a
    wrong-length stride is then reported as the stride), else the others' common length."""
    if isinstance(values[0], (tuple, list)) and len(values[0]):
        return len(values[0])
    lengths = {len(v) for v in values if isinstance(v, (tuple, list))}
    lengths.discard(0)
    if len(lengths) != 1:
        raise SpecError(
            "input_size", values[0],
            "a tuple with one entry per spatial dimension (the number of spatial "
            "dimensions must agree across kernel_size, input_size, stride, dilation)",
        )
    return lengths.pop()


def _padding_pairs(padding: PaddingArg, ndim: int, kernel, stride, dilation) -> tuple:
    """Normalise every padding form to explicit ((left, right), ...) pairs."""
    allowed = (
        f"an int >= 0 (at most {MAX_SIZE}), a tuple of ints, a tuple of (left, right) pairs, "
        "'same' or 'valid'"
    )
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * ndim
        if padding == "same":
            if any(s != 1 for s in stride):
                raise SpecError("padding", padding,
                                "'same' only with stride 1 (as torch)")
            totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
            return tuple((t // 2, t - t // 2) for t in totals)
        raise SpecError("padding", padding, allowed)
    given = padding  # errors show the argument as the caller wrote it
    if _is_int(padding):
        padding = (padding,) * ndim
    if not isinstance(padding, (tuple, list)) or len(padding) != ndim:
        raise SpecError("padding", given, allowed + f" with {ndim} entries")
    pairs = []
    for entry in padding:
        pair = (entry, entry) if _is_int(entry) else entry
        if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                or not all(_is_int(p) and p >= 0 for p in pair)):
            raise SpecError("padding", given, allowed)
        pairs.append((int(pair[0]), int(pair[1])))
    return tuple(pairs)


@dataclass(frozen=True)
class ConvSpec:
    """Everything that defines one convolution; ints broadcast to N-tuples.

    `padding` is stored as explicit (left, right) pairs per spatial dimension;
    'same' puts the extra pixel on the right, as torch does. For a transposed
    convolution (`transposed=True`), `input_size` is the spatial size of the
    transposed convolution's input and the weight is [C_in, C_out/G, K...].

    Examples:
        >>> spec = ConvSpec(in_channels=4, out_channels=8, kernel_size=3, input_size=(9, 9),
        ...                 stride=2, padding="valid", groups=2)
        >>> spec.output_size, spec.weight_shape
        ((4, 4), (8, 2, 3, 3))
        >>> ConvSpec(8, 4, kernel_size=4, input_size=(5,), stride=2, padding=1,
        ...          transposed=True).output_size
        (10,)
    """

    in_channels: int
    out_channels: int
    kernel_size: IntOrTuple
    input_size: IntOrTuple
    stride: IntOrTuple = 1
    padding: PaddingArg = 0
    dilation: IntOrTuple = 1
    groups: int = 1
    padding_mode: str = "zeros"
    transposed: bool = False
    output_padding: IntOrTuple = 0

    def __post_init__(self) -> None:
        ndim = _infer_ndim(self.input_size, self.kernel_size, self.stride, self.dilation)
        fields = {
            "in_channels": _positive_int("in_channels", self.in_channels),
            "out_channels": _positive_int("out_channels", self.out_channels),
            "groups": _positive_int("groups", self.groups),
            "kernel_size": _tuple("kernel_size", self.kernel_size, ndim, 1),
            "input_size": _tuple("input_size", self.input_size, ndim, 1),
            "stride": _tuple("stride", self.stride, ndim, 1),
            "dilation": _tuple("dilation", self.dilation, ndim, 1),
            "output_padding": _tuple("output_padding", self.output_padding, ndim, 0),
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)
        if not isinstance(self.transposed, bool):  # before anything reads it as a flag
            raise SpecError("transposed", self.transposed, "True or False")
        if self.transposed and isinstance(self.padding, str):
            raise SpecError("padding", self.padding,
                            "ints or pairs for a transposed convolution (as torch)")
        given = self.padding if isinstance(self.padding, str) else None
        object.__setattr__(self, "padding", _padding_pairs(
            self.padding, ndim, self.kernel_size, self.stride, self.dilation))
        self._check(given)

    # ----------------------------------------------------------------- checks
    def _check(self, given_padding: Optional[str] = None) -> None:
        """`given_padding`: the padding as the caller wrote it ('same'), for messages."""
        for name in ("in_channels", "out_channels"):
            if getattr(self, name) % self.groups:
                raise SpecError(name, getattr(self, name),
                                f"a multiple of groups={self.groups}")
        if self.padding_mode not in PADDING_MODES:
            raise SpecError("padding_mode", self.padding_mode,
                            ", ".join(repr(m) for m in PADDING_MODES))
        if self.transposed:
            self._check_transposed()
        else:
            if any(self.output_padding):
                raise SpecError("output_padding", self.output_padding,
                                "0 unless transposed=True")
            self._check_forward(given_padding)

    def _check_forward(self, given_padding: Optional[str]) -> None:
        for d, (k, i, s, dil, (left, right)) in enumerate(zip(
                self.kernel_size, self.input_size, self.stride, self.dilation, self.padding)):
            reach = dil * (k - 1) + 1
            if reach > i + left + right:
                raise SpecError(
                    "kernel_size", self.kernel_size,
                    f"a dilated kernel extent ({reach} in dim {d}) no larger than the "
                    f"padded input ({i} + {left} + {right})")
            limit = {"reflect": i - 1, "circular": i}.get(self.padding_mode)
            if limit is not None and max(left, right) > limit:
                derived = ("" if given_padding is None
                           else f" ({given_padding!r} pads {self.padding} here)")
                raise SpecError(
                    "padding", given_padding or self.padding,
                    f"at most {limit} in dim {d} for padding_mode={self.padding_mode!r} "
                    f"with input size {i}{derived}")

    def _check_transposed(self) -> None:
        if self.padding_mode != "zeros":
            raise SpecError("padding_mode", self.padding_mode,
                            "'zeros' for a transposed convolution (as torch)")
        for d, (op, s, dil) in enumerate(zip(self.output_padding, self.stride, self.dilation)):
            if op >= max(s, dil):
                raise SpecError(
                    "output_padding", self.output_padding,
                    f"values smaller than stride or dilation (dim {d}: stride {s}, "
                    f"dilation {dil})")
        if any(o < 1 for o in self.output_size):
            raise SpecError("padding", self.padding,
                            f"padding that leaves a positive output size, "
                            f"got output size {self.output_size}")

    # ------------------------------------------------------------- derived
    @property
    def ndim(self) -> int:
        """Number of spatial dimensions N."""
        return len(self.kernel_size)  # type: ignore[arg-type]

    @cached_property
    def output_size(self) -> tuple[int, ...]:
        """Spatial size of the result of the (transposed) convolution."""
        sizes = []
        for k, i, s, d, (left, right), op in zip(
                self.kernel_size, self.input_size, self.stride, self.dilation,
                self.padding, self.output_padding):
            if self.transposed:
                sizes.append((i - 1) * s - left - right + d * (k - 1) + op + 1)
            else:
                sizes.append((i + left + right - d * (k - 1) - 1) // s + 1)
        return tuple(sizes)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """Shape of the kernel tensor, in torch's layout."""
        g = self.groups
        if self.transposed:
            return (self.in_channels, self.out_channels // g, *self.kernel_size)
        return (self.out_channels, self.in_channels // g, *self.kernel_size)

    def patterns(self) -> tuple[IndexPattern, ...]:
        """One index pattern Π[k, o, i] per spatial dimension (computed once per spec).

        A transposed convolution uses the pattern of the convolution it is the
        adjoint of: its own input plays the role of `o`, its output that of `i`.
        """
        return self._patterns

    @cached_property
    def _patterns(self) -> tuple[IndexPattern, ...]:
        out = self.output_size
        result = []
        for d in range(self.ndim):
            i, o = (out[d], self.input_size[d]) if self.transposed else (self.input_size[d], out[d])
            result.append(IndexPattern(
                kernel_size=self.kernel_size[d], stride=self.stride[d],  # type: ignore[index]
                dilation=self.dilation[d], padding=self.padding[d],  # type: ignore[index]
                input_size=i, output_size=o, mode=self.padding_mode))
        return tuple(result)

    def replace(self, **changes: Any) -> "ConvSpec":
        """A copy with some fields changed (validated again)."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name, value in changes.items():
            if name not in values:
                raise argument_error("ConvSpec.replace", name, value,
                                     "the fields " + ", ".join(values))
        values.update(changes)
        return ConvSpec(**values)

    # ---------------------------------------------------------- from torch
    @classmethod
    def from_module(cls, module: Any, x: Any) -> "ConvSpec":
        """Read a `torch.nn.Conv{1,2,3}d` / `ConvTranspose{1,2,3}d` and its input `x`.

        `x` is the layer's input, batched `[N, C, *spatial]` or unbatched `[C, *spatial]`.
        """
        from tnconv.spec.modules import spec_from_module

        return spec_from_module(cls, module, x)
