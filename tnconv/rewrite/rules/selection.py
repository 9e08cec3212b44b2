"""Selection lowering: a one-hot pattern contracted with data becomes a window view of the data.

Σ_i Π[k, o, i] X[…, i, …] reads pixel o·S + k·D − P of X (or the padded
pixel), so it is X padded as the pattern says and viewed as sliding windows
(`Tensor.unfold`): no dense [K, O, I] tensor and no multiplication by zeros and
ones. This is the general fallback after the connectivity rules.

>>> from tnconv.spec.conv_spec import ConvSpec
>>> from tnconv.ops.convolution import unfold_network
>>> net = selection_lowering(unfold_network(ConvSpec(1, 1, kernel_size=10, stride=5,
...                                                  input_size=(16000,)), 1))
>>> [t.name for t in net.tensors], net.tensor("X").view.describe()
(['X'], 'reshape(1, 1, 1, 16000) -> window(dim 3, size 10, step 5, dilation 1)')
"""

from __future__ import annotations

from typing import Optional

from tnconv.ir.network import Network
from tnconv.ir.views import ViewStep, Window
from tnconv.rewrite.rules._common import canonical_steps, gathered_by, sites, view_data_leg

__all__ = ["selection_lowering"]


def selection_lowering(net: Network) -> Optional[Network]:
    """Any pattern that gathers from data tensors: pad or narrow, then a sliding-window view."""
    for site in sites(net):
        if not gathered_by(net, site):
            continue
        p = site.pattern

        def steps(dim: int) -> tuple[ViewStep, ...]:
            return canonical_steps(p, dim) + (Window(dim, p.kernel_size, p.stride, p.dilation),)

        return view_data_leg(net, site, steps, (site.o, site.k), {}).validate()
    return None
