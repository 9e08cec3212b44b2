"""The benchmarked operations: each a PyTorch reference and the tnconv calls it races.

Routes of every operation (ref, auto and tn are timed interleaved, in this order;
tn_norewrite after them, on its own):

- ``ref``: the PyTorch reference (`benchmarks.references`);
- ``auto``: the public tnconv function with its defaults (``strategy="auto"``);
- ``tn``: the same function with ``strategy="tn"`` (always a tensor-network contraction);
- ``tn_norewrite``: the tensor-network route with ``rewrite=False``, through the public
  function where it takes ``rewrite``, else ``tnconv.compile(op, spec, strategy="tn",
  rewrite=False)`` called on the same tensors.

tnconv functions are looked up at run time (`getattr`): a function or an option
that does not exist yet gives the route the status "n/a" instead of failing.
A ``tn`` or ``tn_norewrite`` route whose program would hold more than `MEMORY_LIMIT`
bytes of dense constants and intermediates is skipped (the estimate is read from the
compiled program; e.g. an unrewritten 16,000-sample 1d unfold needs a 1.9 GiB pattern).

>>> import torch
>>> from benchmarks.case import make_case
>>> from benchmarks.layers import LAYERS
>>> calls = route_calls(OPS["forward"], make_case(LAYERS["resnet_1x1_down"], torch.device("cpu")))
>>> list(calls), calls["ref"]().shape
(['ref', 'auto', 'tn', 'tn_norewrite'], torch.Size([4, 128, 28, 28]))
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from math import prod
from typing import Callable, Optional, Union

import torch

import tnconv

from . import references as ref
from .case import Case

__all__ = ["Op", "OPS", "ROUTES", "TN_ROUTES", "MEMORY_LIMIT", "route_calls", "select_ops"]

ROUTES = ("ref", "auto", "tn", "tn_norewrite")
TN_ROUTES = ("auto", "tn", "tn_norewrite")
#: Largest estimated footprint (bytes) of a tensor-network program that is run.
MEMORY_LIMIT = 1024 ** 3

Call = Callable[[], torch.Tensor]
PublicCall = Callable[[Callable, Case, dict], torch.Tensor]


@dataclass(frozen=True)
class Op:
    """One operation: its reference, its public tnconv functions and its compiled name.

    `public` / `call` serve regular layers, `public_t` / `call_t` transposed ones
    (None: the operation does not apply). `on_transposed_spec` marks the
    transposed convolution, which runs on the case's `tspec` and `tin`.
    """

    name: str
    compile_op: str
    reference: Callable[[Case], torch.Tensor]
    public: Optional[str]
    call: Optional[PublicCall]
    public_t: Optional[str] = None
    call_t: Optional[PublicCall] = None
    on_transposed_spec: bool = False
    factor: bool = False

    def entry(self, case: Case) -> tuple[Optional[str], Optional[PublicCall]]:
        """The public function's name and its call for the case's kind of layer."""
        if case.layer.transposed:
            return self.public_t, self.call_t
        return self.public, self.call

    def not_applicable(self, case: Case) -> Optional[str]:
        """Why this operation does not apply to the case's layer (None if it does)."""
        if self.entry(case)[0] is None:
            return "—"
        if self.on_transposed_spec and case.tspec is None:
            return "— (asymmetric padding)"
        return None

    def spec_and_input(self, case: Case) -> tuple[tnconv.ConvSpec, torch.Tensor]:
        if self.on_transposed_spec:
            return case.tspec, case.tin  # type: ignore[return-value]
        return case.spec, case.x


def _hyper(case: Case) -> tuple:
    layer = case.layer
    return layer.stride, layer.padding, layer.dilation, layer.groups, layer.padding_mode


def _hyper_t(spec: tnconv.ConvSpec) -> tuple:
    """Transposed-conv hyper-parameters in torch's order after the tensors."""
    padding = tuple(left for left, _ in spec.padding)
    return spec.stride, padding, spec.output_padding, spec.groups, spec.dilation


def _transposed(fn: Callable, case: Case, kw: dict) -> torch.Tensor:
    return fn(case.tin, case.w, None, *_hyper_t(case.tspec), **kw)


def _unfold_t(fn: Callable, case: Case, kw: dict) -> torch.Tensor:
    stride, padding, output_padding, _, dilation = _hyper_t(case.spec)
    return fn(case.x, case.layer.kernel_size, stride, padding, output_padding, dilation, **kw)


def _factor(fn: Callable, case: Case, kw: dict) -> torch.Tensor:
    return fn(case.module, case.x, **kw)


