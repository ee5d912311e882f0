"""SAM driven by training prompts: prompt tensors and targets in the model frame, and a batched forward.

Everything goes through the engine's ``SliceFrame`` (pixel-centre mapping, aspect kept, zero padding), so a
prompt at training time lands exactly where the engine would put it at inference time.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from SAMBASegmentLib.prompts import PixelBox
from SAMBASegmentLib.sam.multiclass import CLASS_ORDER
from SAMBASegmentLib.sam.preprocessing import SliceFrame

from .dataset import SliceRecord
from .prompting import Click

INPUT_SIZE = 256


@dataclass
class PromptBatch:
    """One prompt per sample; every sample has the same number of clicks (SAM batches need equal lengths)."""

    boxes: torch.Tensor | None  # (B, 4) model x0, y0, x1, y1
    coords: torch.Tensor | None  # (B, N, 2) model x, y
    labels: torch.Tensor | None  # (B, N) 1 positive, 0 negative


def frame_of(record: SliceRecord) -> SliceFrame:
    return SliceFrame.for_slice(record.image.shape, record.spacing, INPUT_SIZE)


def prompt_batch(frames: list[SliceFrame], boxes: list[PixelBox] | None, clicks: list[list[Click]]) -> PromptBatch:
    box_tensor = coords = labels = None
    if boxes is not None:
        box_tensor = torch.tensor(np.stack([f.box_to_model(b) for f, b in zip(frames, boxes)]), dtype=torch.float32)
    if clicks and clicks[0]:
        coords = torch.tensor(np.stack([f.to_model_xy(np.array([c.row for c in cs]), np.array([c.col for c in cs]))
                                        for f, cs in zip(frames, clicks)]), dtype=torch.float32)
        labels = torch.tensor([[int(c.positive) for c in cs] for cs in clicks], dtype=torch.int64)
    return PromptBatch(box_tensor, coords, labels)


def _to_frame(plane: np.ndarray, frame: SliceFrame) -> torch.Tensor:
    """A label plane in the padded model frame, nearest neighbour (labels are never blended)."""
    tensor = torch.from_numpy(plane.astype(np.float32))[None, None]
    resized = F.interpolate(tensor, size=frame.resized, mode="nearest-exact")
    return F.pad(resized, (0, INPUT_SIZE - frame.resized[1], 0, INPUT_SIZE - frame.resized[0]))[0]


def targets(records: list[SliceRecord], frames: list[SliceFrame], multiclass: bool) -> torch.Tensor:
    """(B, 1, 256, 256) whole tumour, or (B, 3, 256, 256) one channel per class of ``CLASS_ORDER``."""
    planes = []
    for record, frame in zip(records, frames):
        label = _to_frame(record.label, frame)
        planes.append(torch.cat([label == c for c in CLASS_ORDER]) if multiclass else label > 0)
    return torch.stack(planes).float()


def model_images(records: list[SliceRecord], frames: list[SliceFrame]) -> torch.Tensor:
    """(B, 3, H', W') images as the engine frames them; ``Sam.preprocess`` pads them to the input size."""
    images = [frame.image_to_model(record.image) for record, frame in zip(records, frames)]
    return torch.stack([F.pad(i, (0, INPUT_SIZE - i.shape[-1], 0, INPUT_SIZE - i.shape[-2])) for i in images])


class PromptedSam(nn.Module):
    """Prompt encoder + mask decoder over a batch of (embedding, prompt) pairs, or images through the encoder.

    segment_anything's decoder serves one image per call, so samples are decoded one by one; DDP wraps this
    module, so every trainable part is reached through ``forward``.
    """

    def __init__(self, model: nn.Module, bf16_encoder: bool = False):
        super().__init__()
        self.model = model
        self.bf16_encoder = bf16_encoder

    @property
    def sam(self) -> nn.Module:
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        sam = self.sam
        autocast = torch.autocast(images.device.type, dtype=torch.bfloat16) if self.bf16_encoder else nullcontext()
        with autocast:
            return sam.image_encoder(sam.preprocess(images)).float()

    def forward(self, inputs: torch.Tensor, prompts: PromptBatch, multimask: bool = False,
                images: bool = False) -> torch.Tensor:
        """Low-res logits (B, 1 or 3, 256, 256); ``inputs`` are embeddings, or images when ``images``."""
        sam = self.sam
        embeddings = self.encode(inputs) if images else inputs
        device = embeddings.device
        points = None if prompts.coords is None else (prompts.coords.to(device), prompts.labels.to(device))
        boxes = None if prompts.boxes is None else prompts.boxes.to(device)
        sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=None)
        image_pe = sam.prompt_encoder.get_dense_pe()
        logits = [sam.mask_decoder(image_embeddings=embeddings[n:n + 1], image_pe=image_pe,
                                   sparse_prompt_embeddings=sparse[n:n + 1], dense_prompt_embeddings=dense[n:n + 1],
                                   multimask_output=multimask)[0] for n in range(embeddings.shape[0])]
        return torch.cat(logits)


def slice_masks(logits: torch.Tensor, frames: list[SliceFrame]) -> list[np.ndarray]:
    """Binary masks on each slice's own grid, exactly as the engine thresholds them."""
    return [(frame.logits_to_slice(logits[n:n + 1, :1].float())[0, 0] > 0).numpy() for n, frame in enumerate(frames)]
