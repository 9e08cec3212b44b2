"""PyTorch references: what a user would write today without tnconv.

- forward, transposed conv: `F.conv{N}d` / `F.conv_transpose{N}d` (explicit `F.pad`
  first where the padding is asymmetric, as torch's modules do for 'same');
- input / weight VJP: `torch.nn.grad.conv{N}d_input` / `_weight` (of a transposed
  convolution: the convolution of the cotangent, and `conv{N}d_weight` with the
  cotangent as input and the input as cotangent, as torch's autograd does);
- unfold: `F.unfold` for 2d, a `Tensor.unfold` view copied into the same layout
  for 1d and 3d; the unfold of a transposed convolution's input is the
  transposed convolution with one-hot kernels (one output channel per tap);
- KFC and KFAC-reduce: im2col as curvlinops and BackPACK do: unfold, then a
  matrix product of the patch matrix with itself, normalised by N·∏O (KFC) or
  averaged over output positions first and normalised by N (KFAC-reduce).
  One [D, D] block per channel group: [G, D, D].

>>> import torch
>>> from benchmarks.case import make_case
>>> from benchmarks.layers import LAYERS
>>> case = make_case(LAYERS["same_even_4x4"], torch.device("cpu"))
>>> unfold(case).shape, kfac_reduce(case).shape
(torch.Size([4, 1024, 1024]), torch.Size([1, 1024, 1024]))
"""

from __future__ import annotations

from math import prod

import torch
import torch.nn.functional as F

from .case import Case

