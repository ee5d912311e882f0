"""The module's self-test body on a slicer-core scene: box → propagation → segment read back → WT Dice; then a
corrective click re-propagates from its slice only."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
from SAMBASegmentMRML.logic import WHOLE_TUMOUR, SAMBASegmentLogic, readMask, sliceTarget
from SAMBASegmentMRML.selftest import CASE, MIN_WHOLE_TUMOUR_DICE, MODALITY, runBoxPropagation, showSlice

from SAMBASegmentLib.labels import CLASS_NAMES, region_mask, to_internal
from SAMBASegmentLib.simulation import corrective_click
from SAMBASegmentLib.volumes import find_case_files


def test_self_test_body_reaches_whole_tumour_dice_and_reprompting_redoes_only_the_far_slices(scene, caseDir):
    logic = SAMBASegmentLogic(scene)
    red = scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")

    result = runBoxPropagation(logic, caseDir, red)

    print(f"{CASE} {MODALITY}: WT Dice {result.dice:.3f}, {result.seconds:.0f} s for {result.tumourSlices} slices")
    assert result.dice >= MIN_WHOLE_TUMOUR_DICE
    files = find_case_files(caseDir)
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
    points.AddControlPoint(-i, 239.0 - j, k)  # BraTS grid: voxel (i, j, k) is at RAS (-i, 239 - j, k)
    showSlice(red, flair, 0, k)
    task = logic.propagateTask(flair, red, output, *((points, None) if click.positive else (None, points)))
    task.run()
    assert task.finish()

    after = readMask(output, WHOLE_TUMOUR, flair)
    kept = slice(0, k) if k > seed else slice(k + 1, None) if k < seed else slice(0, 0)
    np.testing.assert_array_equal(after[kept], before[kept])
    assert logic.undo()
    np.testing.assert_array_equal(readMask(output, WHOLE_TUMOUR, flair), before)
