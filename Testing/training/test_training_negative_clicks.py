"""The negative-click check (training/negative_clicks.py) scores the scenario of the engine's carry test alike."""

from __future__ import annotations

from SAMBASegmentLib.sam import SamEngine
from SAMBASegmentLib.volumes import load_case
from training.negative_clicks import HALF_SLAB, negative_click_on_a_painted_leak


def test_the_check_agrees_with_the_engine_carry_test(data_dir):
    """On the case of Testing/engine/test_corrections.py the check paints a real leak on every slice of the slab and
    finds what that test enforces for the shipped adapter: at most a fifth left, every slice reached, the tumour
    kept. (On other cases the shipped adapter leaves more: the figures are in training/README.md.)"""
    row = negative_click_on_a_painted_leak(SamEngine.create(device="cpu"), load_case(data_dir / "Brats18_TCIA02_135_1"))
    assert row["slices"] == 2 * HALF_SLAB + 1 and row["painted"] >= (2 * HALF_SLAB + 1) * 50
    assert 0 <= row["left"] <= 0.2 * row["painted"] and row["slices_reached"] == row["slices"]
    assert row["tumour_dice_after"] >= row["tumour_dice_before"] - 0.03
