"""Stride phases: a strided scatter as a stride-1 gather per output phase (sub-pixel form).

A zero-padded pattern whose input leg i is an output (an input VJP, a transposed
convolution) scatters: R[i] = Σ_{k,o} Π[k, o, i] D[o, k], i = o·S + k − P. With
the taps split by phase, k = b·S + r (b < B = ⌈K/S⌉, r < S, zero past K), every
pixel is i = (o + b)·S + r − P: output position a = o + b in phase r. So

    Π[k, o, i] = Σ_{r, a, b} T[r, b, k] · G[b, o, a] · F[r, a, i]

with T the tap split (a view of the weight: padded to B·S taps, split into
(b, r)), G[b, o, a] = [a = o + b] a stride-1 pattern, and F[r, a, i] =
[i = a·S + r − P] the interleaving of the S phases: a fold of non-overlapping
patches (K = S), one pass. G is written as the gather it is with b reversed
(o = a + b' − (B − 1), the weight's b leg flipped), so `selection_lowering`
turns it into a window view of D. Where `scatter_to_gather` spreads D out by S
(S − 1 zeros between its pixels) and every tap then multiplies mostly zeros,
this contracts only the B taps each output pixel really meets: S^N times less
work in N strided dimensions, and no dilated copy of D.

>>> from tnconv.spec.conv_spec import ConvSpec
>>> from tnconv.ops.convolution import forward_network
>>> spec = ConvSpec(1, 1, kernel_size=5, input_size=(4,), stride=2, padding=2, transposed=True)
>>> net = stride_phases(forward_network(spec, 1))
>>> [(t.name, t.value.describe()) for t in net.tensors if t.role == "pattern"]
[('Π1.shift', 'K=3 S=1 D=1 P=(2,2) I=4 O=6 zeros'), ('Π1.phase', 'K=2 S=2 D=1 P=(2,3) I=7 O=6 zeros')]
>>> net.tensor("W").view.describe()
'reshape(1, 1, 1, 5) -> pad(dim 3, 0, 1, zeros) -> split(dim 3 -> (3, 2)) -> flip(dim 3)'
"""

from __future__ import annotations

from typing import Optional

from tnconv.ir.network import Network, Tensor
from tnconv.ir.views import Flip, Pad, SplitLeg
from tnconv.rewrite.rules._common import Site, add_view, data_scatter, sites
from tnconv.spec.index_pattern import IndexPattern

__all__ = ["stride_phases"]


def _applies(net: Network, site: Site) -> bool:
    p = site.pattern
    if p.dilation != 1 or p.stride < 2 or p.kernel_size <= p.stride:
        return False  # K <= S: one tap per phase already (and F itself is such a pattern)
    return data_scatter(net, site)


def _fresh(net: Network, base: str) -> str:
    taken = set(net.size_map)
    name = base
    while name in taken:
        name += "'"
    return name


def stride_phases(net: Network) -> Optional[Network]:
    """Split a strided, zero-padded scatter (K > S, D = 1) into a stride-1 gather per phase
    and the fold that interleaves the phases."""
    for site in sites(net):
        if not _applies(net, site):
            continue
        p = site.pattern
        stride, left = p.stride, p.padding[0]
        taps = -(-p.kernel_size // stride)                  # B
        positions = p.output_size + taps - 1                # A
        phase, shift, pos = (_fresh(net, f"r_{site.k}"), _fresh(net, f"b_{site.k}"),
                             _fresh(net, f"a_{site.i}"))
        gather = IndexPattern(taps, 1, 1, (taps - 1, taps - 1), input_size=p.output_size,
                              output_size=positions)
        interleave = IndexPattern(stride, stride, 1, (left, positions * stride - left
                                                      - p.input_size),
                                  input_size=p.input_size, output_size=positions)
        tensors = []
        for t in net.tensors:
            if t.name == site.tensor.name:
                tensors.append(Tensor(f"{t.name}.shift", (shift, pos, site.o), "pattern",
                                      gather))
                tensors.append(Tensor(f"{t.name}.phase", (phase, pos, site.i), "pattern",
                                      interleave))
                continue
            if site.k in t.indices:
                dim = t.indices.index(site.k)
                steps = (Pad(dim, 0, taps * stride - p.kernel_size, "zeros"),
                         SplitLeg(dim, (taps, stride)), Flip(dim))
                if steps[0].right == 0:
                    steps = steps[1:]
                t = add_view(net, t, steps, t.indices[:dim] + (shift, phase)
                             + t.indices[dim + 1:])
            tensors.append(t)
        sizes = dict(net.sizes)
        sizes.update({phase: stride, shift: taps, pos: positions})
        return net.replace(tensors=tuple(tensors), sizes=tuple(sizes.items())) \
            .pruned_sizes().validate()
    return None
