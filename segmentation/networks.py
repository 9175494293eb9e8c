"""Networks of our own, built from MONAI parts, that a bundle may name (see ``bundle.ALLOWED_TARGETS``)."""

from __future__ import annotations

import math
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

    #: voxels each side that the head reads to correct one voxel (two 3x3x3 convolutions, then 1x1x1)
    HEAD_REACH = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.refine(x, self.unet(x))

    def refine(self, x: torch.Tensor, unet_logits: torch.Tensor, slab_voxels: int | None = None) -> torch.Tensor:
        """The head's correction added to ``unet_logits`` (``[B, C, *spatial]``, from ``self.unet`` on ``x``).

        Inference runs the UNet by sliding window and then this once, over the part of the volume
        that wants the head (``segmentation.ct.fine_head_box``): the head is local, so running it per
        window computed it twice where windows overlap (the end-to-end time on a two-window CT went
        7.8 -> 10.9 s that way). With ``slab_voxels`` it goes along the last axis in slabs of about
        that many voxels, each read with ``HEAD_REACH`` voxels more on both sides, so the result
        equals one pass at a slab's memory.
        """
        if slab_voxels is None:
            return unet_logits + self._correction(x, unet_logits)
        depth = x.shape[-1]
        step = max(1, slab_voxels // max(1, math.prod(x.shape[2:-1])))
        out = unet_logits.clone()
        for start in range(0, depth, step):
            stop = min(depth, start + step)
            lo, hi = max(0, start - self.HEAD_REACH), min(depth, stop + self.HEAD_REACH)
            correction = self._correction(x[..., lo:hi], unet_logits[..., lo:hi])
            out[..., start:stop] += correction[..., start - lo:stop - lo].to(out.dtype)
        return out

    def _correction(self, x: torch.Tensor, unet_logits: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([x, torch.softmax(unet_logits, dim=1)], dim=1))

    def freeze_unet(self) -> None:
        """Train only the head: the UNet's weights stay as they were loaded."""
        for parameter in self.unet.parameters():
            parameter.requires_grad_(False)
