"""KFAC on scikit-learn's digits: a small CNN trained with a KFAC preconditioner, against SGD and Adam.

The 1,797 8×8 images of `sklearn.datasets.load_digits` ship with scikit-learn
(no download). A two-conv CNN is trained three times from the same
initialisation on the same mini-batches: with SGD (momentum), with Adam, and
with SGD (momentum) on KFAC-preconditioned gradients. For each conv layer the
KFAC input-side factor is `tnconv.kfac_reduce` of the layer's input (with the
bias column); the output-side factor comes from the gradients backpropagated
to the layer's output, summed over output positions (KFAC-reduce's
counterpart); the linear head uses the plain KFAC factors. The update of a
layer with weight-and-bias matrix gradient G is (B + γ_B I)⁻¹ G (A + γ_A I)⁻¹
with π-damping. The factors are the empirical Fisher's (the gradients of the
loss on the true labels, the ones the step computes anyway), averaged over
steps.

    python docs/examples/kfac_digits.py                        # writes docs/images/kfac_digits.png
    python docs/examples/kfac_digits.py --steps 30 --out /tmp/kfac.png     # a short run

Under a minute on 2 CPU cores with the defaults (`KFAC_DIGITS_STEPS` sets the
number of steps too). It prints the final training loss, test accuracy and
training time of each optimizer, and plots training loss and test accuracy
against the step and against wall-clock time (training steps only,
evaluation excluded).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

import tnconv

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "images" / "kfac_digits.png"
DEFAULT_STEPS = 400


# ----------------------------------------------------------------------------- data, model
def load_data(test_size: int = 497, seed: int = 0):
    """Digits as float32 images [N, 1, 8, 8] in [0, 1] and int64 labels: train, then test."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    test, train = order[:test_size], order[test_size:]
    return x[train], y[train], x[test], y[test]


def make_model(seed: int = 0) -> nn.Sequential:
    """Conv(1→16, 3×3) → ReLU → Conv(16→32, 3×3, stride 2) → ReLU → Linear(32·4·4 → 10)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 10))


def batch_indices(train_size: int, batch_size: int, steps: int, seed: int = 1) -> list:
    """The mini-batches of every step (shuffled epochs), the same for every optimizer."""
    generator = torch.Generator().manual_seed(seed)
    batches, order = [], torch.empty(0, dtype=torch.int64)
    while len(batches) < steps:
        if len(order) < batch_size:
            order = torch.randperm(train_size, generator=generator)
        batches.append(order[:batch_size])
        order = order[batch_size:]
    return batches


# ----------------------------------------------------------------------------- KFAC
def with_bias_column(gradient: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A layer's gradient as one matrix [C_out, D + 1]: the weight's (in F.unfold's
    channel-major order, as tnconv's factors), then the bias as the last column."""
    return torch.cat([gradient.reshape(gradient.shape[0], -1), bias.unsqueeze(1)], 1)


