"""Multi-class decoding (SAMBA-mc): NETC, SNFH and ET from one box, with a multiclass adapter.

SAM's decoder has three multimask outputs besides the single-mask one; a ``multiclass`` adapter (training/,
``--mode multiclass``) trains output k to be class ``CLASS_ORDER[k]``. The order is fixed here, in one place, so
training and decoding cannot disagree (the public SAMBA code permuted labels in its multi-class decoding).
"""

from __future__ import annotations

import numpy as np
import torch

from ..labels import ET_LABEL, NETC, SNFH
from ..prompts import PixelBox, SlicePrompt
from ..volumes import ScalarVolume
from .engine import SamEngine

CLASS_ORDER: tuple[int, int, int] = (NETC, SNFH, ET_LABEL)


def class_logits(engine: SamEngine, volume: ScalarVolume, axis: int, index: int, box: PixelBox) -> torch.Tensor:
    """Logits of NETC, SNFH and ET (in ``CLASS_ORDER``) on the slice's pixel grid, shape (3, rows, cols)."""
    frame = engine.frame(volume, axis)
    SlicePrompt(box=box).check_inside(frame.shape)
    model = engine.sam.model
    boxes = torch.as_tensor(frame.box_to_model(box), dtype=torch.float32, device=engine.device)[None]
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(points=None, boxes=boxes, masks=None)
        low_res, _ = model.mask_decoder(
            image_embeddings=engine.embedding(volume, axis, index), image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True,
        )
    return frame.logits_to_slice(low_res.float())[0].cpu()


def segment_classes(engine: SamEngine, volume: ScalarVolume, axis: int, index: int, box: PixelBox) -> np.ndarray:
    """Internal label plane (0, NETC, SNFH, ET): each pixel takes the most confident class with a positive logit."""
    logits = class_logits(engine, volume, axis, index, box).numpy()
    labels = np.asarray(CLASS_ORDER, dtype=np.uint8)[np.argmax(logits, axis=0)]
    return np.where(logits.max(axis=0) > 0, labels, 0).astype(np.uint8)
