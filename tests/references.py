"""Independent references for the tests: explicit padding, strided slices, loops.

Written without tnconv's index patterns: padding by index lists per dimension,
unfold by strided slicing, N-d convolution as a sum over kernel offsets.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F


def _pad_indices(size: int, left: int, right: int, mode: str) -> list[int]:
    """For each padded position, the source pixel (or -1 for a zero)."""
    out = []
    for j in range(-left, size + right):
        if 0 <= j < size:
            out.append(j)
        elif mode == "zeros":
            out.append(-1)
        elif mode == "circular":
            out.append(j % size)
        elif mode == "replicate":
            out.append(min(max(j, 0), size - 1))
        elif mode == "reflect":
            out.append(-j if j < 0 else 2 * (size - 1) - j)
    return out


def pad(x: torch.Tensor, pairs, mode: str) -> torch.Tensor:
    """Pad the trailing len(pairs) dims of x, any N, any padding mode."""
    ndim = len(pairs)
    for d, (left, right) in enumerate(pairs):
        dim = x.dim() - ndim + d
        idx = _pad_indices(x.shape[dim], left, right, mode)
        zero_slot = torch.zeros_like(x.narrow(dim, 0, 1))
        ext = torch.cat([x, zero_slot], dim=dim)
        index = torch.tensor([i if i >= 0 else x.shape[dim] for i in idx], device=x.device)
        x = ext.index_select(dim, index)
    return x


def conv_nd(x, w, stride, pairs, dilation, groups, mode="zeros"):
    """N-d convolution as a sum over kernel offsets of strided slices (any N)."""
    ndim = w.dim() - 2
    xp = pad(x, pairs, mode)
    n, c = x.shape[:2]
    cout, cg = w.shape[:2]
    kernel = w.shape[2:]
    out_size = [(xp.shape[2 + d] - dilation[d] * (kernel[d] - 1) - 1) // stride[d] + 1
                for d in range(ndim)]
    xg = xp.reshape(n, groups, c // groups, *xp.shape[2:])
    wg = w.reshape(groups, cout // groups, cg, *kernel)
    y = x.new_zeros(n, groups, cout // groups, *out_size)
    for offs in itertools.product(*[range(k) for k in kernel]):
        sl = [slice(None)] * 3
        for d in range(ndim):
            start = offs[d] * dilation[d]
            sl.append(slice(start, start + stride[d] * (out_size[d] - 1) + 1, stride[d]))
        patch = xg[tuple(sl)]
        wk = wg[(slice(None),) * 3 + tuple(offs)]
        y = y + torch.einsum("ngc...,goc->ngo...", patch, wk)
    return y.reshape(n, cout, *out_size)


def unfold_nd(x, kernel, stride, pairs, dilation, mode="zeros"):
    """[N, C·∏K, ∏O] by strided slicing (any N), F.unfold's layout."""
    ndim = len(kernel)
    xp = pad(x, pairs, mode)
    n, c = x.shape[:2]
    out_size = [(xp.shape[2 + d] - dilation[d] * (kernel[d] - 1) - 1) // stride[d] + 1
                for d in range(ndim)]
    cols = []
    for offs in itertools.product(*[range(k) for k in kernel]):
        sl = [slice(None)] * 2
        for d in range(ndim):
            start = offs[d] * dilation[d]
            sl.append(slice(start, start + stride[d] * (out_size[d] - 1) + 1, stride[d]))
        cols.append(xp[tuple(sl)].reshape(n, c, -1))
    return torch.stack(cols, dim=2).reshape(n, -1, cols[0].shape[-1])


def torch_conv(x, w, stride, pairs, dilation, groups, mode="zeros"):
    """torch's own convolution (N = 1..3) with explicit F.pad for every padding form."""
    flat = [p for left_right in reversed(pairs) for p in left_right]
    xp = F.pad(x, flat, mode="constant" if mode == "zeros" else mode)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[x.dim() - 2]
    return conv(xp, w, stride=stride, dilation=dilation, groups=groups)
