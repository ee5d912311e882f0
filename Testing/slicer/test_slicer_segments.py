"""Engine results → segments and back, on a real case in a slicer-core scene; undo; SAM work off the main thread."""

from __future__ import annotations

import time

import numpy as np
import pytest
import slicer
import vtk
from SAMBASegmentMRML.logic import (
    WHOLE_TUMOUR, WHOLE_TUMOUR_COLOUR, SAMBASegmentLogic, boxToROI, readMask, writeLabelMap,
)
from SAMBASegmentMRML.selftest import loadVolume, showSlice

from SAMBASegmentLib.labels import CLASS_COLOURS, CLASS_NAMES, region_mask, to_internal
from SAMBASegmentLib.metrics import dice
from SAMBASegmentLib.prompts import SlicePrompt
from SAMBASegmentLib.simulation import box3d_prompt
from SAMBASegmentLib.volumes import LABEL_KEY, find_case_files


@pytest.fixture
def case(scene, caseDir):
    """The FLAIR node, the internal label map, and the clinician's box on the largest tumour slice as an ROI."""
    files = find_case_files(caseDir)
    flair = loadVolume(scene, files["flair"])
    label, _ = to_internal(slicer.util.arrayFromVolume(loadVolume(scene, files[LABEL_KEY], labelMap=True)))
    logic = SAMBASegmentLogic(scene)
    clinician = box3d_prompt(region_mask(label, "WT"), axis=0)
    boxToROI(logic.createBoxNode(), flair, clinician.box)
    red = scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
    showSlice(red, flair, 0, clinician.seed_index)
    return logic, flair, label, clinician, red


def segmentInfo(segmentationNode, segmentId):
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    return segment.GetName(), tuple(round(c, 6) for c in segment.GetColor())


def test_segment_slice_writes_the_engine_mask_and_leaves_the_input_untouched(case):
    logic, flair, label, clinician, red = case
    voxelsBefore = slicer.util.arrayFromVolume(flair).copy()
    output = logic.outputSegmentation(None, flair)

    task = logic.segmentSliceTask(flair, red, output)
    task.run()
    assert task.finish()

    engineMask = logic.engine().segment(logic.scalarVolume(flair), 0, clinician.seed_index,
                                        [SlicePrompt(box=clinician.seed_box)])
    written = readMask(output, WHOLE_TUMOUR, flair)
    np.testing.assert_array_equal(written[clinician.seed_index], engineMask)
    assert not np.delete(written, clinician.seed_index, axis=0).any()
    assert dice(engineMask, region_mask(label, "WT")[clinician.seed_index]) > 0.85
    assert segmentInfo(output, WHOLE_TUMOUR) == ("WT", WHOLE_TUMOUR_COLOUR)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(flair), voxelsBefore)
    assert logic.secondsPerSlice is not None and "measured" in logic.modelDescription()


def test_label_map_segments_read_back_equal_with_brats_names_and_colours(scene, case):
    _, flair, label, _, _ = case
    # The segmentation sits under its own transform: the logic writes in its frame, so voxels still line up.
    transformNode = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkTransform()
    shift.Translate(12.0, -7.0, 30.0)
    shift.RotateZ(20.0)
    transformNode.SetMatrixTransformToParent(shift.GetMatrix())
    segmentationNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentationNode.CreateDefaultDisplayNodes()
    segmentationNode.SetAndObserveTransformNodeID(transformNode.GetID())

    writeLabelMap(segmentationNode, label, flair)

    assert segmentationNode.GetSegmentation().GetNumberOfSegments() == 3
    for value, name in CLASS_NAMES.items():
        assert segmentInfo(segmentationNode, name) == (name, CLASS_COLOURS[name])
        np.testing.assert_array_equal(readMask(segmentationNode, name, flair), label == value)


def test_undo_restores_the_segment_before_each_operation(case):
    logic, flair, _, clinician, red = case
    output = logic.outputSegmentation(None, flair)

    def segmentSlice(index: int) -> np.ndarray:
        showSlice(red, flair, 0, index)
        task = logic.segmentSliceTask(flair, red, output)
        task.run()
        task.finish()
        return readMask(output, WHOLE_TUMOUR, flair)

    afterFirst = segmentSlice(clinician.seed_index)
    segmentSlice(clinician.seed_index + 2)
    assert readMask(output, WHOLE_TUMOUR, flair)[clinician.seed_index + 2].any()

    assert logic.undo()
    np.testing.assert_array_equal(readMask(output, WHOLE_TUMOUR, flair), afterFirst)
    assert logic.undo()
    assert output.GetSegmentation().GetSegment(WHOLE_TUMOUR) is None
    assert not logic.canUndo and not logic.undo()


def test_propagation_runs_off_the_main_thread_and_cancel_writes_nothing(case):
    logic, flair, _, _, red = case
    output = logic.outputSegmentation(None, flair)
    task = logic.propagateTask(flair, red, output)
    task.cancel()
    task.start()
    deadline = time.monotonic() + 120
    while not task.finished and time.monotonic() < deadline:
        time.sleep(0.1)
    assert task.finished
    assert not task.finish()
    assert output.GetSegmentation().GetSegment(WHOLE_TUMOUR) is None
    assert not logic.canUndo
