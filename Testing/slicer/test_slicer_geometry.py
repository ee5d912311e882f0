"""MRML geometry → engine indices, on a real BraTS volume node.

Expected voxels come from the case's own geometry, written out by hand: BraTS volumes are LPS with origin
(0, -239, 0) mm and 1 mm voxels, so in Slicer's RAS a voxel (i, j, k) sits at R = -i, A = 239 - j, S = k.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import vtk
from SAMBASegmentMRML.logic import (
    SAMBASegmentLogic, SliceTarget, boxToROI, guessModalities, markupsVoxels, roiToBox, slicePrompts, sliceTarget,
)
from SAMBASegmentMRML.selftest import loadVolume

from SAMBASegmentLib.errors import PromptError
from SAMBASegmentLib.prompts import Box3D
from SAMBASegmentLib.volumes import MODALITIES, find_case_files, normalise_intensities

# Slicer's standard views: (name, normal, in-plane direction), as in its Axial / Coronal / Sagittal presets.
VIEWS = {
    0: ("Red", (0, 0, 1), (-1, 0, 0)),
    1: ("Green", (0, 1, 0), (-1, 0, 0)),
    2: ("Yellow", (1, 0, 0), (0, -1, 0)),
}


def ras(k: float, j: float, i: float) -> tuple[float, float, float]:
    return -i, 239.0 - j, k


@pytest.fixture
def flair(scene, caseDir):
    return loadVolume(scene, find_case_files(caseDir)["flair"])


def sliceNodeThrough(scene, axis: int, point) -> slicer.vtkMRMLSliceNode:
    name, normal, inPlane = VIEWS[axis]
    node = scene.AddNewNodeByClass("vtkMRMLSliceNode", name)
    node.SetSliceToRASByNTP(*normal, *inPlane, *point, 0)
    return node


def rotation(degrees: float, translation) -> slicer.vtkMRMLLinearTransformNode:
    transform = vtk.vtkTransform()
    transform.Translate(*translation)
    transform.RotateWXYZ(degrees, 0.3, 0.2, 0.9)
    return transform


def test_volume_node_keeps_the_case_geometry(scene, caseDir, flair):
    image = sitk.ReadImage(str(find_case_files(caseDir)["flair"]))
    ijkToRAS = vtk.vtkMatrix4x4()
    flair.GetIJKToRASMatrix(ijkToRAS)
    lpsToRAS = np.diag([-1.0, -1.0, 1.0])
    direction = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(ijkToRAS)[:3, :3], lpsToRAS @ direction, atol=1e-6)
    np.testing.assert_allclose(flair.GetOrigin(), lpsToRAS @ np.asarray(image.GetOrigin()), atol=1e-6)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(flair), sitk.GetArrayFromImage(image))

    volume = SAMBASegmentLogic(scene).scalarVolume(flair)
    assert volume.spacing == (1.0, 1.0, 1.0)
    assert volume.array.shape == (155, 240, 240)
    np.testing.assert_array_equal(volume.array, normalise_intensities(sitk.GetArrayFromImage(image)))
    assert (volume.view_axis("axial"), volume.view_axis("coronal"), volume.view_axis("sagittal")) == (0, 1, 2)


def test_roi_in_ras_becomes_the_ijk_box(scene, flair):
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetCenter(-120.0, 129.0, 75.0)  # voxel (k, j, i) = (75, 110, 120)
    roi.SetSize(61.0, 61.0, 31.0)  # half-voxel edges: i 90-150, j 80-140, k 60-90
    assert roiToBox(roi, flair) == Box3D((60, 80, 90), (90, 140, 150))


def test_roi_under_a_parent_transform_becomes_the_same_ijk_box(scene, flair):
    expected = Box3D((60, 80, 90), (90, 140, 150))
    transformNode = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transformNode.SetMatrixTransformToParent(rotation(30.0, (10.0, -5.0, 3.0)).GetMatrix())

    # The ROI is under the transform, placed so that the world box is unchanged.
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetAndObserveTransformNodeID(transformNode.GetID())
    worldBox = np.eye(4)
    worldBox[:3, 3] = ras(75, 110, 120)
    toParent = slicer.util.arrayFromVTKMatrix(transformNode.GetMatrixTransformToParent())
    roi.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(np.linalg.inv(toParent) @ worldBox))
    roi.SetSize(61.0, 61.0, 31.0)
    assert roiToBox(roi, flair) == expected

    # The volume moves with the transform and the ROI stays in world: the ROI's voxels change accordingly.
    flair.SetAndObserveTransformNodeID(transformNode.GetID())
    roi.SetAndObserveTransformNodeID(None)
    roi.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(toParent @ worldBox))
    assert roiToBox(roi, flair) == expected

    # A box written by the logic under the volume's transform reads back as itself.
    written = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    boxToROI(written, flair, Box3D((10, 20, 30), (11, 200, 31)))
    assert written.GetParentTransformNode() is transformNode
    assert roiToBox(written, flair) == Box3D((10, 20, 30), (11, 200, 31))


def test_a_box_drawn_on_one_slice_keeps_that_slice(scene, flair):
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetCenter(*ras(77, 110, 120))
    roi.SetSize(21.0, 11.0, 0.0)
    assert roiToBox(roi, flair) == Box3D((77, 105, 110), (77, 115, 130))


def test_fiducials_map_to_the_right_voxels_on_each_view(scene, flair):
    voxels = [(77, 110, 120), (20, 5, 230), (140, 200, 33)]  # (k, j, i)
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    for voxel in voxels:
        points.AddControlPoint(*ras(*voxel))
    assert markupsVoxels(points, flair) == voxels

    box = Box3D((0, 0, 0), (154, 239, 239))
    for k, j, i in voxels:
        expected = {0: (k, j, i), 1: (j, k, i), 2: (i, k, j)}  # view axis → (slice index, row, column)
        for axis, (index, row, col) in expected.items():
            target = sliceTarget(sliceNodeThrough(scene, axis, ras(k, j, i)), flair)
            assert target == SliceTarget(axis, index)
            (prompt,) = slicePrompts(target, [box], markupsVoxels(points, flair), [])
            assert prompt.points == ((row, col),)
            assert prompt.point_labels == (1,)


def test_fiducials_under_a_parent_transform_map_to_the_same_voxels(scene, flair):
    transformNode = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transformNode.SetMatrixTransformToParent(rotation(-40.0, (25.0, 8.0, -12.0)).GetMatrix())
    toParent = slicer.util.arrayFromVTKMatrix(transformNode.GetMatrixTransformToParent())
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    points.SetAndObserveTransformNodeID(transformNode.GetID())
    voxels = [(77, 110, 120), (3, 60, 180)]
    for voxel in voxels:
        points.AddControlPoint(*(np.linalg.inv(toParent) @ np.append(ras(*voxel), 1.0))[:3])
    assert markupsVoxels(points, flair) == voxels


def test_an_oblique_view_or_a_view_outside_the_volume_is_refused(scene, flair):
    oblique = scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
    oblique.SetSliceToRASByNTP(0, 0.6, 0.8, 1, 0, 0, *ras(77, 110, 120), 0)
    with pytest.raises(PromptError, match="oblique"):
        sliceTarget(oblique, flair)
    with pytest.raises(PromptError, match="outside"):
        sliceTarget(sliceNodeThrough(scene, 0, ras(200, 110, 120)), flair)


def test_nothing_to_segment_on_a_slice_without_prompts():
    with pytest.raises(PromptError, match="nothing to segment on slice 5"):
        slicePrompts(SliceTarget(0, 5), [Box3D((10, 0, 0), (20, 9, 9))], [], [(5, 3, 3)])


def test_modalities_are_guessed_from_the_names_of_every_shared_case(scene, case_dirs):
    for folder in case_dirs:
        caseScene = slicer.vtkMRMLScene()
        files = find_case_files(folder)
        for path in sorted(folder.iterdir()):
            name = path.name.split(".nii")[0]
            caseScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        guessed = {modality: node.GetName() for modality, node in guessModalities(caseScene).items()}
        expected = {m: files[m].name.split(".nii")[0] for m in MODALITIES if m in files}
        assert guessed == expected, folder.name


def test_a_modality_two_volumes_claim_is_left_for_the_user(scene):
    for name in ("Brats18_X_flair", "old_FLAIR", "Brats18_X_t1ce", "Brats18_X_seg"):
        scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    assert {m: n.GetName() for m, n in guessModalities(scene).items()} == {"t1ce": "Brats18_X_t1ce"}
