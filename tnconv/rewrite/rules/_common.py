"""What the rules share: pattern sites, how a pattern meets the network, and leg surgery.

A *site* is a pattern tensor whose value is an `IndexPattern`; its legs mean
(kernel tap, output pixel, input pixel) by position, whatever their names (a
transposed convolution's pattern carries (k, i, o) by name with the same
[K, O, I] meaning). A site *gathers* when its input leg is carried only by the
pattern and by data tensors that carry neither of its other legs, and is not
an output: then Σ_i Π[k, o, i] X[…, i, …] is a selection from X, and the
pattern can become a view of X (never of a selection tensor's indices). It *scatters* when its input leg is an output
that no other tensor carries.

>>> from tnconv.spec.conv_spec import ConvSpec
>>> from tnconv.ops.convolution import forward_network
>>> net = forward_network(ConvSpec(1, 1, kernel_size=3, input_size=(5,), padding=1), 1)
>>> site = next(sites(net))
>>> (site.k, site.o, site.i), [t.name for t in gathered_by(net, site)]
(('k1', 'o1', 'i1'), ['X'])
>>> canonical_steps(site.pattern, 3)
(Pad(dim=3, left=1, right=1, mode='zeros'),)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from tnconv.spec.index_pattern import IndexPattern
from tnconv.ir.network import Network, Tensor
from tnconv.ir.selection import is_sampling
from tnconv.ir.views import Pad, Slice, View, ViewStep

__all__ = ["Site", "sites", "gathered_by", "scatters", "data_scatter", "view_data_leg", "canonical_steps",
           "canonical_pattern", "canonicalize", "rename_index", "drop_from_output", "add_view"]


@dataclass(frozen=True)
class Site:
    """One pattern tensor and the meaning of its legs."""

    tensor: Tensor

    @property
    def pattern(self) -> IndexPattern:
        return self.tensor.value  # type: ignore[return-value]

    @property
    def k(self) -> str:
        return self.tensor.indices[0]

    @property
    def o(self) -> str:
        return self.tensor.indices[1]

    @property
    def i(self) -> str:
        return self.tensor.indices[2]


def sites(net: Network) -> Iterator[Site]:
    """Pattern tensors with an `IndexPattern` value, in network order."""
    for t in net.tensors:
        if t.role == "pattern" and isinstance(t.value, IndexPattern) and len(t.indices) == 3:
            yield Site(t)


def gathered_by(net: Network, site: Site) -> Optional[tuple[Tensor, ...]]:
    """The data tensors the site selects from, or None when it does not gather."""
    if site.i in net.output:
        return None
    carriers = net.carriers(site.i, exclude=(site.tensor.name,))
    if not carriers or any(t.is_constant or is_sampling(t) for t in carriers):
        return None  # a selection's indices are never viewed
    if any(site.k in t.indices or site.o in t.indices for t in carriers):
        return None
    return tuple(carriers)


def scatters(net: Network, site: Site) -> bool:
    """The site's input leg is an output index carried by no other tensor."""
    others = net.carriers(site.i, exclude=(site.tensor.name,))
    return site.i in net.output and not others


def data_scatter(net: Network, site: Site) -> bool:
    """A zero-padded site that scatters, whose k and o legs are no outputs and are carried by
    data (no constant, no selection): a rule may view those legs on their carriers."""
    if site.pattern.mode != "zeros" or not scatters(net, site):
        return False
    if site.k in net.output or site.o in net.output:
        return False
    for leg in (site.k, site.o):
        others = net.carriers(leg, exclude=(site.tensor.name,))
        if not others or any(t.is_constant or is_sampling(t) for t in others):
            return False
    return True


def add_view(net: Network, tensor: Tensor, steps: tuple[ViewStep, ...],
             indices: tuple[str, ...]) -> Tensor:
    """`tensor` with `steps` appended to its view and new legs `indices`."""
    view = tensor.view if tensor.view is not None else View(net.shape_of(tensor))
    return Tensor(tensor.name, indices, tensor.role, tensor.value, view.then(*steps))


def view_data_leg(net: Network, site: Site, steps: Callable[[int], tuple[ViewStep, ...]],
                  legs: tuple[str, ...], sizes: dict[str, int]) -> Network:
    """Remove the site; every data tensor it gathers from views leg i through `steps(dim)`.

    The viewed leg becomes `legs`; `sizes` declares their sizes.
    """
    carriers = set(t.name for t in gathered_by(net, site) or ())
    tensors = []
    for t in net.tensors:
        if t.name == site.tensor.name:
            continue
        if t.name in carriers:
            dim = t.indices.index(site.i)
            t = add_view(net, t, steps(dim), t.indices[:dim] + legs + t.indices[dim + 1:])
        tensors.append(t)
    declared = dict(net.sizes)
    declared.update(sizes)
    return net.replace(tensors=tuple(tensors), sizes=tuple(declared.items())).pruned_sizes()


def canonical_steps(pattern: IndexPattern, dim: int) -> tuple[ViewStep, ...]:
    """Pad / narrow the input leg to exactly the pixels the taps reach, padding made explicit.

    Afterwards tap k of output o reads position o·S + k·D of the viewed leg. A
    negative left padding (a pattern that starts reading past pixel 0) narrows.
    """
    left, size = pattern.padding[0], pattern.input_size
    extent = canonical_pattern(pattern).input_size
    pad_left, offset = max(0, left), max(0, -left)
    pad_right = max(0, extent - left - size)
    steps: list[ViewStep] = []
    if pad_left or pad_right:
        steps.append(Pad(dim, pad_left, pad_right, pattern.mode))
    if offset or size + pad_left + pad_right > extent:
        steps.append(Slice(dim, offset, offset + extent))
    return tuple(steps)


def canonical_pattern(pattern: IndexPattern) -> IndexPattern:
    """The pattern on the leg `canonical_steps` makes: no padding, nothing unread at the end."""
    k, s, d = pattern.kernel_size, pattern.stride, pattern.dilation
    extent = (pattern.output_size - 1) * s + (k - 1) * d + 1
    return IndexPattern(pattern.kernel_size, pattern.stride, pattern.dilation, (0, 0), extent,
                        pattern.output_size, "zeros")


def canonicalize(net: Network, site: Site) -> Network:
    """Make the site's padding and unread trailing pixels explicit on the data it gathers from."""
    p = site.pattern
    carriers = {t.name for t in gathered_by(net, site) or ()}
    tensors = []
    for t in net.tensors:
        if t.name == site.tensor.name:
            t = Tensor(t.name, t.indices, "pattern", canonical_pattern(p))
        elif t.name in carriers and canonical_steps(p, 0):
            t = add_view(net, t, canonical_steps(p, t.indices.index(site.i)), t.indices)
        tensors.append(t)
    extent = canonical_pattern(p).input_size
    sizes = tuple((i, extent if i == site.i else s) for i, s in net.sizes)
    return net.replace(tensors=tuple(tensors), sizes=sizes).validate()


def rename_index(net: Network, old: str, new: str) -> Network:
    """Rename index `old` to `new` on every tensor and in the output (sizes must agree)."""
    def swap(legs: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(new if i == old else i for i in legs)

    tensors = tuple(Tensor(t.name, swap(t.indices), t.role, t.value, t.view) for t in net.tensors)
    return net.replace(tensors=tensors, output=swap(net.output)).pruned_sizes()


def drop_from_output(net: Network, index: str) -> Network:
    """Drop a size-1 output index that no tensor carries any more."""
    if index in net.output and not any(index in t.indices for t in net.tensors):
        return net.replace(output=tuple(i for i in net.output if i != index)).pruned_sizes()
    return net
