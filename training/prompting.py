"""Training prompts simulated from a slice's label, as a clinician (or the evaluation's clicker) would give them.

Boxes are tight and then grown by 0–20 px per side (SAMBA's jitter), so the model learns boxes that are never
exact. Clicks follow the CVPR 2025 interactive protocol in 2D: the first one deep inside the tumour (maximum of
the distance transform, or anywhere inside), corrections at the centre of the largest error component.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from SAMBASegmentLib.prompts import PixelBox, bounding_box, interior_point
from SAMBASegmentLib.simulation import corrective_click as simulated_corrective_click

MAX_BOX_JITTER = 20


@dataclass(frozen=True)
class Click:
    row: int
    col: int
    positive: bool


def jittered_box(mask: np.ndarray, rng: np.random.Generator, max_jitter: int = MAX_BOX_JITTER) -> PixelBox:
    """Tight box of ``mask`` with each side moved outwards by 0..max_jitter px, clipped to the slice."""
    box = bounding_box(mask)
    if box is None:
        raise ValueError("a jittered box needs a non-empty mask")
    grow = rng.integers(0, max_jitter + 1, size=4)
    rows, cols = mask.shape
    return (max(0, box[0] - int(grow[0])), max(0, box[1] - int(grow[1])),
            min(rows - 1, box[2] + int(grow[2])), min(cols - 1, box[3] + int(grow[3])))


def empty_box(brain: np.ndarray, rng: np.random.Generator, min_side: int = 12, max_side: int = 80) -> PixelBox:
    """A box on brain without tumour: what propagation hands a slice just past the tumour's end."""
    rows, cols = np.nonzero(brain) if brain.any() else np.nonzero(np.ones_like(brain))
    centre = int(rng.integers(rows.size))
    height, width = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
    r0 = int(np.clip(rows[centre] - height // 2, 0, brain.shape[0] - 1))
    c0 = int(np.clip(cols[centre] - width // 2, 0, brain.shape[1] - 1))
    return r0, c0, min(brain.shape[0] - 1, r0 + height), min(brain.shape[1] - 1, c0 + width)


def first_click(mask: np.ndarray, rng: np.random.Generator, centre_probability: float = 0.5) -> Click:
    """A positive click: at the distance-transform maximum (the evaluation's clicker) or at any tumour pixel."""
    if rng.random() < centre_probability:
        row, col = interior_point(mask)
    else:
        rows, cols = np.nonzero(mask)
        pick = int(rng.integers(rows.size))
        row, col = int(rows[pick]), int(cols[pick])
    return Click(int(row), int(col), True)


def corrective_click(prediction: np.ndarray, mask: np.ndarray) -> Click | None:
    """The evaluation's corrective click (simulation.corrective_click) on one slice. None when perfect."""
    click = simulated_corrective_click(prediction, mask, (1.0, 1.0))
    return None if click is None else Click(click.index[0], click.index[1], click.positive)