__all__ = ["conv", "input_vjp", "weight_vjp", "conv_transpose", "unfold", "kfc", "kfac_reduce",
           "tensor_unfold"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_GRAD_INPUT = {1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input,
               3: torch.nn.grad.conv3d_input}
_GRAD_WEIGHT = {1: torch.nn.grad.conv1d_weight, 2: torch.nn.grad.conv2d_weight,
                3: torch.nn.grad.conv3d_weight}


def _pads(spec) -> list[int]:
    return [p for pair in reversed(spec.padding) for p in pair]


def _symmetric(spec) -> bool:
    return all(left == right for left, right in spec.padding)


def _padding(spec) -> list[int]:
    return [left for left, _ in spec.padding]


def _explicit(spec) -> bool:
    """Whether the padding is applied by `F.pad` first: asymmetric, or not zeros (as torch's
    modules do)."""
    return not _symmetric(spec) or spec.padding_mode != "zeros"


def _padded(x: torch.Tensor, spec) -> torch.Tensor:
    """`x` padded explicitly where `_explicit`, else `x` itself."""
    if not _explicit(spec):
        return x
    mode = "constant" if spec.padding_mode == "zeros" else spec.padding_mode
    return F.pad(x, _pads(spec), mode=mode)


def _common(spec) -> dict:
    pad = 0 if _explicit(spec) else _padding(spec)
    return dict(stride=spec.stride, padding=pad, dilation=spec.dilation, groups=spec.groups)


def conv(case: Case) -> torch.Tensor:
    spec = case.spec
    return _CONV[spec.ndim](_padded(case.x, spec), case.w, **_common(spec))


def input_vjp(case: Case) -> torch.Tensor:
    spec, x = case.spec, case.x
    if spec.transposed:  # the input VJP of a transposed convolution is a convolution
        return _CONV[spec.ndim](case.gy, case.w, None, spec.stride, _padding(spec),
                                spec.dilation, spec.groups)
    shape = tuple(_padded(x[:1], spec).shape[1:])
    grad = _GRAD_INPUT[spec.ndim]((x.shape[0], *shape), case.w, case.gy, **_common(spec))
    if not _explicit(spec):
        return grad
    if spec.padding_mode != "zeros":  # the padding's adjoint, by autograd through F.pad
        probe = torch.zeros_like(x).requires_grad_()
        return torch.autograd.grad(_padded(probe, spec), probe, grad)[0]
    index = [slice(None), slice(None)]
    index += [slice(left, left + i) for (left, _), i in zip(spec.padding, spec.input_size)]
    return grad[tuple(index)]


def weight_vjp(case: Case) -> torch.Tensor:
    spec = case.spec
    if spec.transposed:  # that of the convolution from grad_output to the input
        return _GRAD_WEIGHT[spec.ndim](case.gy, case.w.shape, case.x, stride=spec.stride,
                                       padding=_padding(spec), dilation=spec.dilation,
                                       groups=spec.groups)
    return _GRAD_WEIGHT[spec.ndim](_padded(case.x, spec), case.w.shape, case.gy, **_common(spec))


def conv_transpose(case: Case) -> torch.Tensor:
    spec = case.tspec
    return _CONV_T[spec.ndim](case.tin, case.w, None, stride=spec.stride,
                              padding=_padding(spec), output_padding=spec.output_padding,
                              groups=spec.groups, dilation=spec.dilation)


def tensor_unfold(x: torch.Tensor, spec) -> torch.Tensor:
    """im2col of any N through `Tensor.unfold` windows: [N, C·∏K, ∏O] (F.unfold's layout)."""
    mode = "constant" if spec.padding_mode == "zeros" else spec.padding_mode
    x = F.pad(x, _pads(spec), mode=mode) if any(p for pair in spec.padding for p in pair) else x
    n, c, nd = x.shape[0], x.shape[1], spec.ndim
    for d, (k, s, dil) in enumerate(zip(spec.kernel_size, spec.stride, spec.dilation)):
        x = x.unfold(2 + d, dil * (k - 1) + 1, s)
    windows = tuple(slice(None, None, dil) for dil in spec.dilation)
    x = x[(Ellipsis, *windows)]  # [N, C, O..., K...]
    order = (0, 1, *range(2 + nd, 2 + 2 * nd), *range(2, 2 + nd))
    u = x.permute(order).reshape(n, c * prod(spec.kernel_size), prod(spec.output_size))
    return u.contiguous()  # a new tensor, as F.unfold returns (reshape may give a view)


def _transposed_unfold(x: torch.Tensor, spec) -> torch.Tensor:
    """Patches of a transposed convolution's input: a depthwise transposed conv, one-hot kernels."""
    c, taps = x.shape[1], prod(spec.kernel_size)
    eye = torch.eye(taps, device=x.device, dtype=x.dtype).reshape(1, taps, *spec.kernel_size)
    u = _CONV_T[spec.ndim](x, eye.repeat(c, 1, *([1] * spec.ndim)), None, stride=spec.stride,
                           padding=_padding(spec), output_padding=spec.output_padding,
                           groups=c, dilation=spec.dilation)
    return u.reshape(x.shape[0], c * taps, prod(spec.output_size))


def unfold(case: Case) -> torch.Tensor:
    spec, x = case.spec, case.x
    if spec.transposed:
        return _transposed_unfold(x, spec)
    if spec.ndim == 2:
        return F.unfold(_padded(x, spec), spec.kernel_size, dilation=spec.dilation,
                        padding=0 if _explicit(spec) else _padding(spec), stride=spec.stride)
    return tensor_unfold(x, spec)


def _patch_matrix(case: Case) -> torch.Tensor:
    """Unfolded input split by group: [N, G, D, ∏O]."""
    u = unfold(case)
    g = case.spec.groups
    return u.view(u.shape[0], g, u.shape[1] // g, u.shape[2])


def kfc(case: Case) -> torch.Tensor:
    u = _patch_matrix(case)
    n, g, d, o = u.shape
    rows = u.permute(1, 0, 3, 2).reshape(g, n * o, d)
    return torch.bmm(rows.transpose(1, 2), rows).div_(n * o)


def kfac_reduce(case: Case) -> torch.Tensor:
    u = _patch_matrix(case).mean(dim=3).transpose(0, 1)  # [G, N, D]
    return torch.bmm(u.transpose(1, 2), u).div_(u.shape[1])
