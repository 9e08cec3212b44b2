"""Real convolution layers, typed in with their true hyper-parameters and CPU-sized batches.

Channels, kernel, stride, padding, dilation and groups are those of the named
network; the spatial size is a typical input of that layer; the batch is small
enough that one PyTorch reference call takes tens of milliseconds on 2 CPU
threads.

>>> layer = LAYERS["resnet18_stem"]
>>> layer.spec().output_size, layer.input_shape
((112, 112), (2, 3, 224, 224))
>>> LAYERS["same_even_4x4"].spec().padding
((1, 2), (1, 2))
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Union

import torch

import tnconv

__all__ = ["Layer", "LAYERS", "QUICK_LAYERS", "select_layers"]

Size = Union[int, tuple[int, ...]]
_MODULES = {
    (False, 1): torch.nn.Conv1d, (False, 2): torch.nn.Conv2d, (False, 3): torch.nn.Conv3d,
    (True, 1): torch.nn.ConvTranspose1d, (True, 2): torch.nn.ConvTranspose2d,
    (True, 3): torch.nn.ConvTranspose3d,
}


@dataclass(frozen=True)
class Layer:
    """One convolution layer of a real network and the batch it is benchmarked with."""

    name: str
    source: str
    in_channels: int
    out_channels: int
    kernel_size: Size
    input_size: tuple[int, ...]
    batch: int
    stride: Size = 1
    padding: Union[Size, str] = 0
    dilation: Size = 1
    groups: int = 1
    transposed: bool = False
    output_padding: Size = 0
    padding_mode: str = "zeros"

    @property
    def ndim(self) -> int:
        return len(self.input_size)

    def spec(self) -> tnconv.ConvSpec:
        """The layer's `tnconv.ConvSpec` (transposed layers: a transposed spec)."""
        return tnconv.ConvSpec(
            self.in_channels, self.out_channels, self.kernel_size, self.input_size,
            stride=self.stride, padding=self.padding, dilation=self.dilation,
            groups=self.groups, transposed=self.transposed, output_padding=self.output_padding,
            padding_mode=self.padding_mode)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.batch, self.in_channels, *self.input_size)

    @property
    def symmetric(self) -> bool:
        """Whether the padding is the same on both sides of every dimension."""
        return all(left == right for left, right in self.spec().padding)

    def module(self, weight: torch.Tensor) -> torch.nn.Module:
        """The torch module of this layer (no bias), holding `weight`."""
        cls = _MODULES[(self.transposed, self.ndim)]
        extra = {"output_padding": self.output_padding} if self.transposed else {}
        if self.padding_mode != "zeros":
            extra["padding_mode"] = self.padding_mode
        module = cls(self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                     padding=self.padding, dilation=self.dilation, groups=self.groups,
                     bias=False, **extra)
        module.weight = torch.nn.Parameter(weight, requires_grad=False)
        return module.to(weight.device)

    def describe(self) -> str:
        spec = self.spec()
        kind = "ConvTranspose" if self.transposed else "Conv"
        return (f"{kind}{self.ndim}d {self.in_channels}→{self.out_channels} "
                f"k={spec.kernel_size} s={spec.stride} p={self.padding} d={spec.dilation} "
                f"g={self.groups}, input {self.input_shape}, "
                f"{prod(spec.output_size)} output positions")


