"""GGN diagonal, GGN Gram matrix and the pulled-back sqrt factor against the exact GGN.

The exact GGN of the weight, Σ_n J_nᵀ H_n J_n, is formed from `torch.func.jacrev`
Jacobians of torch's convolution and a per-sample output Hessian H_n = Σ_c S_c S_cᵀ
(random S, or the exact factor of a log-sum-exp loss); float64, random hyper-parameters.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tnconv.curvature import functional as CF
from tests.curvature_references import (hyper, input_jacobian, layer, spec_of, tensors,
                                        weight_jacobian)
from tests.helpers import DEVICE, assert_close
from tests.strategies import conv_params


def columns_times_jacobian(jac: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """φ[c, n] = J_nᵀ S[c, n]: [C, N, D] from J [N, M, D] and S [C, N, …] (M entries)."""
    return torch.einsum("nmd,cnm->cnd", jac, s.flatten(2))


@given(conv_params(), st.integers(1, 3))
def test_diagonal_and_gram_match_jacrev(params, classes):
    spec = spec_of(params)
    x, w, s = tensors(spec, params["input_shape"][0], classes)
    phi = columns_times_jacobian(weight_jacobian(spec, x, w), s)
    ggn = torch.einsum("cnd,cne->de", phi, phi)
    kernel = spec.kernel_size
    assert_close(CF.ggn_diagonal(x, s, kernel, **hyper(spec)), ggn.diagonal().reshape(w.shape))
    flat = phi.flatten(0, 1)
    assert_close(CF.ggn_gram(x, s, kernel, **hyper(spec)), flat @ flat.T)


@given(conv_params(), st.integers(1, 3))
def test_pulled_back_factor_matches_jacrev(params, classes):
    spec = spec_of(params)
    x, w, s = tensors(spec, params["input_shape"][0], classes)
    expected = columns_times_jacobian(input_jacobian(spec, x, w), s).reshape(classes, *x.shape)
    assert_close(CF.backpropagate_sqrt_factor(x, w, s, **hyper(spec)), expected)


def _log_sum_exp_factor(y: torch.Tensor) -> torch.Tensor:
    """Exact sqrt factor [M, N, *y[0].shape] of the Hessian of Σ_n logsumexp(y_n) with
    respect to y: per sample diag(p) − ppᵀ = Σ_m (√p_m e_m − p √p_m)(…)ᵀ."""
    p = y.flatten(1).softmax(1)  # [N, M]
    root = p.sqrt()
    factor = torch.diag_embed(root) - p[:, :, None] * root[:, None, :]  # [N, M(out), M(col)]
    return factor.permute(2, 0, 1).reshape(-1, *y.shape)


def test_gram_eigenvalues_are_the_ggn_eigenvalues():
    """ViViT: the [C·N, C·N] Gram matrix has the GGN's non-zero eigenvalues."""
    conv = torch.nn.Conv2d(2, 3, 3, stride=2, padding=1, groups=1).double().to(DEVICE)
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, device=DEVICE)
    spec = tnconv.ConvSpec.from_module(conv, x)
    w = conv.weight.detach()
    s = _log_sum_exp_factor(layer(spec)(x, w))
    phi = columns_times_jacobian(weight_jacobian(spec, x, w), s).flatten(0, 1)
    ggn = phi.T @ phi
    gram = tnconv.curvature.ggn_gram(conv, x, s)
    top = torch.linalg.eigvalsh(ggn).flip(0)[:gram.shape[0]]
    assert_close(torch.linalg.eigvalsh(gram).flip(0), top, rtol=1e-10)


def test_chain_of_two_layers_gives_the_first_layers_exact_ggn():
    """conv → tanh → conv → log-sum-exp: the first weight's GGN diagonal from the factor
    pulled back through the second layer and the activation, against jacrev of the chain."""
    first = torch.nn.Conv1d(2, 3, 3, padding=1, padding_mode="reflect", bias=False)
    second = torch.nn.Conv1d(3, 2, 2, stride=2, groups=1, bias=False)
    first, second = first.double().to(DEVICE), second.double().to(DEVICE)
    x = torch.randn(3, 2, 6, dtype=torch.float64, device=DEVICE)
    z = first(x)
    y = second(torch.tanh(z))
    s = _log_sum_exp_factor(y)
    s_z = tnconv.curvature.backpropagate_sqrt_factor(second, torch.tanh(z), s)
    s_z = s_z * (1 - torch.tanh(z) ** 2)  # the activation's Jacobian (the caller's part)
    diagonal = tnconv.curvature.ggn_diagonal(first, x, s_z)

    def network(w):
        return second(torch.tanh(torch.nn.functional.conv1d(
            torch.nn.functional.pad(x, (1, 1), mode="reflect"), w)))

    w = first.weight.detach()
    jac = torch.func.jacrev(network)(w).reshape(3, -1, w.numel())
    hessian = torch.einsum("cnm,cnk->nmk", s.flatten(2), s.flatten(2))
    ggn = torch.einsum("nmd,nmk,nke->de", jac, hessian, jac)
    assert_close(diagonal, ggn.diagonal().reshape(w.shape), rtol=1e-11)


@pytest.mark.parametrize("kwargs", [dict(stride=2, padding=1, output_padding=1),
                                    dict(groups=2, dilation=2)])
def test_transposed_layers(kwargs):
    conv = torch.nn.ConvTranspose1d(4, 2, 3, bias=False, **kwargs).double().to(DEVICE)
    x = torch.randn(2, 4, 5, dtype=torch.float64, device=DEVICE)
    spec = tnconv.ConvSpec.from_module(conv, x)
    _, w, s = tensors(spec, 2, 3)
    w = conv.weight.detach()
    phi = columns_times_jacobian(weight_jacobian(spec, x, w), s)
    assert_close(tnconv.curvature.ggn_diagonal(conv, x, s),
                 phi.pow(2).sum((0, 1)).reshape(w.shape))
    flat = phi.flatten(0, 1)
    assert_close(tnconv.curvature.ggn_gram(conv, x, s), flat @ flat.T)
    back = columns_times_jacobian(input_jacobian(spec, x, w), s).reshape(3, *x.shape)
    assert_close(tnconv.curvature.backpropagate_sqrt_factor(conv, x, s), back)
