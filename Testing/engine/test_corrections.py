"""Corrective clicks carried to neighbouring slices, on a real tumour with the shipped adapter (clicks need it)."""

from __future__ import annotations

import numpy as np
import pytest

from SAMBASegmentLib.corrections import CarrySettings, correct_with_click
from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.metrics import dice
from SAMBASegmentLib.pipeline import evaluate_leak_removal
from SAMBASegmentLib.prompts import interior_point
from SAMBASegmentLib.simulation import painted_leak, point_prompts

HALF_SLAB = 4  # slices either side of the tumour's largest slice


@pytest.fixture(scope="module")
def clicked(real_case):
    """The shipped engine, the FLAIR volume, the tumour, its largest slice and one click per slice around it."""
    from SAMBASegmentLib.sam import SamEngine

    engine = SamEngine.create(device="cpu")
    truth = region_mask(real_case.label, "WT")
    centre = int(np.argmax(truth.sum(axis=(1, 2))))
    slab = range(centre - HALF_SLAB, centre + HALF_SLAB + 1)
    prompts = {k: v for k, v in point_prompts(truth, 0).items() if k in slab}
    return engine, real_case.volume("flair"), truth, centre, slab, prompts


def test_a_positive_click_carries_through_the_missed_slices(clicked):
    """Nothing segmented and no prompts yet: one click on the largest slice fills its neighbours as well, and the
    carry stops within the tumour's slices."""
    engine, volume, truth, centre, slab, _ = clicked
    mask = np.zeros(truth.shape, dtype=bool)
    prompts: dict = {}
    changed = correct_with_click(engine, volume, 0, mask, prompts, centre, *interior_point(truth[centre]), True)
    assert set(slab) <= set(changed)
    assert changed == list(range(changed[0], changed[-1] + 1))  # one run of slices, through the clicked one
    tumour_slices = np.nonzero(truth.any(axis=(1, 2)))[0]
    assert tumour_slices.min() <= changed[0] and changed[-1] <= tumour_slices.max()
    assert dice(mask[list(slab)], truth[list(slab)]) >= 0.8
    assert all(len(prompts[k]) == 1 and prompts[k][0].point_labels == (1,) for k in changed)


def test_a_negative_click_removes_a_leak_on_every_slice_it_spans(clicked):
    """A leak into the healthy tissue beside the tumour across the slab (painted onto SAM's result) goes with one
    negative click on the middle slice; the tumour stays."""
    engine, volume, truth, _, slab, _ = clicked
    result = evaluate_leak_removal(engine, volume, truth, HALF_SLAB)
    assert result["slices_reached"] == result["slices"] == len(slab)  # every slice of the slab
    assert result["painted"] >= len(slab) * 50  # a real leak on each slice
    assert result["left"] <= 0.2 * result["painted"]
    assert result["tumour_dice_after"] >= result["tumour_dice_before"] - 0.03


def test_the_carry_stops_where_the_tissue_changes(clicked):
    """With no tolerance for a different intensity the correction stays on the clicked slice."""
    engine, volume, truth, centre, _, _ = clicked
    mask = np.zeros(truth.shape, dtype=bool)
    changed = correct_with_click(engine, volume, 0, mask, {}, centre, *interior_point(truth[centre]), True,
                                 CarrySettings(intensity_tolerance=0.0))
    assert changed == [centre] and mask[centre].any()


def test_a_negative_click_on_nothing_changes_nothing(clicked):
    engine, volume, truth, centre, _, _ = clicked
    mask = np.zeros(truth.shape, dtype=bool)
    prompts: dict = {}
    assert correct_with_click(engine, volume, 0, mask, prompts, centre, 5, 5, False) == []
    assert not mask.any() and prompts == {}


def test_a_leak_needs_healthy_brain_beside_the_tumour():
    """Outside the brain (an empty image) there is nowhere to paint a leak: a clear error, not a disc in the air."""
    truth = np.zeros((3, 64, 64), dtype=bool)
    truth[:, 28:36, 28:36] = True
    with pytest.raises(ValueError, match="no healthy brain"):
        painted_leak(truth, truth, np.zeros(truth.shape))
    image = np.ones(truth.shape)  # a brain everywhere: the disc lies beside the tumour, inside the image
    (row, col), leak = painted_leak(truth, truth, image)
    assert leak[row, col] and not truth[0][row, col] and leak.sum() == 113  # a radius-6 disc centred outside it
    assert (leak & ~truth[0]).sum() > leak.sum() / 2  # mostly healthy tissue: the leak is the part outside the mask
