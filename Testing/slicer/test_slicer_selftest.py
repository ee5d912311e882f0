"""The module's self-test body on a slicer-core scene: box → propagation → segment read back → WT Dice; then a
corrective click re-propagates from its slice only, and the segment is checked in three views (on an axial slab of the
case: Slicer's runner takes the whole case)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
from SAMBASegmentMRML.logic import (WHOLE_TUMOUR, SAMBASegmentLogic, ensureSegment, ijkToWorld, readMask,
                                   roiToBox, sliceTarget, writeMask)
from SAMBASegmentMRML.selftest import CASE, MIN_WHOLE_TUMOUR_DICE, MODALITY, loadVolume, runBoxPropagation, showSlice

from SAMBASegmentLib.errors import PromptError
from SAMBASegmentLib.labels import CLASS_NAMES, WHOLE_TUMOUR_COLOUR, region_mask, to_internal
from SAMBASegmentLib.multiview import three_view_vote
from SAMBASegmentLib.simulation import corrective_click
from SAMBASegmentLib.volumes import find_case_files


def test_self_test_body_reaches_whole_tumour_dice_and_reprompting_redoes_only_the_far_slices(scene, selfTestSlab):
    """On an axial slab of the self-test case (Slicer's runner gives runBoxPropagation the whole case)."""
    logic = SAMBASegmentLogic(scene)
    red = scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")

    result = runBoxPropagation(logic, selfTestSlab, red)

    print(f"{CASE} {MODALITY}: WT Dice {result.dice:.3f}, {result.seconds:.0f} s for {result.tumourSlices} slices")
    assert result.dice >= MIN_WHOLE_TUMOUR_DICE
    files = find_case_files(selfTestSlab)
    flair = scene.GetFirstNodeByName(f"{CASE}_flair")
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(flair),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(files[MODALITY]))))
    reference = scene.GetFirstNodeByName(f"{CASE} reference")
    assert sorted(reference.GetSegmentation().GetSegmentIDs()) == sorted(CLASS_NAMES.values())

    # The annotator clicks where the result is most wrong; propagating from there keeps the seed's side.
    output = result.segmentationNode
    before = readMask(output, WHOLE_TUMOUR, flair)
    label, _ = to_internal(sitk.GetArrayFromImage(sitk.ReadImage(str(files["label"]))))
    seed = sliceTarget(red, flair).index
    click = corrective_click(before, region_mask(label, "WT"), (1.0, 1.0, 1.0))
    points = logic.createPointsNode(positive=click.positive)
    k, j, i = click.index
    points.AddControlPoint(*(ijkToWorld(flair) @ (i, j, k, 1.0))[:3])
    showSlice(red, flair, 0, k)
    task = logic.propagateTask(flair, red, output, *((points, None) if click.positive else (None, points)))
    task.run()
    assert task.finish()

    after = readMask(output, WHOLE_TUMOUR, flair)
    kept = slice(0, k) if k > seed else slice(k + 1, None) if k < seed else slice(0, 0)
    np.testing.assert_array_equal(after[kept], before[kept])
    assert logic.undo()
    np.testing.assert_array_equal(readMask(output, WHOLE_TUMOUR, flair), before)

    # Check in 3 views: the segment as it stands is re-segmented in the coronal and sagittal views and voted on. What
    # the vote does to Dice is the engine's test (test_multiview.py, on a whole case); here the segment written back
    # must be the engine's vote on the segment read from the scene, within the box's slices.
    task = logic.checkViewsTask(flair, red, output)
    task.run()
    assert task.finish()
    checked = readMask(output, WHOLE_TUMOUR, flair)
    box = roiToBox(logic.boxNodes()[0], flair)
    engine = logic.engine()
    calls = engine.encoder_calls
    expected = three_view_vote(engine, logic.scalarVolume(flair), before, 0, (box.lo[0], box.hi[0]))
    assert engine.encoder_calls == calls  # the task encoded these very slices of the other two views
    assert (checked != before).any()
    np.testing.assert_array_equal(checked, expected)
    assert logic.undo()
    np.testing.assert_array_equal(readMask(output, WHOLE_TUMOUR, flair), before)


def test_check_in_three_views_needs_a_segmented_tumour(scene, caseDir):
    logic = SAMBASegmentLogic(scene)
    red = scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
    flair = loadVolume(scene, find_case_files(caseDir)[MODALITY])
    output = logic.outputSegmentation(None, flair)
    with pytest.raises(PromptError, match="segment WT is empty: segment the tumour"):
        logic.checkViewsTask(flair, red, output)


def test_check_in_three_views_refuses_thick_slices_and_keeps_the_segment(scene, caseDir):
    logic = SAMBASegmentLogic(scene)
    red = scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
    flair = loadVolume(scene, find_case_files(caseDir)[MODALITY])
    flair.SetSpacing(1.0, 1.0, 5.0)  # an older scanner's 5 mm axial series
    output = logic.outputSegmentation(None, flair)
    mask = np.zeros(slicer.util.arrayFromVolume(flair).shape, dtype=bool)
    mask[14:18, 100:130, 90:120] = True
    writeMask(output, ensureSegment(output, WHOLE_TUMOUR, WHOLE_TUMOUR_COLOUR), mask, flair)
    task = logic.checkViewsTask(flair, red, output)
    task.run()
    with pytest.raises(PromptError, match="cannot be checked in three views: its voxels are 5.0 times as deep"):
        task.finish()
    np.testing.assert_array_equal(readMask(output, WHOLE_TUMOUR, flair), mask)
