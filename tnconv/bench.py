"""`tnconv bench`: one operation timed against its PyTorch reference, in the same process.

The references are torch's own kernels where torch has one (`F.conv{1,2,3}d`,
`F.conv_transpose{1,2,3}d`, `torch.nn.grad.conv{1,2,3}d_input/_weight`) and
the im2col way elsewhere: pad, unfold (`F.unfold` in 2d, `Tensor.unfold`
along each dimension otherwise), then a matrix product, as KFAC libraries
compute their factors. Calls run in interleaved rounds (the order alternates
each round), the report gives medians and their ratio.

>>> import torch
>>> from tnconv.spec.conv_spec import ConvSpec
>>> spec = ConvSpec(2, 4, kernel_size=3, input_size=(6, 6), padding=1, padding_mode="reflect")
>>> x = torch.rand(3, 2, 6, 6, dtype=torch.float64)
>>> ours, reference = calls("kfc", spec, x)
>>> bool(relative_difference(ours(), reference()) < 1e-12)
True
"""

from __future__ import annotations

import statistics
import sys
import time
from math import prod
from typing import Callable, Optional, TextIO

import torch
import torch.nn.functional as F

from tnconv.errors import argument_error
from tnconv.spec.conv_spec import ConvSpec

__all__ = ["OPERATIONS", "calls", "im2col", "kfc_reference", "kfac_reduce_reference",
           "relative_difference", "time_interleaved", "ProgressBar", "bench"]

#: Operations `tnconv bench` times, with the reference it races.
OPERATIONS = {
    "forward": "F.conv{N}d / F.conv_transpose{N}d (after F.pad for other padding modes)",
    "input_vjp": "torch.nn.grad.conv{N}d_input",
    "weight_vjp": "torch.nn.grad.conv{N}d_weight",
    "unfold": "im2col: F.pad + F.unfold (2d) or Tensor.unfold per dimension",
    "kfc": "im2col + matmul, S/(N·∏O)",
    "kfac_reduce": "im2col, mean over positions, matmul, (1/N) Σ ū ūᵀ",
}
Call = Callable[[], torch.Tensor]


def _pad(x: torch.Tensor, spec: ConvSpec) -> torch.Tensor:
    pads = [p for pair in reversed(spec.padding) for p in pair]  # type: ignore[union-attr]
    if not any(pads):
        return x
    return F.pad(x, pads, mode="constant" if spec.padding_mode == "zeros" else spec.padding_mode)


def im2col(x: torch.Tensor, spec: ConvSpec) -> torch.Tensor:
    """The unfolded input [N, C·∏K, ∏O] of a (non-transposed) convolution, the im2col way."""
    xp = _pad(x, spec)
    if spec.ndim == 2:
        return F.unfold(xp, spec.kernel_size, dilation=spec.dilation, stride=spec.stride)
    for d, (k, s, dil) in enumerate(zip(spec.kernel_size, spec.stride, spec.dilation)):
        xp = xp.unfold(2 + d, dil * (k - 1) + 1, s)[..., ::dil]  # a new last dim per kernel dim
    n, c, nd = x.shape[0], x.shape[1], spec.ndim
    order = (0, 1, *range(2 + nd, 2 + 2 * nd), *range(2, 2 + nd))  # [N, C, *K, *O]
    return xp.permute(order).reshape(n, c * prod(spec.kernel_size), -1)


def _grouped_patches(x: torch.Tensor, spec: ConvSpec, bias: bool) -> torch.Tensor:
    """[N, G, D, ∏O] patches per channel group, with a row of ones for the bias."""
    u = im2col(x, spec)
    u = u.view(u.shape[0], spec.groups, -1, u.shape[-1])
    return torch.cat([u, u.new_ones(*u.shape[:2], 1, u.shape[-1])], 2) if bias else u


