"""Detector proposals as ROIs the annotator reviews (on a validation case, never trained on), and Refine into
NETC / SNFH / ET (the self-test case, from a box and from clicks alone), on real MRML nodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import slicer
from SAMBASegmentMRML.logic import AGREEMENT_NAME, SAMBASegmentLogic, ijkToWorld, promptedSlices, readMask, roiToBox
from SAMBASegmentMRML.selftest import MIN_REFINED_DICE, MIN_REFINED_FROM_CLICKS_DICE, loadVolume, runRefine, showSlice

from SAMBASegmentLib.errors import PromptError, VolumeError
from SAMBASegmentLib.labels import CLASS_NAMES, region_mask, to_internal
from SAMBASegmentLib.prompts import Box3D, SlicePrompt
from SAMBASegmentLib.volumes import MODALITIES, find_case_files

CASE = "Brats18_CBICA_AQN_1"  # a validation case


@pytest.fixture
def loaded(scene, data_dir: Path):
    files = find_case_files(data_dir / CASE)
    volumes = {m: loadVolume(scene, files[m]) for m in MODALITIES}
    labelNode = loadVolume(scene, files["label"], labelMap=True)
    label, _ = to_internal(slicer.util.arrayFromVolume(labelNode))
    return volumes, label


def test_proposals_are_reviewed_before_they_prompt(scene, loaded):
    volumes, label = loaded
    logic = SAMBASegmentLogic(scene)
    drawn = logic.createBoxNode()
    drawn.SetCenter(0, 0, 0)
    drawn.SetSize(10, 10, 10)
    task = logic.proposeTask(volumes["flair"])
    task.run()
    assert task.finish()
    pending = logic.pendingProposals()
    assert pending and logic.boxNodes() == [drawn]  # proposals do not prompt until accepted
    best = roiToBox(pending[0], volumes["flair"])
    k, j, i = np.argwhere(region_mask(label, "WT")).mean(axis=0).round().astype(int)
    assert all(lo <= c <= hi for lo, c, hi in zip(best.lo, (k, j, i), best.hi))  # the best one holds the tumour
    logic.acceptProposal(pending[0])
    assert pending[0] in logic.boxNodes() and pending[0] not in logic.pendingProposals()
    for node in logic.pendingProposals():
        logic.rejectProposal(node)
    assert logic.pendingProposals() == [] and scene.GetNodeByID(pending[0].GetID()) is not None
    logic.clearPrompts()
    assert logic.boxNodes() == []


def test_self_test_refine_reaches_its_dice_and_writes_agreement_and_undo_removes_it(scene, selfTestSlab):
    """The Slicer self-test's Refine body (selftest.runRefine) on slicer-core, on an axial slab of the case with one
    view (the three-view check has tests of its own), then what it left in the scene."""
    logic = SAMBASegmentLogic(scene)
    logic.configure("cpu", useAdapter=False)
    red = scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
    result = runRefine(logic, selfTestSlab, red, views=1)
    print(f"refine: {result.dice}, {result.seconds:.0f} s")
    for region, minimum in MIN_REFINED_DICE.items():
        assert result.dice[region] >= minimum, (region, result.dice)
    flair = result.volumeNodes["flair"]
    output = result.segmentationNode
    assert not (readMask(output, "NETC", flair) & readMask(output, "ET", flair)).any()
    agreement = scene.GetFirstNodeByName(AGREEMENT_NAME)
    np.testing.assert_allclose(ijkToWorld(agreement), ijkToWorld(flair))
    fractions = slicer.util.arrayFromVolume(agreement)
    assert fractions.max() == 1.0 and set(np.unique(fractions)) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    assert logic.undo()
    assert not any(output.GetSegmentation().GetSegment(name) for name in CLASS_NAMES.values())


def test_refine_explains_what_it_needs(scene, loaded):
    volumes, _ = loaded
    logic = SAMBASegmentLogic(scene)
    flair = volumes["flair"]
    red = scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
    showSlice(red, flair, 0, 100)
    output = logic.outputSegmentation(None, flair)
    with pytest.raises(PromptError, match="spans the tumour's slices, or place \\+ points"):
        logic.refineTask(volumes, flair, red, output)
    negative = logic.createPointsNode(False)
    negative.AddControlPoint(*(ijkToWorld(flair) @ (120, 120, 100, 1.0))[:3])
    with pytest.raises(PromptError, match="place \\+ points"):  # a − point alone leaves nothing to segment
        logic.refineTask(volumes, flair, red, output, None, negative)
    shifted = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "shifted t2")
    shifted.Copy(volumes["t2"])
    shifted.SetOrigin(5.0, 0.0, 0.0)
    with pytest.raises(VolumeError, match="not on .* voxel grid"):
        logic.refineTask({**volumes, "t2": shifted}, flair, red, output)


def test_refine_prompts_each_slice_that_has_prompts_of_its_own():
    """Which slices Refine prompts on their own (besides propagating the boxes that span slices): those with a point
    or a box drawn on them alone, each with every prompt it holds; a slice with only a − point has nothing to
    segment, and a point beyond the volume's slices is ignored."""
    deep = Box3D(lo=(2, 10, 10), hi=(8, 40, 40))
    flat = Box3D(lo=(12, 50, 50), hi=(12, 70, 70))
    positives = [(5, 20, 20), (30, 5, 5)]  # the second one beyond the 20 slices
    negatives = [(5, 35, 35), (15, 60, 60)]
    prompts = promptedSlices(0, 20, [deep, flat], positives, negatives)
    assert sorted(prompts) == [5, 12]
    assert prompts[5] == [SlicePrompt(box=(10, 10, 40, 40), points=((20, 20), (35, 35)), point_labels=(1, 0))]
    assert prompts[12] == [SlicePrompt(box=(50, 50, 70, 70))]
    assert promptedSlices(1, 100, [deep], [(5, 20, 20)], [])[20] == [SlicePrompt(box=(2, 10, 8, 40), points=((5, 20),),
                                                                                 point_labels=(1,))]


def test_self_test_refine_from_clicks_alone_fuses_every_modality(scene, selfTestSlab):
    """The Slicer self-test's Refine from clicks (selftest.runRefine, fromClicks): one + point on each tumour slice,
    no box, every modality segmented with those points and fused; with the shipped adapter (zero-shot LiteMedSAM
    gives nothing for a lone click), one view, on the self-test case's slab."""
    logic = SAMBASegmentLogic(scene)
    logic.configure("cpu", useAdapter=True)
    red = scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
    result = runRefine(logic, selfTestSlab, red, views=1, fromClicks=True)
    print(f"refine from clicks: {result.dice}, {result.seconds:.0f} s")
    assert logic.boxNodes() == []
    for region, minimum in MIN_REFINED_FROM_CLICKS_DICE.items():
        assert result.dice[region] >= minimum, (region, result.dice)
