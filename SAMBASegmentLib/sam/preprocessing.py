"""Slice ↔ SAM input frame, without ever stretching a slice.

The longest *physical* side goes to the model's input size and the other keeps its physical aspect, so
non-square slices and anisotropic pixels (a coronal slice of a 5 mm axial series) are not distorted. The image
is then min-max normalised and zero-padded at the bottom/right, as LiteMedSAM was trained. Points and box
corners go through the same mapping as pixel centres, so prompts land where the clinician put them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SliceFrame:
    """The mapping between one slice's pixel grid (rows, columns) and the model's square input."""

    shape: tuple[int, int]
    resized: tuple[int, int]
    input_size: int

    @classmethod
    def for_slice(cls, shape: tuple[int, int], pixel_spacing: tuple[float, float], input_size: int) -> "SliceFrame":
        physical = (shape[0] * pixel_spacing[0], shape[1] * pixel_spacing[1])
        scale = input_size / max(physical)
        resized = (max(1, min(input_size, round(physical[0] * scale))), max(1, min(input_size, round(physical[1] * scale))))
        return cls(tuple(shape), resized, input_size)

    @property
    def scale(self) -> tuple[float, float]:
        return self.resized[0] / self.shape[0], self.resized[1] / self.shape[1]

    def to_model_xy(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Pixel (row, col) → model (x, y), pixel centre to pixel centre."""
        scale_row, scale_col = self.scale
        x = (np.asarray(cols, dtype=np.float64) + 0.5) * scale_col - 0.5
        y = (np.asarray(rows, dtype=np.float64) + 0.5) * scale_row - 0.5
        return np.stack([x, y], axis=-1)

    def box_to_model(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """Inclusive pixel box (row0, col0, row1, col1) → model (x0, y0, x1, y1)."""
        corners = self.to_model_xy(np.array([box[0], box[2]]), np.array([box[1], box[3]]))
        return corners.reshape(-1)

    def image_to_model(self, image: np.ndarray) -> torch.Tensor:
        """2D slice → (3, H', W') float tensor in [0, 1] at the resized (not yet padded) size."""
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
        if tuple(tensor.shape[-2:]) != self.resized:
            tensor = F.interpolate(tensor, size=self.resized, mode="bilinear", align_corners=False, antialias=True)
        low, high = tensor.min(), tensor.max()
        tensor = (tensor - low) / torch.clamp(high - low, min=1e-8)
        return tensor[0].expand(3, -1, -1)

    def logits_to_slice(self, logits: torch.Tensor) -> torch.Tensor:
        """Decoder logits (..., h, w) over the padded square → logits on the slice's pixel grid."""
        if logits.shape[-1] != self.input_size:
            logits = F.interpolate(logits, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        logits = logits[..., : self.resized[0], : self.resized[1]]
        return F.interpolate(logits, size=self.shape, mode="bilinear", align_corners=False)

    def mask_to_model_logits(self, mask: np.ndarray, low_res: int) -> torch.Tensor:
        """A binary mask on the slice → (1, 1, low_res, low_res) logits in the padded frame (SAM's mask prompt)."""
        tensor = torch.from_numpy(mask.astype(np.float32))[None, None]
        resized = F.interpolate(tensor, size=self.resized, mode="bilinear", align_corners=False)
        padded = F.pad(resized, (0, self.input_size - self.resized[1], 0, self.input_size - self.resized[0]))
        low = F.interpolate(padded, size=(low_res, low_res), mode="bilinear", align_corners=False)
        return (low - 0.5) * 20.0
