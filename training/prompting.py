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


def jittered_box(mask: np.ndarray, rng: np.random.Generator, max_jitter: int = MAX_BOX_JITTER,
                 max_shrink: int = 0) -> PixelBox:
    """Tight box of ``mask`` with each side moved outwards by up to ``max_jitter`` px or inwards by up to
    ``max_shrink`` px, clipped to the slice. Inward sides are what propagation hands SAM where the tumour grows
    from one slice to the next: the box comes from the previous, smaller slice."""
    box = bounding_box(mask)
    if box is None:
        raise ValueError("a jittered box needs a non-empty mask")
    grow = rng.integers(-max_shrink, max_jitter + 1, size=4)
    rows, cols = mask.shape
    r0, c0 = max(0, box[0] - int(grow[0])), max(0, box[1] - int(grow[1]))
    r1, c1 = min(rows - 1, box[2] + int(grow[2])), min(cols - 1, box[3] + int(grow[3]))
    if r1 < r0:
        r0 = r1 = (box[0] + box[2]) // 2
    if c1 < c0:
        c0 = c1 = (box[1] + box[3]) // 2
    return r0, c0, r1, c1


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
