"""Label conventions and metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from SAMBASegmentLib.errors import LabelError
from SAMBASegmentLib.labels import LabelConvention, from_internal, region_mask, to_internal
from SAMBASegmentLib.metrics import EMPTY_HD95_MM, dice, hd95, lesion_wise
from SAMBASegmentLib.volumes import load_case


def test_conventions_convert_to_the_2023_form():
    brats2021 = np.array([0, 1, 2, 4])
    legacy = np.array([0, 1, 2, 3, 4])
    assert to_internal(brats2021)[0].tolist() == [0, 1, 2, 3]
    assert to_internal(brats2021)[1] == LabelConvention.BRATS2021
    assert to_internal(legacy)[0].tolist() == [0, 1, 2, 1, 3]  # non-enhancing joins the core
    assert to_internal(legacy)[1] == LabelConvention.LEGACY5
    assert to_internal(np.array([0, 1, 2, 3]))[1] == LabelConvention.BRATS2023
    assert to_internal(np.array([0, 3]), "legacy5")[0].tolist() == [0, 1]  # explicit convention wins


def test_writing_in_2023_and_2021_round_trips():
    internal = np.array([0, 1, 2, 3], dtype=np.uint8)
    assert from_internal(internal).tolist() == [0, 1, 2, 3]
    assert from_internal(internal, "brats2021").tolist() == [0, 1, 2, 4]
    assert np.array_equal(to_internal(from_internal(internal, "brats2021"))[0], internal)
    with pytest.raises(LabelError):
        from_internal(internal, "legacy5")


def test_unknown_values_are_refused():
    with pytest.raises(LabelError, match=r"values \[7\] do not exist"):
        to_internal(np.array([0, 1, 7]))


def test_regions_on_real_cases(data_dir):
    new = load_case(data_dir / "Brats18_2013_20_1")
    old = load_case(data_dir / "brats_2013_pat0006_1")  # the same patient, labelled in the old convention
    raw_new = sitk.GetArrayFromImage(sitk.ReadImage(str(new.files["label"])))
    assert np.array_equal(region_mask(new.label, "ET"), raw_new == 4)
    assert np.array_equal(region_mask(new.label, "WT"), raw_new > 0)
    assert np.array_equal(region_mask(new.label, "TC"), np.isin(raw_new, (1, 4)))
    raw_old = sitk.GetArrayFromImage(sitk.ReadImage(str(old.files["label"])))
    assert np.array_equal(region_mask(old.label, "TC"), np.isin(raw_old, (1, 3, 4)))
    # Two annotations of one tumour agree on its extent far better than chance.
    assert dice(region_mask(new.label, "WT"), region_mask(old.label, "WT")) > 0.6


def test_dice_by_hand():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :4] = True  # 4 voxels
    b[0, 2:4] = True
    b[1, 0] = True  # 3 voxels, 2 shared
    assert dice(a, b) == pytest.approx(2 * 2 / 7)
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0


def test_hd95_by_hand():
    truth = np.zeros((20, 20, 40), bool)
    truth[5:15, 5:15, 5:15] = True
    prediction = np.roll(truth, 3, axis=2)  # shifted 3 voxels along i, spacing 2 mm there
    assert hd95(prediction, truth, (1.0, 1.0, 2.0)) == pytest.approx(6.0)
    assert hd95(truth, truth, (1.0, 1.0, 1.0)) == 0.0
    assert hd95(truth, np.zeros_like(truth), (1.0, 1.0, 1.0)) == EMPTY_HD95_MM
    assert hd95(np.zeros_like(truth), np.zeros_like(truth), (1.0, 1.0, 1.0)) == 0.0


def test_lesion_wise_by_hand():
    truth = np.zeros((30, 30, 60), bool)
    truth[2:8, 2:8, 2:8] = True  # lesion A: 216 voxels, found exactly
    truth[2:8, 2:8, 30:36] = True  # lesion B: missed
    truth[20:23, 20:23, 50:53] = True  # 27 voxels ≤ 50 mm³: not scored
    prediction = np.zeros_like(truth)
    prediction[2:8, 2:8, 2:8] = True
    prediction[20:26, 2:8, 2:8] = True  # a false positive far from every lesion
    score = lesion_wise(prediction, truth, (1.0, 1.0, 1.0))
    assert score.true_lesions == 2 and score.false_positive_lesions == 1
    assert score.dice == pytest.approx((1.0 + 0.0 + 0.0) / 3)
    assert score.hd95 == pytest.approx((0.0 + EMPTY_HD95_MM + EMPTY_HD95_MM) / 3)


def test_lesion_wise_merges_lesions_that_touch_after_dilation():
    truth = np.zeros((20, 20, 40), bool)
    truth[5:10, 5:10, 5:10] = True
    truth[5:10, 5:10, 12:17] = True  # 2 voxels apart: one lesion after 3-voxel dilation
    score = lesion_wise(truth, truth, (1.0, 1.0, 1.0))
    assert score.true_lesions == 1 and score.dice == 1.0 and score.hd95 == 0.0


def test_lesion_wise_empty_conventions():
    empty = np.zeros((10, 10, 10), bool)
    some = empty.copy()
    some[2:5, 2:5, 2:5] = True
    assert (lesion_wise(empty, empty, (1, 1, 1)).dice, lesion_wise(empty, empty, (1, 1, 1)).hd95) == (1.0, 0.0)
    assert (lesion_wise(some, empty, (1, 1, 1)).dice, lesion_wise(some, empty, (1, 1, 1)).hd95) == (0.0, EMPTY_HD95_MM)


def test_specks_are_removed_and_lesions_kept():
    from SAMBASegmentLib.postprocessing import remove_small_components

    mask = np.zeros((20, 20, 20), bool)
    mask[2:8, 2:8, 2:8] = True  # 216 voxels of 1 mm³: a lesion
    mask[15:17, 15:17, 15:17] = True  # 8 voxels: a speck
    cleaned = remove_small_components(mask, (1.0, 1.0, 1.0))
    assert cleaned[2:8, 2:8, 2:8].all() and not cleaned[15:17, 15:17, 15:17].any()
    assert remove_small_components(mask, (2.0, 2.0, 2.0))[15:17, 15:17, 15:17].all()  # 64 mm³ at 2 mm: kept
