"""The voting network: a small 3D U-Net that fuses the modalities and their SAM masks into tumour regions.

It predicts the three nested BraTS regions (WT, TC, ET) as independent sigmoids and decodes them top-down,
ET inside TC inside WT, so the hierarchy holds by construction and no class can overwrite another (the bug
of SAMBA's public decoding). Instance normalisation (the shipped network's) keeps training independent of batch
size (1-2 patches on a CPU) but rescales every window to its own mean and spread, so how bright a core is against
the rest of the brain reaches the network only through the window's contrast; batch normalisation keeps absolute
levels (its statistics are fixed once trained); the one trained so far generalised worse (training/README.md).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..labels import ET_LABEL, NETC, SNFH

OUTPUT_REGIONS: tuple[str, ...] = ("WT", "TC", "ET")
DEFAULT_WIDTHS: tuple[int, ...] = (12, 24, 48)
NORMALISATIONS: dict[str, type[nn.Module]] = {"instance": nn.InstanceNorm3d, "batch": nn.BatchNorm3d}
DEFAULT_NORMALISATION = "instance"


def _double_conv(in_channels: int, out_channels: int, normalisation: str) -> nn.Sequential:
    norm = NORMALISATIONS[normalisation]
    layers: list[nn.Module] = []
    for channels_in in (in_channels, out_channels):
        layers += [nn.Conv3d(channels_in, out_channels, 3, padding=1, bias=False),
                   norm(out_channels, affine=True), nn.LeakyReLU(0.01, inplace=True)]
    return nn.Sequential(*layers)


class VotingUNet3D(nn.Module):
    """U-Net with ``len(widths)`` levels; input sides must be divisible by 2**(levels-1); ``normalisation``: a key
    of ``NORMALISATIONS``."""

    def __init__(self, in_channels: int, widths: tuple[int, ...] = DEFAULT_WIDTHS,
                 out_channels: int = len(OUTPUT_REGIONS), normalisation: str = DEFAULT_NORMALISATION) -> None:
        super().__init__()
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"unknown normalisation {normalisation!r}; expected one of {sorted(NORMALISATIONS)}")
        self.widths, self.normalisation = tuple(widths), normalisation
        self.encoders = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.encoders.append(_double_conv(channels, width, normalisation))
            channels = width
        self.pool = nn.MaxPool3d(2)
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsamplers.append(nn.ConvTranspose3d(channels, width, 2, stride=2))
            self.decoders.append(_double_conv(2 * width, width, normalisation))
            channels = width
        self.head = nn.Conv3d(channels, out_channels, 1)

    @property
    def divisor(self) -> int:
        return 2 ** (len(self.widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x if level == 0 else self.pool(x))
            skips.append(x)
        for upsample, decoder, skip in zip(self.upsamplers, self.decoders, reversed(skips[:-1])):
            x = decoder(torch.cat([upsample(x), skip], dim=1))
        return self.head(x)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def decode_regions(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """(3, ...) WT/TC/ET probabilities → internal label map (1 NETC, 2 SNFH, 3 ET) with ET ⊆ TC ⊆ WT."""
    whole = probabilities[0] >= threshold
    core = whole & (probabilities[1] >= threshold)
    enhancing = core & (probabilities[2] >= threshold)
    label = np.zeros(whole.shape, dtype=np.uint8)
    label[whole] = SNFH
    label[core] = NETC
    label[enhancing] = ET_LABEL
    return label