def kfc_reference(x: torch.Tensor, spec: ConvSpec, reduction: str = "mean",
                  bias: bool = False) -> torch.Tensor:
    """KFC factor [G, D, D] through the unfolded input ("mean": S/(N·∏O))."""
    u = _grouped_patches(x, spec, bias)
    s = torch.einsum("ngdo,ngeo->gde", u, u)
    return s / {"mean": u.shape[0] * u.shape[-1], "batch": u.shape[0], "sum": 1}[reduction]


def kfac_reduce_reference(x: torch.Tensor, spec: ConvSpec, reduction: str = "mean",
                          bias: bool = False) -> torch.Tensor:
    """KFAC-reduce factor [G, D, D] through the unfolded input averaged over positions."""
    mean = _grouped_patches(x, spec, False).mean(-1)
    if bias:
        mean = torch.cat([mean, mean.new_ones(*mean.shape[:2], 1)], 2)
    s = torch.einsum("ngd,nge->gde", mean, mean)
    return s / (mean.shape[0] if reduction == "mean" else 1)


def _hyper(spec: ConvSpec) -> dict:
    return dict(stride=spec.stride, dilation=spec.dilation, groups=spec.groups)


def _symmetric_padding(spec: ConvSpec) -> Optional[list[int]]:
    """The padding as torch's kernels take it, or None where they cannot (asymmetric pairs,
    other padding modes)."""
    if spec.padding_mode != "zeros" or any(a != b for a, b in spec.padding):  # type: ignore
        return None
    return [a for a, _ in spec.padding]  # type: ignore[union-attr]


def _torch_reference(op: str, spec: ConvSpec, x: torch.Tensor, w: torch.Tensor,
                     g: torch.Tensor) -> Optional[Call]:
    n, padding = spec.ndim, _symmetric_padding(spec)
    if spec.transposed:
        conv_t = getattr(F, f"conv_transpose{n}d")
        return None if op != "forward" or padding is None else lambda: conv_t(
            x, w, None, spec.stride, padding, spec.output_padding, spec.groups, spec.dilation)
    if op == "forward":
        conv = getattr(F, f"conv{n}d")
        return lambda: conv(_pad(x, spec), w, **_hyper(spec))
    if op in ("input_vjp", "weight_vjp") and padding is not None:
        if op == "input_vjp":
            grad = getattr(torch.nn.grad, f"conv{n}d_input")
            return lambda: grad(x.shape, w, g, padding=padding, **_hyper(spec))
        grad = getattr(torch.nn.grad, f"conv{n}d_weight")
        return lambda: grad(x, w.shape, g, padding=padding, **_hyper(spec))
    references = {"unfold": im2col, "kfc": kfc_reference, "kfac_reduce": kfac_reduce_reference}
    return None if op not in references else lambda: references[op](x, spec)


def _tnconv_call(op: str, spec: ConvSpec, x: torch.Tensor, w: torch.Tensor, g: torch.Tensor,
                 strategy: str) -> Call:
    import tnconv
    from tnconv.nn import functional

    common = dict(stride=spec.stride, dilation=spec.dilation, strategy=strategy)
    if spec.transposed:
        return lambda: tnconv.conv_transpose(
            x, w, None, padding=_symmetric_padding(spec), output_padding=spec.output_padding,
            groups=spec.groups, **common)
    common.update(padding=spec.padding, padding_mode=spec.padding_mode)
    if op == "unfold":
        return lambda: tnconv.unfold(x, spec.kernel_size, **common)
    common["groups"] = spec.groups
    table: dict[str, Call] = {
        "forward": lambda: tnconv.conv(x, w, **common),
        "input_vjp": lambda: tnconv.conv_input_vjp(x.shape, w, g, **common),
        "weight_vjp": lambda: tnconv.conv_weight_vjp(x, w.shape, g, **common),
        "kfc": lambda: functional.kfc(x, spec.kernel_size, **common),
        "kfac_reduce": lambda: functional.kfac_reduce(x, spec.kernel_size, **common),
    }
    return table[op]


