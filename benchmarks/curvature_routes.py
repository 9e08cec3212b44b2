"""The routes `python -m benchmarks.curvature` races, per curvature quantity.

- ``unfold``: the unfold-based way, as BackPACK computes it: the unfolded input
  U [N, G, C_in/G·∏K, ∏O] (`benchmarks.references.unfold`: F.unfold for 2d, strided
  windows for 1d/3d, F.pad first for padding modes), per-sample gradients
  g = einsum(U, grad_output) (for the GGN: J_nᵀ S for every column of S, BackPACK's
  `extract_weight_diagonal`), then the squares; the Hessian diagonal contracts h with U².
- ``tnconv``: the public `tnconv.curvature` function on the layer's module.
- ``vmap``: per-sample gradients by `torch.func.vmap(torch.func.grad(...))` of torch's
  convolution (for the GGN, vmap over the columns too), then the squares.

The reference's variance is `torch.var` of the per-sample gradients (two passes, no
cancellation). Each route returns the quantity in tnconv's layout.

>>> from benchmarks.case import make_case
>>> from benchmarks.layers import LAYERS
>>> case = make_case(LAYERS["resnet_1x1_down"], torch.device("cpu"))
>>> extras = make_extras(case, classes=3)
>>> calls = route_calls("ggn_diagonal", case, extras)
>>> list(calls), tuple(calls["unfold"]().shape)
(['unfold', 'tnconv', 'vmap'], (128, 64, 1, 1))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

import tnconv

from . import references as ref
from .case import Case

__all__ = ["QUANTITIES", "ROUTES", "Extras", "make_extras", "route_calls"]

ROUTES = ("unfold", "tnconv", "vmap")
QUANTITIES = ("batch_l2", "sum_grad_squared", "variance", "ggn_diagonal", "ggn_gram",
              "hessian_diagonal_weight")


@dataclass
class Extras:
    """What the second-order quantities take besides the case: S [C, N, C_out, O…] and h."""

    sqrt_factor: torch.Tensor
    hessian_diagonal: torch.Tensor


def make_extras(case: Case, classes: int, seed: int = 1) -> Extras:
    gen = torch.Generator().manual_seed(seed)
    shape = (classes, *case.gy.shape)
    s = torch.randn(*shape, generator=gen, dtype=case.gy.dtype).to(case.gy.device)
    return Extras(s, case.gy.square())


# ------------------------------------------------------------------ unfold-based
def _patches(case: Case) -> torch.Tensor:
    """U [N, G, D, ∏O]."""
    u = ref.unfold(case)
    return u.reshape(u.shape[0], case.spec.groups, -1, u.shape[-1])


def _by_group(case: Case, t: torch.Tensor) -> torch.Tensor:
    """[…, N, C_out, O…] -> […, N, G, C_out/G, ∏O]."""
    g = case.spec.groups
    lead = t.shape[:-case.spec.ndim - 1]
    return t.reshape(*lead, g, t.shape[len(lead)] // g, -1)


def _as_weight(case: Case, t: torch.Tensor) -> torch.Tensor:
    """[…, G, C_out/G, D] in the weight's layout (a transposed layer's: [C_in, C_out/G, K…])."""
    spec = case.spec
    if not spec.transposed:
        return t.reshape(*t.shape[:-3], *spec.weight_shape)
    g, cout, d = t.shape[-3:]
    cin = spec.in_channels // g
    t = t.reshape(*t.shape[:-3], g, cout, cin, -1).transpose(-3, -2)
    return t.reshape(*t.shape[:-4], *spec.weight_shape)


def unfold_per_sample(case: Case) -> torch.Tensor:
    g = torch.einsum("ngdo,ngmo->ngmd", _patches(case), _by_group(case, case.gy))
    return _as_weight(case, g)


def unfold_columns(case: Case, s: torch.Tensor) -> torch.Tensor:
    """J_nᵀ S[c, n] [C, N, *weight] (BackPACK's `extract_weight_diagonal` before squaring)."""
    return _as_weight(case, torch.einsum("ngdo,cngmo->cngmd", _patches(case), _by_group(case, s)))


def _unfold(name: str, case: Case, extras: Extras) -> torch.Tensor:
    if name == "batch_l2":
        return unfold_per_sample(case).pow(2).flatten(1).sum(1)
    if name == "sum_grad_squared":
        return unfold_per_sample(case).pow(2).sum(0)
    if name == "variance":
        return unfold_per_sample(case).var(0, unbiased=False)
    if name == "ggn_diagonal":
        return unfold_columns(case, extras.sqrt_factor).pow_(2).sum((0, 1))
    if name == "ggn_gram":
        phi = unfold_columns(case, extras.sqrt_factor).flatten(2).flatten(0, 1)
        return phi @ phi.T
    u = _patches(case)
    h = _by_group(case, extras.hessian_diagonal)
    return _as_weight(case, torch.einsum("ngdo,ngmo->gmd", u * u, h))


# ------------------------------------------------------------------ vmap(grad)
def _forward(case: Case) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    spec = case.spec
    if spec.transposed:
        return lambda x, w: ref._CONV_T[spec.ndim](
            x, w, None, stride=spec.stride, padding=ref._padding(spec),
            output_padding=spec.output_padding, groups=spec.groups, dilation=spec.dilation)
    return lambda x, w: ref._CONV[spec.ndim](ref._padded(x, spec), w, **ref._common(spec))


def vmap_per_sample(case: Case, v: torch.Tensor) -> torch.Tensor:
    """[…, N, *weight] per-sample weight VJPs of v […, N, C_out, O…] by vmap(grad)."""
    forward = _forward(case)

    def sample(w, xn, vn):
        return (forward(xn[None], w) * vn[None]).sum()

    per_sample = torch.func.vmap(torch.func.grad(sample), in_dims=(None, 0, 0))
    for _ in range(v.dim() - case.gy.dim()):  # the columns of a sqrt factor
        per_sample = torch.func.vmap(per_sample, in_dims=(None, None, 0))
    return per_sample(case.w, case.x, v)


def _vmap(name: str, case: Case, extras: Extras) -> torch.Tensor:
    if name in ("batch_l2", "sum_grad_squared", "variance"):
        g = vmap_per_sample(case, case.gy)
        return {"batch_l2": lambda: g.pow(2).flatten(1).sum(1),
                "sum_grad_squared": lambda: g.pow(2).sum(0),
                "variance": lambda: g.var(0, unbiased=False)}[name]()
    if name == "ggn_diagonal":
        return vmap_per_sample(case, extras.sqrt_factor).pow_(2).sum((0, 1))
    if name == "ggn_gram":
        phi = vmap_per_sample(case, extras.sqrt_factor).flatten(2).flatten(0, 1)
        return phi @ phi.T
    raise NotImplementedError  # no per-sample form of the Hessian diagonal


# ------------------------------------------------------------------ tnconv
def _tnconv(name: str, case: Case, extras: Extras) -> torch.Tensor:
    given = {"ggn_diagonal": extras.sqrt_factor, "ggn_gram": extras.sqrt_factor,
             "hessian_diagonal_weight": extras.hessian_diagonal}.get(name, case.gy)
    return getattr(tnconv.curvature, name)(case.module, case.x, given)


def route_calls(name: str, case: Case, extras: Extras) -> dict:
    """{route: call or "n/a (why)"} for one quantity on one case, the reference first."""
    calls: dict = {"unfold": lambda: _unfold(name, case, extras),
                   "tnconv": lambda: _tnconv(name, case, extras)}
    calls["vmap"] = ("n/a (no per-sample form)" if name == "hessian_diagonal_weight"
                     else lambda: _vmap(name, case, extras))
    return calls
