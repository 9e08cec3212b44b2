"""Fuzz cases: a drawn convolution geometry (N = 1..4) and float64 references for it.

A `Geometry` is one valid convolution with every hyper-parameter as a caller
passes it (padding as an int, a tuple, pairs, 'same' or 'valid') and as the
references need it (explicit (left, right) pairs). The references never use
tnconv: torch's convolutions, padding and autograd for N ≤ 3, the explicit
sum over kernel offsets of `tests.references` for N = 4; transposed
convolutions, VJPs and fold are adjoints computed by torch's autograd.

>>> g = Geometry(ndim=1, batch=2, in_channels=2, out_channels=2, groups=1, kernel=(3,),
...              stride=(1,), padding=1, pairs=((1, 1),), dilation=(1,), mode="zeros",
...              transposed=False, output_padding=(0,), size=(5,))
>>> g.output_size, g.weight_shape
((5,), (2, 2, 3))
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod
from typing import Any

import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from tests import references

__all__ = ["Geometry", "geometries", "NON_FINITE_INPUTS", "random_tensor", "conv_ref",
           "operation_ref", "unfold_ref"]

#: Out of scope for now (issue 17, item 12: IEEE semantics of the tensor-network route):
#: switch on to draw inputs with inf and nan entries; the comparison handles them.
NON_FINITE_INPUTS = False

MODES = ("zeros", "circular", "reflect", "replicate")


@dataclass(frozen=True)
class Geometry:
    """One valid (transposed) convolution; `size` is the spatial size of its input."""

    ndim: int
    batch: int
    in_channels: int
    out_channels: int
    groups: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: Any
    pairs: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    mode: str
    transposed: bool
    output_padding: tuple[int, ...]
    size: tuple[int, ...]

    @property
    def output_size(self) -> tuple[int, ...]:
        rows = zip(self.kernel, self.size, self.stride, self.dilation, self.pairs,
                   self.output_padding)
        if self.transposed:
            return tuple((i - 1) * s - l - r + d * (k - 1) + op + 1
                         for k, i, s, d, (l, r), op in rows)
        return tuple((i + l + r - d * (k - 1) - 1) // s + 1 for k, i, s, d, (l, r), _ in rows)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.batch, self.in_channels, *self.size)

    @property
    def result_shape(self) -> tuple[int, ...]:
        return (self.batch, self.out_channels, *self.output_size)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        g = self.groups
        if self.transposed:
            return (self.in_channels, self.out_channels // g, *self.kernel)
        return (self.out_channels, self.in_channels // g, *self.kernel)

    @property
    def patch_length(self) -> int:
        return self.in_channels // self.groups * prod(self.kernel)

    def hyper(self) -> dict[str, Any]:
        """The keyword arguments of `tnconv.ConvSpec` beyond channels, kernel and size."""
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, padding_mode=self.mode, transposed=self.transposed,
                    output_padding=self.output_padding)

    def spec(self) -> Any:
        import tnconv

        return tnconv.ConvSpec(self.in_channels, self.out_channels, self.kernel, self.size,
                               **self.hyper())


def _padding(draw: Any, ndim: int, limit: int, transposed: bool,
             stride_one: bool) -> tuple[Any, tuple]:
    """(padding as passed, explicit pairs); every pad at most `limit`."""
    kinds = ["int", "tuple", "pairs"] + ([] if transposed else ["valid"])
    kinds += ["same"] if stride_one and not transposed else []
    kind = draw(st.sampled_from(kinds))
    pad = st.integers(0, limit)
    if kind == "int":
        p = draw(pad)
        return p, ((p, p),) * ndim
    if kind == "tuple":
        ps = tuple(draw(pad) for _ in range(ndim))
        return ps, tuple((p, p) for p in ps)
    if kind == "pairs":
        pairs = tuple((draw(pad), draw(pad)) for _ in range(ndim))
        return pairs, pairs
    return kind, ((0, 0),) * ndim  # 'valid'; 'same' is resolved by the caller


@st.composite
def geometries(draw: Any, ndims=(1, 2, 3, 4), transposed: Any = False, modes=MODES,
               module_padding: bool = False, empty_batch: bool = False) -> Geometry:
    """A valid geometry; `transposed` may be True, False or None (either);
    `module_padding`: padding in a form torch's modules take (no pairs)."""
    ndim = draw(st.sampled_from(ndims))
    transposed = draw(st.booleans()) if transposed is None else transposed
    small = ndim == 4  # keep the 4-d references (explicit loops) fast
    groups = draw(st.sampled_from([1, 2, 3]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 2 if small else 3)) for _ in range(ndim))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
    stride = tuple(draw(st.integers(1, 2 if small else 3)) for _ in range(ndim))
    if not transposed and draw(st.booleans()):
        stride = (1,) * ndim  # 'same' needs stride 1
    mode = "zeros" if transposed else draw(st.sampled_from(modes))
    while True:
        padding, pairs = _padding(draw, ndim, 1 if small else 2, transposed,
                                  stride_one=all(s == 1 for s in stride))
        if not (module_padding and isinstance(padding, tuple)
                and isinstance(padding[0], tuple)):
            break
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        pairs = tuple((t // 2, t - t // 2) for t in totals)
    reach = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    widest = max(max(pair) for pair in pairs)
    floor = {"reflect": widest + 1, "circular": max(widest, 1)}.get(mode, 1)
    extra = st.integers(0, 1 if small else 3)
    size = tuple(max(r, floor) + draw(extra) for r in reach)
    output_padding = (0,) * ndim
    if transposed:
        size = tuple(draw(st.integers(1, 2 if small else 4)) for _ in range(ndim))
        output_padding = tuple(draw(st.integers(0, max(s, d) - 1))
                               for s, d in zip(stride, dilation))
    batch = draw(st.sampled_from([0, 1, 2, 3] if empty_batch else [1, 2, 3]))
    geometry = Geometry(ndim, batch, cin, cout, groups, kernel, stride, padding, pairs, dilation,
                        mode, transposed, output_padding, size)
    if transposed and min(geometry.output_size) < 1:
        geometry = replace(geometry, padding=0, pairs=((0, 0),) * ndim)
    return geometry


def random_tensor(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Float64 values in [-1, 1) (on a grid of 1/64, exact in every float dtype), with inf
    and nan entries where `NON_FINITE_INPUTS` is on."""
    generator = torch.Generator().manual_seed(seed)
    t = (torch.randint(-64, 64, shape, generator=generator) / 64).to(torch.float64)
    if NON_FINITE_INPUTS and t.numel():
        flat = t.view(-1)
        picks = torch.randint(0, t.numel(), (2,), generator=generator)
        flat[picks[0]], flat[picks[1]] = float("inf"), float("nan")
    return t


# ------------------------------------------------------------------- references
def conv_ref(x: torch.Tensor, w: torch.Tensor, g: Geometry) -> torch.Tensor:
    """The convolution `g` describes (transposed or not), in x's dtype and device."""
    if g.transposed:
        return _transposed_ref(x, w, g)
    if g.ndim <= 3:
        return references.torch_conv(x, w, g.stride, g.pairs, g.dilation, g.groups, g.mode)
    return references.conv_nd(x, w, g.stride, g.pairs, g.dilation, g.groups, g.mode)


def _transposed_ref(x: torch.Tensor, w: torch.Tensor, g: Geometry) -> torch.Tensor:
    """A transposed convolution is the adjoint of the convolution from its output to its
    input (the positions that output padding adds meet a zero cotangent)."""
    forward = replace(g, transposed=False, in_channels=g.out_channels,
                      out_channels=g.in_channels, size=g.output_size)
    with torch.enable_grad():
        y0 = torch.zeros(x.shape[0], g.out_channels, *g.output_size, dtype=x.dtype,
                         device=x.device, requires_grad=True)
        z = conv_ref(y0, w, forward)
        cotangent = F.pad(x, [p for d in reversed(range(g.ndim))
                              for p in (0, z.shape[2 + d] - x.shape[2 + d])])
        return torch.autograd.grad(z, y0, cotangent,
                                   create_graph=x.requires_grad or w.requires_grad)[0]


def _sources(g: Geometry, d: int) -> list[list[int]]:
    """[K, O] of dimension d: the input pixel tap k reads at output pixel o, or -1 (a zero);
    written from the definitions, not from tnconv's patterns."""
    k_, s, dil, (left, _), size = (g.kernel[d], g.stride[d], g.dilation[d], g.pairs[d],
                                   g.size[d])
    out = g.output_size[d]
    if g.transposed:  # output o = i·s + k·dil - left
        steps = [[o + left - k * dil for o in range(out)] for k in range(k_)]
        return [[t // s if t % s == 0 and 0 <= t // s < size else -1 for t in row]
                for row in steps]
    padded = references._pad_indices(size, left, g.pairs[d][1], g.mode)
    return [[padded[o * s + k * dil] for o in range(out)] for k in range(k_)]


def unfold_ref(x: torch.Tensor, g: Geometry) -> torch.Tensor:
    """[N, C·∏K, ∏O] of the (transposed) convolution `g`, F.unfold's layout: torch's
    `F.unfold` where it applies (2-d, zero padding, symmetric), else a selection by
    index tables (no arithmetic: an inf stays where the definition puts it)."""
    n, c = x.shape[:2]
    if (g.ndim == 2 and not g.transposed and g.mode == "zeros" and n
            and all(left == right for left, right in g.pairs)):
        return F.unfold(x, g.kernel, g.dilation, [p for p, _ in g.pairs], g.stride)
    for d in range(g.ndim):  # dim 2 + 2d holds I_d; it becomes (K_d, O_d)
        dim = 2 + 2 * d
        table = torch.tensor(_sources(g, d), device=x.device)
        zero = torch.zeros_like(x.narrow(dim, 0, 1))
        x = torch.cat([x, zero], dim).index_select(
            dim, torch.where(table < 0, x.shape[dim], table).reshape(-1))
        x = x.unflatten(dim, table.shape)
    taps = [2 + 2 * d for d in range(g.ndim)]
    x = x.permute(0, 1, *taps, *[t + 1 for t in taps])
    return x.reshape(n, c * prod(g.kernel), prod(g.output_size))


def _gradient(f: Any, shape: tuple[int, ...], like: torch.Tensor,
              cotangent: torch.Tensor) -> torch.Tensor:
    """The gradient at 0 of the linear map f, against `cotangent`."""
    with torch.enable_grad():
        a = torch.zeros(shape, dtype=like.dtype, device=like.device, requires_grad=True)
        y = f(a)
        if not y.requires_grad:  # no samples: nothing depends on a
            return torch.zeros_like(a)
        gradient = torch.autograd.grad(y, a, cotangent, allow_unused=True)[0]
        return torch.zeros_like(a) if gradient is None else gradient


def _per_sample(f: Any, x: torch.Tensor, gout: torch.Tensor, g: Geometry) -> torch.Tensor:
    grads = [_gradient(lambda w: f(x[n:n + 1], w), g.weight_shape, x, gout[n:n + 1])
             for n in range(x.shape[0])]
    return torch.stack(grads) if grads else x.new_zeros((0, *g.weight_shape))


CURVATURE = ("batch_l2", "sum_grad_squared", "variance", "ggn_diagonal", "ggn_gram",
             "hessian_diagonal_weight", "hessian_diagonal_input")


def _curvature_ref(name: str, g: Geometry, tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The curvature quantities (`tnconv.curvature`'s conventions) from per-sample weight
    gradients by autograd, and the input's Hessian diagonal from the layer's Jacobian."""
    def conv(a, w):
        return conv_ref(a, w, g)

    if name == "hessian_diagonal_input":
        w, h = tensors
        rows = []
        for n in range(h.shape[0]):  # J[out…, in…] of one sample, then Σ_out h · J²
            jac = torch.autograd.functional.jacobian(
                lambda a: conv(a.unsqueeze(0), w)[0], w.new_zeros(g.input_shape[1:]))
            rows.append(torch.einsum("o,oi->i", h[n].reshape(-1),
                                     jac.reshape(h[n].numel(), -1).pow(2)))
        return torch.stack(rows).reshape(h.shape[0], *g.input_shape[1:])
    if name == "hessian_diagonal_weight":  # Σ h · u²: the weight VJP of h at x∘x
        x_squared, h = tensors
        return _gradient(lambda w: conv(x_squared, w), g.weight_shape, x_squared, h)
    x, given = tensors
    if name in ("ggn_diagonal", "ggn_gram"):  # one column per class and sample
        columns = torch.stack([_per_sample(conv, x, given[c], g) for c in range(given.shape[0])])
        if name == "ggn_diagonal":
            return columns.pow(2).sum((0, 1))
        flat = columns.flatten(2).flatten(0, 1)
        return flat @ flat.T
    per_sample = _per_sample(conv, x, given, g)
    if name == "batch_l2":
        return per_sample.flatten(1).pow(2).sum(1)
    if name == "sum_grad_squared":
        return per_sample.pow(2).sum(0)
    return per_sample.var(0, unbiased=False)


def _factor_ref(name: str, u: torch.Tensor, options: dict) -> torch.Tensor:
    """KFC / KFAC-reduce from the unfolded input u [N, G, D, O] (DESIGN.md conventions)."""
    n, o = u.shape[0], u.shape[-1]
    ones = u.new_ones
    if name == "kfac_reduce":
        u = u.mean(-1, keepdim=True)
    if options.get("group_average"):
        u = u.mean(1, keepdim=True)
    if options.get("bias"):
        u = torch.cat([u, ones(n, u.shape[1], 1, u.shape[-1])], 2)
    s = torch.einsum("ngdo,ngeo->gde", u, u)
    counts = {"mean": n * (o if name == "kfc" else 1), "batch": n, "sum": 1}
    s = s / counts[options.get("reduction", "mean")]
    s = s[0] if options.get("group_average") else s
    return torch.diagonal(s, dim1=-2, dim2=-1) if options.get("structure") == "diagonal" else s


def operation_ref(name: str, g: Geometry, tensors: tuple[torch.Tensor, ...],
                  options: dict) -> torch.Tensor:
    """Operation `name` (as `tnconv.compile` names them) of `g` on `tensors`."""
    if name in ("forward", "input_jvp", "weight_jvp"):
        return conv_ref(*tensors, g)
    if name == "input_vjp":
        w, gout = tensors
        return _gradient(lambda x: conv_ref(x, w, g), (gout.shape[0], *g.input_shape[1:]),
                         w, gout)
    if name == "weight_vjp":
        x, gout = tensors
        if options.get("per_sample"):
            return _per_sample(lambda a, w: conv_ref(a, w, g), x, gout, g)
        return _gradient(lambda w: conv_ref(x, w, g), g.weight_shape, x, gout)
    if name in CURVATURE:
        return _curvature_ref(name, g, tensors)
    if name == "fold":
        (u,) = tensors
        shape = (u.shape[0], u.shape[1] // prod(g.kernel), *g.size)
        return _gradient(lambda x: unfold_ref(x, g), shape, u, u)
    (x,) = tensors
    u = unfold_ref(x, g)
    if name == "unfold":
        return u
    u = u.reshape(x.shape[0], g.groups, g.patch_length, -1)  # [N, G, D, O]
    if name == "patches":
        return u.transpose(2, 3)
    if name == "averaged_patches":
        return u.mean(-1)
    return _factor_ref(name, u, options)
