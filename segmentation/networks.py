"""Networks of our own, built from MONAI parts, that a bundle may name (see ``bundle.ALLOWED_TARGETS``)."""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.layers import Conv
from monai.networks.nets import UNet


class UNetWithFineHead(torch.nn.Module):
    """A MONAI ``UNet`` whose logits a small head on the input grid itself corrects.

    Why: a UNet with strides 2-2-2 downsamples in its first layer, so its finest feature maps are two
    voxels wide (6 mm on the 3 mm CT grid) and only its last transposed convolution sees single
    voxels; vessels one or two voxels across (celiac trunk, portal vein) get lost between organs.
    The head sees the image at full resolution beside the UNet's class probabilities and adds a
    correction to the logits. Its last layer starts at zero, so a new head reproduces the UNet
    exactly and training it (with the UNet frozen) can only start from the UNet's result.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, channels: Sequence[int],
                 strides: Sequence[int], num_res_units: int = 1, head_channels: int = 16) -> None:
        super().__init__()
        self.unet = UNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                         channels=channels, strides=strides, num_res_units=num_res_units)
        conv = Conv[Conv.CONV, spatial_dims]
        self.head = torch.nn.Sequential(
            conv(in_channels + out_channels, head_channels, kernel_size=3, padding=1),
            torch.nn.PReLU(head_channels),
            conv(head_channels, head_channels, kernel_size=3, padding=1),
            torch.nn.PReLU(head_channels),
            conv(head_channels, out_channels, kernel_size=1),
        )
        torch.nn.init.zeros_(self.head[-1].weight)
        torch.nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.unet(x)
        return logits + self.head(torch.cat([x, torch.softmax(logits, dim=1)], dim=1))

    def freeze_unet(self) -> None:
        """Train only the head: the UNet's weights stay as they were loaded."""
        for parameter in self.unet.parameters():
            parameter.requires_grad_(False)
