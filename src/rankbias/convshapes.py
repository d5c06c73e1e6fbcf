"""The shapes of the conv nets (rankbias.convnets), without torch: what the plan, the memory
estimate and the cost projection need to know about a conv net before building it.

Three families, all conv → BatchNorm2d → ReLU:
- `cnn`: a small stack for CPU runs, `channels` like [32, "M", 64, "M", 64] (ints are 3×3 convs
  with padding 1, "M" a 2×2 max pool), then a linear head on the flattened features (as Paper
  B's `models/convnet.py`);
- `vgg11`, `vgg13`, `vgg16`: the same with the VGG widths (Paper B's `models/vgg.py`; on 32×32
  images its five pools leave 512 × 1 × 1 features);
- `resnet18`: the CIFAR ResNet-18 of Paper B's `models/resnet.py` (3×3 stem, no max pool, four
  stages of two basic blocks, 1×1 projection shortcuts, 4×4 average pool, linear head).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

POOL = "M"
VGG_CHANNELS = {  # Paper B's models/vgg.py cfg
    "vgg11": (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    "vgg13": (64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    "vgg16": (
        *(64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL),
        *(512, 512, 512, POOL, 512, 512, 512, POOL),
    ),
}
RESNET18_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, first block's stride)
CONV_ARCHS = ("cnn", *VGG_CHANNELS, "resnet18")
# Images per chunk when a logged epoch evaluates a split (fixed, like rankbias.plan.EVAL_CHUNK):
# activations [chunk, members·C, H, W] stay small.
CONV_EVAL_CHUNK = 256


@dataclass(frozen=True)
class Layer:
    """One weight of the net: a conv (kernel > 0) or the linear head (kernel 0)."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    in_size: int  # input height = width
    role: str  # "conv", "shortcut" (a ResNet projection) or "head"

    @property
    def out_size(self) -> int:
        padding = self.kernel // 2
        return (self.in_size + 2 * padding - self.kernel) // self.stride + 1 if self.kernel else 1

    @property
    def positions(self) -> int:
        """Output positions: Paper B's m_l, the number of patches a conv kernel is applied to."""
        return self.out_size**2

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """(out, in·k·k): the kernel reshaped as Paper B's code does."""
        return self.out_channels, self.in_channels * max(1, self.kernel) ** 2


@dataclass(frozen=True)
class ConvArch:
    name: str  # one of CONV_ARCHS
    in_shape: tuple[int, int, int]  # (channels, height, width), height = width
    out_dim: int
    channels: tuple = ()  # `cnn` only: ints and POOL

    def plan(self) -> tuple:
        """The plain families' conv widths and pools (ResNet-18 is built by `layers`)."""
        return self.channels if self.name == "cnn" else VGG_CHANNELS.get(self.name, ())

    def layers(self) -> list[Layer]:
        """Every weight in forward order; the ResNet's shortcut follows its block's convs."""
        channels, size = self.in_shape[0], self.in_shape[1]
        layers = []
        if self.name == "resnet18":
            layers.append(Layer(channels, 64, 3, 1, size, "conv"))
            channels = 64
            for width, first_stride in RESNET18_STAGES:
                for stride in (first_stride, 1):
                    first = Layer(channels, width, 3, stride, size, "conv")
                    layers += [first, Layer(width, width, 3, 1, first.out_size, "conv")]
                    if stride != 1 or channels != width:
                        layers.append(Layer(channels, width, 1, stride, size, "shortcut"))
                    channels, size = width, first.out_size
        else:
            for item in self.plan():
                if item == POOL:
                    size //= 2
                else:
                    layers.append(Layer(channels, int(item), 3, 1, size, "conv"))
                    channels = int(item)
        if size < 1:
            raise ValueError(f"{self.name}: the input {self.in_shape} is pooled to nothing")
        features = channels if self.name == "resnet18" else channels * size * size
        return layers + [Layer(features, self.out_dim, 0, 1, 1, "head")]

    @property
    def depth(self) -> int:
        """Weights in the net (the head included): the `depth` of its rows and names."""
        return len(self.layers())

    @property
    def width(self) -> int:
        """The widest conv's channels: the `width` of its rows and names."""
        return max(layer.out_channels for layer in self.layers()[:-1])

    def step_flops(self, batch: int) -> int:
        """Multiply-add FLOPs of one SGD step of one model: 2 per MAC in the forward pass, twice
        that in the backward pass (input and weight gradients), the first layer's input gradient
        left out; batch norm, ReLU and pooling left out."""
        total = 0
        for index, layer in enumerate(self.layers()):
            macs = layer.positions * math.prod(layer.matrix_shape)
            total += 2 * macs * (2 if index == 0 else 3)
        return batch * total
