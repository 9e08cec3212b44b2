"""Connectivity rules: patterns whose structure is a reshape or a slice, one spatial dim at a time.

Each rule looks at one pattern (a `Site`); input sizes that the stride does
not divide, asymmetric or 'same' padding are first made explicit by padding or
narrowing the data leg (`canonical_steps`), so the rules apply to them too.

>>> from tnconv.spec.conv_spec import ConvSpec
>>> from tnconv.ops.convolution import unfold_network
>>> net = non_overlapping_patches(unfold_network(ConvSpec(3, 3, kernel_size=16, stride=16,
...                                                       input_size=(224, 224)), 1))
>>> net.tensor("X").indices, net.tensor("X").view.steps
(('n', 'g', 'c_in', 'o1', 'k1', 'i2'), (SplitLeg(dim=3, sizes=(14, 16)),))
"""

from __future__ import annotations

from typing import Optional

from tnconv.ir.network import Network
from tnconv.ir.views import Slice, SplitLeg, ViewStep, Window
from tnconv.rewrite.rules._common import (Site, canonical_pattern, canonical_steps, canonicalize, gathered_by,
                      scatters, sites, view_data_leg)
from tnconv.rewrite.rules.cleanup import prune_identity
from tnconv.rewrite.rules.slicing import slice_index

__all__ = ["non_overlapping_patches", "full_extent_kernel", "one_by_one_kernel"]


def _split_output(net: Network, site: Site) -> Network:
    """The scattered output index i = o·K + k becomes the output legs (o, k)."""
    at = net.output.index(site.i)
    output = net.output[:at] + (site.o, site.k) + net.output[at + 1:]
    return net.without(site.tensor.name).replace(output=output).pruned_sizes().validate()


def non_overlapping_patches(net: Network) -> Optional[Network]:
    """K = S, D = 1: tap k of output o reads pixel o·K + k, so leg i is a reshape into (o, k)."""
    for site in sites(net):
        p = site.pattern
        if p.dilation != 1 or p.stride != p.kernel_size or p.output_size < 2:
            continue
        if gathered_by(net, site):
            return view_data_leg(
                net, site, lambda dim: canonical_steps(p, dim) + (
                    SplitLeg(dim, (p.output_size, p.kernel_size)),),
                (site.o, site.k), {}).validate()
        exact = p.padding[0] == 0 and p.input_size == p.output_size * p.kernel_size
        if exact and scatters(net, site) and site.o not in net.output and site.k not in net.output:
            return _split_output(net, site)
    return None


def full_extent_kernel(net: Network) -> Optional[Network]:
    """One output position (the kernel covers the padded input), any stride: leg i becomes k."""
    for site in sites(net):
        p = site.pattern
        if p.output_size != 1 or p.kernel_size < 2 or not gathered_by(net, site):
            continue
        span = canonical_pattern(p).input_size

        def steps(dim: int) -> tuple[ViewStep, ...]:
            dilate = (Slice(dim, 0, span, p.dilation),) if p.dilation > 1 else ()
            return canonical_steps(p, dim) + dilate + (SplitLeg(dim, (1, p.kernel_size)),)

        return view_data_leg(net, site, steps, (site.o, site.k), {}).validate()
    return None


def one_by_one_kernel(net: Network) -> Optional[Network]:
    """A single tap reads pixel o·S − P: make the padding explicit, slice every S-th pixel
    (sub-tensor slicing, a strided view); the pattern is then an identity and is pruned."""
    for site in sites(net):
        p = site.pattern
        if p.kernel_size != 1 or not gathered_by(net, site):
            continue
        if not canonical_steps(p, 0) and p.stride == 1:
            continue  # already an identity: `identity_pruning` renames it
        sliced = slice_index(canonicalize(net, site), site.i,
                             range(0, canonical_pattern(p).input_size, p.stride))
        return prune_identity(sliced, Site(sliced.tensor(site.tensor.name)))
    return None
