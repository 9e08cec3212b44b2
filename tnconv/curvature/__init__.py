"""Curvature of a convolution: per-sample gradient statistics, GGN diagonals and Gram
matrices, Hessian-diagonal backpropagation, for any N and every hyper-parameter.

Each quantity is a tensor network over the convolution's index patterns
(`tnconv.ops.statistics`, `tnconv.ops.ggn`, `tnconv.ops.hessian`), compiled like
every other operation: `tnconv.compile("batch_l2", spec).explain()` shows the
plan, including whether the per-sample gradients are formed or the Gram form
Σ_{o,o'} (UᵀU')∘(VᵀV') runs (whichever the cost model prices lower). The module
forms here take the torch layer (`torch.nn.Conv{1,2,3}d`, `ConvTranspose{1,2,3}d`),
its batched input `x` and the backpropagated tensor; `tnconv.curvature.functional`
takes hyper-parameters instead. Results carry no autograd history; bf16 / fp16
inputs are computed in float32 (returned in float32 unless `dtype` is given).

Conventions
-----------
Per-sample gradients. g_n is the weight gradient that sample n's part of
`grad_output` [N, C_out, *output] gives, as backpropagation hands it over
(with a loss averaged over the batch, grad_output already carries the 1/N):

- `batch_l2`: ‖g_n‖², [N] (BackPACK's `BatchL2Grad`);
- `sum_grad_squared`: Σ_n g_n², as the weight (BackPACK's `SumGradSquared`);
- `variance`: (1/N) Σ_n g_n² − ((1/N) Σ_n g_n)², as the weight: BackPACK's
  `Variance`, the population variance (divided by N, not N − 1) of [g_1 … g_N];
  computed as (1/N) Σ_{n,n'} (I − 11ᵀ/N)[n, n'] g_n g_n', so there is no
  cancellation between two large terms.

GGN / Fisher. `sqrt_factor` S is [C, N, C_out, *output] (BackPACK's layout of
its `SqrtGGNExact` / `SqrtGGNMC` factors): the loss Hessian with respect to the
layer's output is Σ_c S[c] S[c]ᵀ, per sample, with C the classes (exact GGN) or
Monte-Carlo samples (Fisher, scaled by 1/√C by whoever samples).

- `ggn_diagonal`: diag Σ_{c,n} (J_nᵀ S[c, n]) (J_nᵀ S[c, n])ᵀ, as the weight
  (BackPACK's `DiagGGNExact` / `DiagGGNMC` for the weight);
- `ggn_gram`: the Gram matrix (Jᵀ S)ᵀ (Jᵀ S), [C·N, C·N] with row and column
  c·N + n (ViViT's layout); its non-zero eigenvalues are those of the layer's
  GGN, which is never formed;
- `backpropagate_sqrt_factor`: J_xᵀ S[c, n] for every column, [C, N, C_in, *input],
  the sqrt factor at the layer's input, for the layer before (after the
  activation's own Jacobian, which is the caller's).

Hessian diagonals (Becker & LeCun 1989; HesScale, Elsayed & Mahmood 2022).
`output_hessian_diagonal` h is [N, C_out, *output], the diagonal of the
Hessian of the loss with respect to the layer's output:

- `hessian_diagonal_weight`: Σ_{n,o} h[n, c_out, o] · u[n, c_in, k, o]², as the weight;
- `hessian_diagonal_input`: Σ_{c_out,o} h[n, c_out, o] · J[c_out, o, c_in, i]², as x,
  with J = Σ_k W[c_out, c_in, k] Π[k, o, i] the layer's Jacobian.

Exact where the output Hessian is diagonal (the layer followed by an
elementwise loss, or the last layer under such a loss); otherwise these are the
methods' approximation, which drops the off-diagonal entries of the output
Hessian. Through a convolution the weight's diagonal is approximate too (unlike
a dense layer's): one weight meets every output position, so the exact diagonal
would need the entries between output positions. The two methods differ only
outside the convolution: at an activation σ, HesScale keeps the term σ''·∂L/∂z
that Becker & LeCun drop, and HesScale starts from the exact diagonal at the
last layer (with S Sᵀ the output Hessian: `backpropagate_sqrt_factor` squared
and summed over c gives the input's exact diagonal, `ggn_diagonal` the weight's).

>>> import torch, tnconv
>>> conv = torch.nn.Conv1d(2, 3, 5, padding=2, padding_mode="circular")
>>> x, grad_output = torch.rand(4, 2, 20), torch.rand(4, 3, 20)
>>> tnconv.curvature.variance(conv, x, grad_output).shape
torch.Size([3, 2, 5])
"""

from tnconv.curvature import functional
from tnconv.curvature.layer import (backpropagate_sqrt_factor, batch_l2, ggn_diagonal, ggn_gram,
                                    hessian_diagonal_input, hessian_diagonal_weight,
                                    sum_grad_squared, variance)

__all__ = ["backpropagate_sqrt_factor", "batch_l2", "functional", "ggn_diagonal", "ggn_gram",
           "hessian_diagonal_input", "hessian_diagonal_weight", "sum_grad_squared", "variance"]
