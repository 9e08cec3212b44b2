"""tnconv.curvature against BackPACK on a small 2d CNN (the layers BackPACK supports).

BackPACK is an optional test dependency: these tests run where `backpack` is importable
(`pip install --no-deps backpack-for-pytorch einops unfoldNd`, which keeps torch; CI
installs it so, see .ci/run) and are skipped otherwise. Groups, padding modes and
1d/3d layers, which BackPACK does not cover, are checked against brute force in
test_curvature_statistics.py, test_curvature_ggn.py and test_curvature_hessian.py.
"""

from __future__ import annotations

import pytest
import torch

import tnconv
from tests.helpers import DEVICE, assert_close

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")
backpack = pytest.importorskip("backpack")
extensions = pytest.importorskip("backpack.extensions")


def _model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 5, 3, stride=2, dilation=1), torch.nn.Flatten(),
        torch.nn.Linear(5 * 3 * 3, 4)).double().to(DEVICE)


def _cross_entropy_factor(logits: torch.Tensor) -> torch.Tensor:
    """Sqrt factor [C, N, C] of the Hessian of the batch-mean cross-entropy in the logits:
    (diag(p) − ppᵀ)/N = S Sᵀ per sample with S[:, c] = (√p_c e_c − p √p_c)/√N."""
    p = logits.softmax(1)
    root = p.sqrt()
    factor = torch.diag_embed(root) - p[:, :, None] * root[:, None, :]
    return factor.permute(2, 0, 1) / logits.shape[0] ** 0.5


@pytest.fixture(scope="module")
def results():
    """BackPACK's quantities of both convolutions, and what tnconv needs to compute them."""
    model = _model()
    loss_function = torch.nn.CrossEntropyLoss()
    backpack.extend(model)
    backpack.extend(loss_function)
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64, device=DEVICE)
    labels = torch.randint(0, 4, (6,), device=DEVICE)
    first, _, second, _, linear = model
    z1 = first(x)
    a1 = torch.relu(z1)
    z2 = second(a1)
    logits = linear(z2.flatten(1))
    loss = loss_function(logits, labels)
    grad_z1, grad_z2 = torch.autograd.grad(loss, (z1, z2), retain_graph=True)
    wanted = (extensions.BatchL2Grad(), extensions.SumGradSquared(), extensions.Variance(),
              extensions.DiagGGNExact())
    with backpack.backpack(*wanted):
        loss_function(model(x), labels).backward()
    s_logits = _cross_entropy_factor(logits.detach())
    s_z2 = (s_logits @ linear.weight.detach()).reshape(4, *z2.shape)
    return dict(layers=(first, second), inputs=(x, a1.detach()), grads=(grad_z1, grad_z2),
                factors=(None, s_z2), mask=(z1 > 0))


@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("name, attribute", [("batch_l2", "batch_l2"),
                                             ("sum_grad_squared", "sum_grad_squared"),
                                             ("variance", "variance")])
def test_first_order_quantities(results, layer, name, attribute):
    conv = results["layers"][layer]
    ours = getattr(tnconv.curvature, name)(conv, results["inputs"][layer], results["grads"][layer])
    assert_close(ours, getattr(conv.weight, attribute), rtol=1e-11)


def test_exact_ggn_diagonal_of_both_layers(results):
    first, second = results["layers"]
    x, a1 = results["inputs"]
    s_z2 = results["factors"][1]
    assert_close(tnconv.curvature.ggn_diagonal(second, a1, s_z2), second.weight.diag_ggn_exact,
                 rtol=1e-11)
    s_z1 = tnconv.curvature.backpropagate_sqrt_factor(second, a1, s_z2) * results["mask"]
    assert_close(tnconv.curvature.ggn_diagonal(first, x, s_z1), first.weight.diag_ggn_exact,
                 rtol=1e-11)
