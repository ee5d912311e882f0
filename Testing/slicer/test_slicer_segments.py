"""Engine results → segments and back, on a real case in a slicer-core scene; undo; SAM work off the main thread."""

from __future__ import annotations

import time

import numpy as np
import pytest
import slicer
from scipy import ndimage
import vtk
from SAMBASegmentMRML.logic import (
    WHOLE_TUMOUR, WHOLE_TUMOUR_COLOUR, SAMBASegmentLogic, boxToROI, ensureSegment, ijkToWorld, readMask,
    writeLabelMap, writeMask,
)
from SAMBASegmentMRML.selftest import loadVolume, showSlice

from SAMBASegmentLib.labels import CLASS_COLOURS, CLASS_NAMES, region_mask, to_internal
from SAMBASegmentLib.metrics import dice
from SAMBASegmentLib.prompts import SlicePrompt, interior_point
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


HALF_SLAB = 3  # slices either side of the clicked one that hold the annotator's error


def placePoint(logic: SAMBASegmentLogic, volumeNode, voxel: tuple[int, int, int], positive: bool):
    """A + or − point node with one control point at the centre of voxel (k, j, i)."""
    node = logic.createPointsNode(positive)
    k, j, i = voxel
    node.AddControlPoint(*(ijkToWorld(volumeNode) @ np.array([i, j, k, 1.0]))[:3])
    return node


def segmentWith(logic, flair, red, output, positive=None, negative=None, carry=True) -> np.ndarray:
    task = logic.segmentSliceTask(flair, red, output, positive, negative, carry=carry)
    task.run()
    assert task.finish()
    return readMask(output, WHOLE_TUMOUR, flair)


@pytest.fixture
def annotated(case):
    """The expert's whole tumour as the annotator's WT segment, with a lobe missing on the slices around the
    clinician's seed slice (the tumour beyond its centre column), and a + point in that lobe on the seed slice."""
    logic, flair, label, clinician, red = case
    truth = region_mask(label, "WT")
    seed = clinician.seed_index
    slab = list(range(seed - HALF_SLAB, seed + HALF_SLAB + 1))
    centre = int(np.argwhere(truth[seed])[:, 1].mean())
    lobe = np.zeros_like(truth)
    lobe[slab, :, centre:] = truth[slab, :, centre:]
    before = truth & ~lobe
    output = logic.outputSegmentation(None, flair)
    writeMask(output, ensureSegment(output, WHOLE_TUMOUR, WHOLE_TUMOUR_COLOUR), before, flair)
    point = placePoint(logic, flair, (seed, *interior_point(lobe[seed])), positive=True)
    return logic, flair, red, output, truth, before, lobe, seed, slab, point


def test_a_point_on_a_missed_lobe_restores_it_on_the_neighbouring_slices_and_only_adds_there(annotated):
    logic, flair, red, output, truth, before, lobe, seed, slab, point = annotated
    after = segmentWith(logic, flair, red, output, positive=point)

    neighbours = [k for k in slab if k != seed]
    assert not (before[neighbours] & ~after[neighbours]).any()  # the annotator's voxels there all stay
    restored = (after & lobe)[neighbours].sum() / lobe[neighbours].sum()
    assert restored >= 0.7, f"only {restored:.2f} of the missed lobe restored on the neighbouring slices"
    added = after & ~before
    assert (added & ~truth).sum() <= 0.25 * (added & truth).sum()  # what it adds is tumour
    changed = np.nonzero((after != before).any(axis=(1, 2)))[0]
    # The carry stops where the lobe does: SAM's outline, a little wider than the expert's all round, is not carried.
    assert slab[0] - 1 <= changed.min() and changed.max() <= slab[-1] + 1
    assert logic.undo()
    np.testing.assert_array_equal(readMask(output, WHOLE_TUMOUR, flair), before)


def test_without_carry_only_the_clicked_slice_changes(annotated):
    logic, flair, red, output, _, before, lobe, seed, _, point = annotated
    after = segmentWith(logic, flair, red, output, positive=point, carry=False)
    np.testing.assert_array_equal(np.delete(after, seed, axis=0), np.delete(before, seed, axis=0))
    assert (after[seed] & lobe[seed]).sum() >= 0.8 * lobe[seed].sum()


def test_a_negative_point_on_a_leak_removes_it_from_the_neighbouring_slices_and_only_removes_there(case):
    """A leak into the healthy brain beside the tumour, painted onto the expert's segment across the slab, goes
    with one − point on the seed slice; the expert's tumour voxels on the neighbouring slices stay."""
    logic, flair, label, clinician, red = case
    truth = region_mask(label, "WT")
    seed = clinician.seed_index
    slab = list(range(seed - HALF_SLAB, seed + HALF_SLAB + 1))
    voxels = slicer.util.arrayFromVolume(flair)
    brain = np.all(voxels[slab] > 0, axis=0)
    away = ndimage.distance_transform_edt(~np.any(truth[slab], axis=0))
    candidates = np.argwhere((away >= 4) & (ndimage.distance_transform_edt(brain) >= 10))
    row, col = candidates[np.argmin(away[tuple(candidates.T)])]  # healthy brain just beside the tumour
    rows, cols = np.ogrid[: truth.shape[1], : truth.shape[2]]
    leak = np.zeros_like(truth)
    leak[slab] = (rows - row) ** 2 + (cols - col) ** 2 <= 7**2
    leak &= ~truth
    before = truth | leak
    output = logic.outputSegmentation(None, flair)
    writeMask(output, ensureSegment(output, WHOLE_TUMOUR, WHOLE_TUMOUR_COLOUR), before, flair)

    after = segmentWith(logic, flair, red, output,
                        negative=placePoint(logic, flair, (seed, int(row), int(col)), positive=False))

    neighbours = [k for k in slab if k != seed]
    assert not (after[neighbours] & ~before[neighbours]).any()  # nothing added there
    remaining = [(after & leak)[k].sum() / leak[k].sum() for k in neighbours]
    assert max(remaining) <= 0.4, f"left of the leak on the neighbouring slices: {np.round(remaining, 2)}"
    kept = (after & truth)[neighbours].sum() / truth[neighbours].sum()
    assert kept >= 0.97, f"the annotator's tumour lost {1 - kept:.3f} on the neighbouring slices"
