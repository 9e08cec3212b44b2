"""The tensors one layer is benchmarked on: input, weight, output cotangent, module.

Every operation of the suite reads its arguments from a `Case`. For the
transposed-convolution operation, a regular layer contributes its adjoint: the
transposed convolution with the same hyper-parameters that maps the layer's
output space back onto its input (this is what its input VJP computes);
a transposed layer contributes itself.

>>> from benchmarks.layers import LAYERS
>>> case = make_case(LAYERS["resnet_1x1_down"], torch.device("cpu"))
>>> tuple(case.gy.shape), case.tspec.output_size
((4, 128, 28, 28), (56, 56))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

import tnconv

from .layers import Layer

__all__ = ["Case", "make_case"]


@dataclass
class Case:
    """Arguments of every operation on one layer, on one device."""

    layer: Layer
    spec: tnconv.ConvSpec
    x: torch.Tensor
    w: torch.Tensor
    gy: torch.Tensor
    module: torch.nn.Module
    tspec: Optional[tnconv.ConvSpec]
    tin: Optional[torch.Tensor]


def adjoint_spec(spec: tnconv.ConvSpec) -> Optional[tnconv.ConvSpec]:
    """The transposed convolution mapping `spec`'s output back to its input size.

    None where torch's transposed convolution cannot express it (asymmetric padding, a
    padding mode other than zeros).
    """
    if any(left != right for left, right in spec.padding) or spec.padding_mode != "zeros":
        return None
    padding = tuple(left for left, _ in spec.padding)
    natural = spec.replace(
        in_channels=spec.out_channels, out_channels=spec.in_channels,
        input_size=spec.output_size, padding=padding, transposed=True).output_size
    extra = tuple(i - n for i, n in zip(spec.input_size, natural))
    return spec.replace(in_channels=spec.out_channels, out_channels=spec.in_channels,
                        input_size=spec.output_size, padding=padding, transposed=True,
                        output_padding=extra)


def make_case(layer: Layer, device: torch.device, seed: int = 0,
              dtype: torch.dtype = torch.float32) -> Case:
    """Random tensors for `layer` on `device` (same values for the same seed)."""
    spec = layer.spec()
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=dtype).to(device)

    x = rand(*layer.input_shape)
    w = rand(*spec.weight_shape)
    gy = rand(layer.batch, spec.out_channels, *spec.output_size)
    tspec = spec if layer.transposed else adjoint_spec(spec)
    tin = x if layer.transposed else gy
    return Case(layer, spec, x, w, gy, layer.module(w), tspec, tin if tspec else None)