def calls(op: str, spec: ConvSpec, x: torch.Tensor, strategy: str = "auto") -> tuple[Call, Call]:
    """(tnconv's call, the PyTorch reference's call) of `op` on input `x` (random weight and
    cotangent of x's dtype and device, seeded)."""
    if op not in OPERATIONS:
        raise argument_error("tnconv bench", "op", op, ", ".join(OPERATIONS))
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(spec.weight_shape, generator=generator).to(x)
    g = torch.randn(x.shape[0], spec.out_channels, *spec.output_size,
                    generator=generator).to(x)  # type: ignore[misc]
    reference = _torch_reference(op, spec, x, w, g) if spec.ndim <= 3 else None
    if reference is None:
        kind = "transposed convolution" if spec.transposed else "convolution"
        raise argument_error("tnconv bench", "op", op,
                             f"an operation with a PyTorch kernel for this {spec.ndim}d {kind} "
                             "(forward for any padding; VJPs need symmetric zero padding; "
                             "unfold and the KFAC factors need a non-transposed one; at most "
                             "3 spatial dims)")
    return _tnconv_call(op, spec, x, w, g, strategy), reference


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual − expected| / max |expected| (0 for two zero tensors)."""
    scale = expected.abs().max().clamp_min(torch.finfo(expected.dtype).tiny)
    return ((actual - expected).abs().max() / scale).item()


class ProgressBar:
    """A one-line bar, redrawn on `stream` (stderr) after each step, ended by `close()`."""

    def __init__(self, total: int, label: str, stream: TextIO = sys.stderr, width: int = 30):
        self.total, self.label, self.stream, self.width, self.done = total, label, stream, width, 0

    def step(self) -> None:
        self.done += 1
        filled = self.width * self.done // max(self.total, 1)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                          f"{self.done}/{self.total}")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def time_interleaved(first: Call, second: Call, rounds: int,
                     progress: Optional[ProgressBar] = None) -> tuple[float, float]:
    """Median seconds of `first` and `second` over `rounds` rounds; the order alternates."""
    times: tuple[list[float], list[float]] = ([], [])
    pair = (first, second)
    for r in range(rounds):
        for which in ((0, 1) if r % 2 == 0 else (1, 0)):
            start = time.perf_counter()
            pair[which]()
            times[which].append(time.perf_counter() - start)
        if progress is not None:
            progress.step()
    return statistics.median(times[0]), statistics.median(times[1])


def bench(op: str, spec: ConvSpec, batch: int, *, strategy: str = "auto", rounds: int = 15,
          dtype: torch.dtype = torch.float32, stream: TextIO = sys.stdout,
          progress_stream: TextIO = sys.stderr) -> float:
    """Time `op` against its reference and print the medians and their ratio; returns it."""
    x = torch.randn(batch, spec.in_channels, *spec.input_size,  # type: ignore[misc]
                    generator=torch.Generator().manual_seed(1)).to(dtype)
    ours, reference = calls(op, spec, x, strategy)
    difference = relative_difference(ours(), reference())  # also the warm-up (compilation)
    ours(), reference()
    progress = ProgressBar(rounds, f"bench {op}", progress_stream)
    ours_s, reference_s = time_interleaved(ours, reference, rounds, progress)
    progress.close()
    ratio = ours_s / reference_s
    print(f"{op} on {spec}, batch {batch}, {dtype}, {torch.get_num_threads()} threads, "
          f"{rounds} interleaved rounds (medians)", file=stream)
    print(f"  tnconv (strategy={strategy!r})  {ours_s * 1e3:10.3f} ms", file=stream)
    print(f"  PyTorch reference       {reference_s * 1e3:10.3f} ms   "
          f"{OPERATIONS[op].replace('{N}', str(spec.ndim))}", file=stream)
    print(f"  ratio tnconv / PyTorch  {ratio:10.3f}   (below 1: tnconv is faster)", file=stream)
    print(f"  max relative difference {difference:10.1e}", file=stream)
    return ratio