_LIST = (
    Layer("resnet18_stem", "ResNet-18 conv1", 3, 64, 7, (224, 224), batch=2, stride=2,
          padding=3),
    Layer("resnet_3x3", "ResNet-18 layer1 3×3", 64, 64, 3, (56, 56), batch=4, padding=1),
    Layer("resnet_1x1_down", "ResNet layer2 1×1/2 downsample", 64, 128, 1, (56, 56),
          batch=4, stride=2),
    Layer("mobilenetv2_dw", "MobileNetV2 depthwise 3×3 (t=6, 24 ch)", 144, 144, 3, (56, 56),
          batch=4, padding=1, groups=144),
    Layer("convnext_dw7", "ConvNeXt-T stage 1 depthwise 7×7", 96, 96, 7, (56, 56), batch=4,
          padding=3, groups=96),
    Layer("vit_b16_patch", "ViT-B/16 patch embedding", 3, 768, 16, (224, 224), batch=2,
          stride=16),
    Layer("deeplab_dilated", "DeepLabv3 dilated 3×3 (rate 2)", 256, 256, 3, (33, 33), batch=1,
          padding=2, dilation=2),
    Layer("resnext_grouped", "ResNeXt-50 32×4d stage 1 3×3", 128, 128, 3, (56, 56), batch=4,
          padding=1, groups=32),
    Layer("wav2vec2_frontend", "wav2vec2 feature encoder conv0", 1, 512, 10, (16000,),
          batch=4, stride=5),
    Layer("c3d_conv1", "C3D conv1a 3×3×3", 3, 64, 3, (16, 56, 56), batch=2, padding=1),
    Layer("same_even_4x4", "'same' conv, even 4×4 kernel", 64, 64, 4, (32, 32), batch=4,
          padding="same"),
    Layer("dcgan_transposed", "DCGAN generator ConvTranspose 4×4/2", 128, 64, 4, (16, 16),
          batch=1, stride=2, padding=1, transposed=True),
    # Added for the schedule issue: hyper-parameter combinations the layers above miss.
    Layer("efficientnet_dw5_s2", "EfficientNet-B0 stage 3 depthwise 5×5/2", 144, 144, 5,
          (56, 56), batch=4, stride=2, padding=2, groups=144),
    Layer("inception_1x7", "Inception-v3 Mixed_6b 1×7", 128, 128, (1, 7), (17, 17), batch=8,
          padding=(0, 3)),
    Layer("alexnet_grouped", "AlexNet conv2 5×5, 2 groups", 96, 256, 5, (27, 27), batch=4,
          padding=2, groups=2),
    Layer("conformer_dw1d", "Conformer conv module depthwise 1d, kernel 31", 256, 256, 31,
          (400,), batch=4, padding=15, groups=256),
    Layer("pwgan_dilated", "Parallel WaveGAN discriminator conv1d 3, dilation 8", 64, 64, 3,
          (16000,), batch=2, padding=8, dilation=8),
    Layer("cyclegan_reflect", "CycleGAN ResnetBlock 3×3, reflect padding", 256, 256, 3, (64, 64),
          batch=1, padding=1, padding_mode="reflect"),
    Layer("r3d_s2", "R3D-18 layer2 3×3×3/2", 64, 128, 3, (8, 28, 28), batch=2, stride=2,
          padding=1),
    Layer("unet_up", "U-Net up-convolution ConvTranspose 2×2/2", 128, 64, 2, (64, 64), batch=2,
          stride=2, transposed=True),
    # Added to check the stride-phase split and the matmul copy layouts on layers they were
    # not tuned on.
    Layer("mobilenetv2_dw_s2", "MobileNetV2 stage 2 depthwise 3×3/2", 96, 96, 3, (112, 112),
          batch=4, stride=2, padding=1, groups=96),
    Layer("tcn_dilated", "TCN residual block conv1d 5, dilation 4", 64, 64, 5, (4000,),
          batch=4, padding=8, dilation=4),
    Layer("i3d_1x3x3", "I3D / S3D separable 1×3×3", 64, 64, (1, 3, 3), (8, 56, 56), batch=2,
          padding=(0, 1, 1)),
    # Added to check the conv step family's depthwise choice on layers it was not tuned on.
    Layer("xception_dw3", "Xception middle flow depthwise 3×3", 728, 728, 3, (19, 19),
          batch=8, padding=1, groups=728),
    Layer("mobilenetv3_dw5", "MobileNetV3-Large depthwise 5×5 (72 ch, stride 2)", 72, 72, 5,
          (56, 56), batch=4, stride=2, padding=2, groups=72),
    Layer("convnext_s3_dw7", "ConvNeXt-T stage 3 depthwise 7×7", 384, 384, 7, (14, 14),
          batch=8, padding=3, groups=384),
    # Added to check the gather taken before a view, the taps laid out by blocks of rows and
    # the sliced sums of squares on layers they were not tuned on.
    Layer("shufflenetv2_dw3", "ShuffleNetV2 1.0x stage 2 depthwise 3×3", 116, 116, 3, (28, 28),
          batch=8, padding=1, groups=116),
    Layer("regnety_grouped", "RegNetY-400MF stage 2 3×3, groups of 8 channels", 104, 104, 3,
          (28, 28), batch=8, padding=1, groups=13),
    Layer("vgg16_conv3", "VGG-16 conv3_2 3×3", 256, 256, 3, (56, 56), batch=2, padding=1),
)

LAYERS: dict[str, Layer] = {layer.name: layer for layer in _LIST}

#: A small, varied subset for `--quick`: 2d dense, depthwise, long 1d, transposed.
QUICK_LAYERS = ("resnet_1x1_down", "mobilenetv2_dw", "wav2vec2_frontend", "dcgan_transposed")


def select_layers(names: str | None, quick: bool) -> list[Layer]:
    """Layers named in a comma-separated list (all, or the quick subset, when None)."""
    if names is None:
        chosen = QUICK_LAYERS if quick else tuple(LAYERS)
    else:
        chosen = tuple(n.strip() for n in names.split(",") if n.strip())
    unknown = [n for n in chosen if n not in LAYERS]
    if unknown:
        raise SystemExit(f"unknown layers {unknown}; known: {', '.join(LAYERS)}")
    return [LAYERS[n] for n in chosen]
