"""Segmentation losses on SAM's low-resolution logits (the padded 256² frame)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice per sample and channel; the smoothing term makes an empty target ask for an empty mask."""
    probability = torch.sigmoid(logits)
    intersection = (probability * target).sum(dim=(-2, -1))
    total = probability.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1))
    return (1.0 - (2.0 * intersection + smooth) / (total + smooth)).mean()


def mode_loss(mode: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """decoder: Dice (SAMBA); lora: CE + 0.8·Dice (Cheap Lunch); multiclass: CE + Dice per class."""
    if mode == "decoder":
        return dice_loss(logits, target)
    cross_entropy = F.binary_cross_entropy_with_logits(logits, target)
    return cross_entropy + (0.8 if mode == "lora" else 1.0) * dice_loss(logits, target)