_LIST = (
    Op("forward", "forward", ref.conv, "conv",
       lambda fn, c, kw: fn(c.x, c.w, None, *_hyper(c), **kw)),
    Op("input_vjp", "input_vjp", ref.input_vjp, "conv_input_vjp",
       lambda fn, c, kw: fn(tuple(c.x.shape), c.w, c.gy, *_hyper(c), **kw),
       "conv_transpose_input_vjp",
       lambda fn, c, kw: fn(tuple(c.x.shape), c.w, c.gy, *_hyper_t(c.spec), **kw)),
    Op("weight_vjp", "weight_vjp", ref.weight_vjp, "conv_weight_vjp",
       lambda fn, c, kw: fn(c.x, tuple(c.w.shape), c.gy, *_hyper(c), **kw),
       "conv_transpose_weight_vjp",
       lambda fn, c, kw: fn(c.x, tuple(c.w.shape), c.gy, *_hyper_t(c.spec), **kw)),
    Op("conv_transpose", "forward", ref.conv_transpose, "conv_transpose", _transposed,
       "conv_transpose", _transposed, on_transposed_spec=True),
    Op("unfold", "unfold", ref.unfold, "unfold",
       lambda fn, c, kw: fn(c.x, c.layer.kernel_size, *_hyper(c)[:3],
                            padding_mode=c.layer.padding_mode, **kw),
       "unfold_transpose", _unfold_t),
    Op("kfc", "kfc", ref.kfc, "kfc", _factor, "kfc", _factor, factor=True),
    Op("kfac_reduce", "kfac_reduce", ref.kfac_reduce, "kfac_reduce", _factor, "kfac_reduce",
       _factor, factor=True),
)
OPS: dict[str, Op] = {op.name: op for op in _LIST}


def select_ops(names: Optional[str]) -> list[Op]:
    """Operations named in a comma-separated list (all when None)."""
    chosen = tuple(OPS) if names is None else tuple(n.strip() for n in names.split(",") if n)
    unknown = [n for n in chosen if n not in OPS]
    if unknown:
        raise SystemExit(f"unknown ops {unknown}; known: {', '.join(OPS)}")
    return [OPS[n] for n in chosen]


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def _compiled(op: Op, case: Case, **options) -> Union[Call, str]:
    """`tnconv.compile(op, spec, **options)` bound to the case's tensors."""
    spec, x = op.spec_and_input(case)
    try:
        compiled = tnconv.compile(op.compile_op, spec, **options)
    except (tnconv.TNConvError, TypeError) as err:
        return f"n/a ({str(err).splitlines()[0][:60]})"
    tensors = {"input": x, "weight": case.w, "grad_output": case.gy}
    missing = [r for r in compiled.arguments if r not in tensors]
    if missing:
        return f"n/a (compiled argument {missing[0]!r})"
    args = [tensors[r] for r in compiled.arguments]
    return lambda: compiled(*args)


def estimated_bytes(op: Op, case: Case, rewrite: bool) -> Optional[int]:
    """Dense constants plus the largest intermediate of the TN program, in bytes (or None)."""
    spec, x = op.spec_and_input(case)
    try:
        program = tnconv.compile(op.compile_op, spec, strategy="tn",
                                 rewrite=rewrite).program_for(x.shape[0])
    except Exception:  # noqa: BLE001 — no estimate for an op the compiler does not know
        return None
    constants = {c.value: prod(c.shape) for c in program.dense_constants}  # shared: once
    elements = sum(constants.values()) + program.largest_intermediate
    return elements * x.element_size()


def _guard(op: Op, case: Case, route: str) -> Optional[str]:
    """A reason to skip a tensor-network route whose program would not fit in memory.

    The default route is never skipped: whatever it does is what users get.
    """
    if route == "auto":
        return None
    size = estimated_bytes(op, case, rewrite=route != "tn_norewrite")
    if size is not None and size > MEMORY_LIMIT:
        return f"skipped (needs ~{size / 1024 ** 3:.1f} GiB)"
    return None


def _public(op: Op, case: Case, fn: Callable, route: str) -> Union[Call, str]:
    call = op.entry(case)[1]
    if route == "auto":
        return lambda: call(fn, case, {})
    if not _accepts(fn, "strategy"):
        return "n/a (no strategy=)"
    if route == "tn":
        return lambda: call(fn, case, {"strategy": "tn"})
    if _accepts(fn, "rewrite"):
        return lambda: call(fn, case, {"strategy": "tn", "rewrite": False})
    return _compiled(op, case, strategy="tn", rewrite=False)


def route_calls(op: Op, case: Case,
                routes: tuple[str, ...] = ROUTES) -> dict[str, Union[Call, str]]:
    """A zero-argument call per route, or the reason (a string) why the route does not run."""
    reason = op.not_applicable(case)
    name = op.entry(case)[0]
    fn = getattr(tnconv, name, None) if name else None
    calls: dict[str, Union[Call, str]] = {}
    for route in routes:
        if reason is not None:
            calls[route] = reason
        elif route == "ref":
            calls[route] = lambda: op.reference(case)
        elif fn is None:
            calls[route] = f"n/a (no tnconv.{name})"
        else:
            calls[route] = _guard(op, case, route) or _public(op, case, fn, route)
    return calls