def input_factor(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A = (1/N) Σ_n ā āᵀ with a trailing 1: `tnconv.kfac_reduce` for a conv layer."""
    if isinstance(layer, nn.Conv2d):
        return tnconv.kfac_reduce(layer, x, bias=True)[0]        # [D + 1, D + 1], one group
    a = torch.cat([x, x.new_ones(x.shape[0], 1)], 1)
    return a.T @ a / x.shape[0]


def output_factor(grad_output: torch.Tensor) -> torch.Tensor:
    """B = (1/N) Σ_n b bᵀ with b = N · (the mean loss's output gradient of sample n, summed
    over output positions): the per-sample loss's gradient, as KFAC-reduce pairs with ā."""
    n = grad_output.shape[0]
    b = grad_output.reshape(n, grad_output.shape[1], -1).sum(2) * n
    return b.T @ b / n


def damped_inverses(A: torch.Tensor, B: torch.Tensor, damping: float):
    """(A + π√λ I)⁻¹ and (B + √λ/π I)⁻¹, π = √((tr A / dim A) / (tr B / dim B))."""
    mean_a, mean_b = A.diagonal().mean(), B.diagonal().mean()
    pi = torch.sqrt(mean_a / mean_b.clamp_min(1e-12)).clamp(1e-4, 1e4)
    root = damping ** 0.5
    eye_a = torch.eye(len(A), dtype=A.dtype)
    eye_b = torch.eye(len(B), dtype=B.dtype)
    return (torch.cholesky_inverse(torch.linalg.cholesky(A + pi * root * eye_a)),
            torch.cholesky_inverse(torch.linalg.cholesky(B + root / pi * eye_b)))


def preconditioned(gradient: torch.Tensor, A_inv: torch.Tensor, B_inv: torch.Tensor) -> torch.Tensor:
    """(B + γ_B I)⁻¹ G (A + γ_A I)⁻¹: the Kronecker-factored solve of (A ⊗ B) vec Δ = vec G."""
    return B_inv @ gradient @ A_inv


@dataclass
class _LayerState:
    A: Optional[torch.Tensor] = None
    B: Optional[torch.Tensor] = None
    A_inv: Optional[torch.Tensor] = None
    B_inv: Optional[torch.Tensor] = None
    inputs: Optional[torch.Tensor] = None
    grad_output: Optional[torch.Tensor] = None


class KFAC:
    """KFAC preconditioner of a model's Conv2d and Linear layers (each with a bias).

    Hooks keep each layer's input and the gradient at its output; `step()` updates
    the running factors (decay `decay`), recomputes the damped inverses every
    `inverse_every` steps and replaces every layer's `.grad` by the preconditioned
    gradient, which a base optimizer (here SGD with momentum) then applies.
    """

    def __init__(self, model: nn.Module, damping: float = 0.1, decay: float = 0.95,
                 inverse_every: int = 10, kl_clip: float = 1e-3) -> None:
        self.damping, self.decay, self.inverse_every = damping, decay, inverse_every
        self.kl_clip = kl_clip
        self.layers = {m: _LayerState() for m in model.modules()
                       if isinstance(m, (nn.Conv2d, nn.Linear))}
        self.steps = 0
        for layer, state in self.layers.items():
            layer.register_forward_hook(self._keep(state))

    @staticmethod
    def _keep(state: _LayerState) -> Callable:
        """Forward hook: keep the layer's input, and (through a hook on its output) the
        gradient that backward brings to the output."""
        def keep_grad(grad: torch.Tensor) -> None:
            state.grad_output = grad.detach()

        def hook(module, args, output):
            state.inputs = args[0].detach()
            if output.requires_grad:
                output.register_hook(keep_grad)
        return hook

    def _running(self, old: Optional[torch.Tensor], new: torch.Tensor) -> torch.Tensor:
        return new if old is None else self.decay * old + (1 - self.decay) * new

    @torch.no_grad()
    def step(self, lr: float) -> None:
        """Precondition every layer's gradient, then scale all updates by one factor ν ≤ 1
        so that the step's predicted change lr² Σ ⟨Δ, G⟩ stays below `kl_clip`."""
        refresh = self.steps % self.inverse_every == 0
        updates = []
        for layer, state in self.layers.items():
            state.A = self._running(state.A, input_factor(layer, state.inputs))
            state.B = self._running(state.B, output_factor(state.grad_output))
            if refresh or state.A_inv is None:
                state.A_inv, state.B_inv = damped_inverses(state.A, state.B, self.damping)
            gradient = with_bias_column(layer.weight.grad, layer.bias.grad)
            updates.append((layer, gradient, preconditioned(gradient, state.A_inv, state.B_inv)))
        change = sum((g * u).sum() for _, g, u in updates) * lr ** 2
        scale = min(1.0, (self.kl_clip / change.clamp_min(1e-30)).sqrt().item())
        for layer, _, update in updates:
            layer.weight.grad.copy_(update[:, :-1].reshape(layer.weight.shape) * scale)
            layer.bias.grad.copy_(update[:, -1] * scale)
        self.steps += 1


# ----------------------------------------------------------------------------- training
@dataclass
class History:
    """What one optimizer reached: per evaluation, the step, the training time so far
    (seconds, evaluation excluded), the loss on the whole training set, test accuracy."""

    name: str
    steps: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    test_accuracy: list = field(default_factory=list)


@torch.no_grad()
def _evaluate(model, data, history: History, step: int, seconds: float) -> None:
    x_train, y_train, x_test, y_test = data
    history.steps.append(step)
    history.seconds.append(seconds)
    history.train_loss.append(F.cross_entropy(model(x_train), y_train).item())
    history.test_accuracy.append((model(x_test).argmax(1) == y_test).float().mean().item())


#: Learning rates, each the one with the lowest final training loss on these batches among
#: {0.01, 0.03, 0.1, 0.3} (SGD), {0.03, 0.1, 0.3} (KFAC) and {1e-3, 3e-3, 1e-2} (Adam).
LEARNING_RATES = {"SGD": 0.1, "Adam": 1e-2, "KFAC": 0.1}


def train(name: str, data, batches: list, eval_every: int, seed: int = 0,
          lr: Optional[float] = None) -> History:
    """Train a fresh model (same initialisation for every `name`) on `batches` with "SGD"
    (momentum 0.9), "Adam" or "KFAC" (KFAC-preconditioned SGD, momentum 0.9)."""
    model = make_model(seed)
    lr = LEARNING_RATES[name] if lr is None else lr
    kfac = KFAC(model) if name == "KFAC" else None
    if name == "Adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    history, elapsed = History(name), 0.0
    x_train, y_train = data[0], data[1]
    _evaluate(model, data, history, 0, 0.0)
    for step, index in enumerate(batches, start=1):
        start = time.perf_counter()
        optimizer.zero_grad()
        F.cross_entropy(model(x_train[index]), y_train[index]).backward()
        if kfac is not None:
            kfac.step(lr)
        optimizer.step()
        elapsed += time.perf_counter() - start
        if step % eval_every == 0 or step == len(batches):
            _evaluate(model, data, history, step, elapsed)
    return history


def plot(histories: list, path: Path, title: str) -> None:
    """Training loss and test accuracy against step (top) and wall-clock time (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for h in histories:
        for row, x in enumerate((h.steps, h.seconds)):
            axes[row, 0].plot(x, h.train_loss, label=h.name)
            axes[row, 1].plot(x, h.test_accuracy, label=h.name)
    for row, xlabel in enumerate(("step", "training time (s)")):
        axes[row, 0].set(xlabel=xlabel, ylabel="training loss", yscale="log")
        axes[row, 1].set(xlabel=xlabel, ylabel="test accuracy", ylim=(0.5, 1.0))
        for ax in axes[row]:
            ax.grid(alpha=0.3)
    axes[0, 0].legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int,
                        default=int(os.environ.get("KFAC_DIGITS_STEPS", DEFAULT_STEPS)),
                        help=f"optimizer steps (default {DEFAULT_STEPS}, or $KFAC_DIGITS_STEPS)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the layers are tiny)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the plot (PNG)")
    return parser.parse_args(argv)


def main(argv: Optional[list] = None) -> list:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_data()
    batches = batch_indices(len(data[0]), args.batch_size, args.steps)
    histories = [train(name, data, batches, args.eval_every) for name in ("SGD", "Adam", "KFAC")]
    print(f"{'optimizer':<10}{'train loss':>12}{'test accuracy':>15}{'time (s)':>10}")
    for h in histories:
        print(f"{h.name:<10}{h.train_loss[-1]:>12.2e}{h.test_accuracy[-1]:>15.3f}"
              f"{h.seconds[-1]:>10.2f}")
    title = (f"CNN on sklearn digits ({len(data[0])} train / {len(data[2])} test), "
             f"batch {args.batch_size}, {args.steps} steps, "
             f"{args.threads} torch thread{'s' if args.threads > 1 else ''}")
    plot(histories, args.out, title)
    print(f"plot: {args.out}")
    return histories


if __name__ == "__main__":
    main(sys.argv[1:])
