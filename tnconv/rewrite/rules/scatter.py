"""Scatter to gather: the adjoint of a zero-padded pattern is a pattern that gathers.

A pattern whose input leg i is an output (the input VJP, a transposed
convolution) scatters: R[i] = Σ_{k,o} Π[k, o, i] D[o, k]. With zero padding,
i = o·S + k·D − P, so with the tap order reversed (k' = K−1−k) and the o leg
spread out by S (zeros between), o·S = i + k'·D − ((K−1)·D − P): a stride-1
pattern that gathers from o. The weight's k leg is flipped, the data's o leg
dilated, and `selection_lowering` then turns the new pattern into a window
view — the textbook "transposed convolution = convolution of the dilated,
padded cotangent with the flipped kernel", derived on the network.

>>> from tnconv.spec.conv_spec import ConvSpec
>>> from tnconv.ops.autodiff import vjp_network
>>> from tnconv.ops.convolution import forward_network
>>> spec = ConvSpec(1, 1, kernel_size=3, input_size=(8,), stride=2, padding=1)
>>> net = scatter_to_gather(vjp_network(forward_network(spec, 1), "input"))
>>> net.tensor("Π1").value.describe()
'K=3 S=1 D=1 P=(1,2) I=7 O=8 zeros'
>>> net.tensor("V").view.describe()
'reshape(1, 1, 1, 4) -> dilate(dim 3, ×2)'
"""

from __future__ import annotations

from typing import Optional

from tnconv.spec.index_pattern import IndexPattern
from tnconv.ir.network import Network, Tensor
from tnconv.ir.views import Dilate, Flip
from tnconv.rewrite.rules._common import add_view, data_scatter, sites

__all__ = ["scatter_to_gather"]


def _gather_pattern(p: IndexPattern) -> IndexPattern:
    """The stride-1 pattern from the dilated o leg to i, taps reversed."""
    dilated = (p.output_size - 1) * p.stride + 1
    left = (p.kernel_size - 1) * p.dilation - p.padding[0]
    right = max(0, p.input_size - dilated - left + (p.kernel_size - 1) * p.dilation)
    return IndexPattern(p.kernel_size, 1, p.dilation, (left, right), input_size=dilated,
                        output_size=p.input_size, mode="zeros")


def scatter_to_gather(net: Network) -> Optional[Network]:
    """Replace a scattering zero-padded pattern by the gathering one (flip k, dilate o)."""
    for site in sites(net):
        if not data_scatter(net, site):
            continue
        p = site.pattern
        tensors = []
        for t in net.tensors:
            if t.name == site.tensor.name:
                t = Tensor(t.name, (site.k, site.i, site.o), "pattern", _gather_pattern(p))
            else:
                if site.k in t.indices:
                    t = add_view(net, t, (Flip(t.indices.index(site.k)),), t.indices)
                if site.o in t.indices and p.stride > 1:
                    t = add_view(net, t, (Dilate(t.indices.index(site.o), p.stride),), t.indices)
            tensors.append(t)
        dilated = (p.output_size - 1) * p.stride + 1
        sizes = tuple((i, dilated if i == site.o else s) for i, s in net.sizes)
        return net.replace(tensors=tuple(tensors), sizes=sizes).validate()
    return None
