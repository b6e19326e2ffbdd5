"""The registered ``conv`` network: DCGAN-style stacks for image data (Radford et al. 2016), sized from the image.

- As an encoder (``role = "encoder"``), input (..., C·H·W + k): the image, flattened in (C, H, W) order, then k extra
  values (the condition c, e.g. a one-hot label). Strided 4x4 convolutions halve H and W once per entry of
  ``channels``; the flattened feature map and the k extras go through an MLP of widths ``hidden`` to n_out.
  So c enters as a vector after the convolutional trunk.
- As a decoder (``role = "decoder"``), input (..., n_in) = [z, c]: an MLP of widths ``hidden`` to the smallest feature
  map, then 4x4 transposed convolutions double H and W back to (C, H, W); output (..., C·H·W).

For a quadrant CVAE (``observed_mask``: True at the pixels c shows) the encoder's input is [hidden pixels, c]:
it puts both back into the full image before the trunk; the decoder draws the full image and returns its hidden
pixels. There c enters the encoder as the observed part of the image and the decoder as a vector beside z.

H and W must be divisible by 2^len(channels). Leading batch dimensions (particles, ...) are kept.
"""

from __future__ import annotations

import torch
from torch import nn

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.nn.nets import mlp
from pyro_lvm.registry import NETWORKS


def _geometry(image_shape, channels: list[int], role: str) -> tuple[int, int, int]:
    if image_shape is None:
        raise PyroLVMError(f"network 'conv' as the {role} needs image data (a dataset with an image shape); use 'mlp'")
    c, h, w = (1, *image_shape) if len(image_shape) == 2 else tuple(image_shape)
    factor = 2 ** len(channels)
    if h % factor or w % factor:
        raise PyroLVMError(
            f"network 'conv' halves the image {len(channels)} time(s) (conv_channels = {list(channels)}), so H and W "
            f"must be divisible by {factor}; the images are {h}x{w}: use fewer conv_channels or resize the data"
        )
    return c, h, w


class ConvEncoder(nn.Module):
    def __init__(self, n_in: int, n_out: int, hidden: list[int], image_shape, channels: list[int], mask=None) -> None:
        super().__init__()
        c, h, w = _geometry(image_shape, channels, "encoder")
        self.shape, self.pixels = (c, h, w), c * h * w
        self.register_buffer("mask", None if mask is None else mask.clone())  # (C·H·W,) True where c shows
        if n_in < self.pixels:
            raise PyroLVMError(f"network 'conv': input of {n_in} values is smaller than the image ({self.pixels})")
        layers: list[nn.Module] = []
        for c_in, c_out in zip([c, *channels[:-1]], channels, strict=True):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.Softplus()]
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        features = channels[-1] * (h // 2 ** len(channels)) * (w // 2 ** len(channels))
        self.head = mlp([features + n_in - self.pixels, *hidden, n_out])

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        lead = inputs.shape[:-1]
        if self.mask is not None:  # [hidden, observed] -> the full image, in place of the first C·H·W inputs
            full = torch.empty(*lead, self.pixels, dtype=inputs.dtype, device=inputs.device)
            hidden = int((~self.mask).sum())
            full[..., ~self.mask] = inputs[..., :hidden]
            full[..., self.mask] = inputs[..., hidden : self.pixels]
            inputs = torch.cat([full, inputs[..., self.pixels :]], -1)
        image = inputs[..., : self.pixels].reshape(-1, *self.shape)  # (B', C, H, W)
        extra = inputs[..., self.pixels :].reshape(image.shape[0], -1)  # (B', k)
        out = self.head(torch.cat([self.trunk(image), extra], -1))
        return out.reshape(*lead, -1)


class ConvDecoder(nn.Module):
    def __init__(self, n_in: int, n_out: int, hidden: list[int], image_shape, channels: list[int], mask=None) -> None:
        super().__init__()
        c, h, w = _geometry(image_shape, channels, "decoder")
        self.register_buffer("mask", None if mask is None else mask.clone())  # the output: pixels where it is False
        if n_out != c * h * w - (0 if mask is None else int(mask.sum())):
            raise PyroLVMError(f"network 'conv' as a decoder outputs the image ({c * h * w} values), not {n_out}")
        down = 2 ** len(channels)
        self.start = (channels[-1], h // down, w // down)
        self.stem = nn.Sequential(mlp([n_in, *hidden, channels[-1] * (h // down) * (w // down)]), nn.Softplus())
        layers: list[nn.Module] = []
        outs = [*reversed(channels[:-1]), c]
        for i, (c_in, c_out) in enumerate(zip(reversed(channels), outs, strict=True)):
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if i < len(outs) - 1:
                layers.append(nn.Softplus())
        self.up = nn.Sequential(*layers)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        lead = inputs.shape[:-1]
        maps = self.stem(inputs.reshape(-1, inputs.shape[-1])).reshape(-1, *self.start)
        image = self.up(maps).reshape(*lead, -1)
        return image if self.mask is None else image[..., ~self.mask]


@NETWORKS.register("conv")
def conv_network(
    n_in: int,
    n_out: int,
    hidden: list[int],
    image_shape=None,
    role: str | None = None,
    conv_channels: list[int] | None = None,
    observed_mask: torch.Tensor | None = None,
    **_: object,
) -> nn.Module:
    """The DCGAN-style encoder or decoder of the module docstring."""
    channels = list(conv_channels or [32, 64])
    if role == "decoder":
        return ConvDecoder(n_in, n_out, hidden, image_shape, channels, observed_mask)
    if role == "encoder":
        return ConvEncoder(n_in, n_out, hidden, image_shape, channels, observed_mask)
    user = "a prior's network" if role is None else f"the {role} network"
    raise PyroLVMError(f"network 'conv' maps images, and {user} does not take one (its input is c); use net = 'mlp'")
