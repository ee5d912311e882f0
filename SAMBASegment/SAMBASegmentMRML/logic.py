"""MRML ↔ SAMBASegmentLib: what the module's widget asks for, in terms the engine understands.

Volume nodes become normalised arrays with their geometry; ROI and point markups (world RAS, parent transforms
included) become IJK boxes and voxels; a slice view becomes (array axis, slice index); engine masks become
segments. SAM work runs in a ``SamTask``: inputs are read from MRML on the main thread, the model runs on any
thread, and the result is written back on the main thread, so Slicer stays responsive while a volume propagates.

Only ``slicer``, ``vtk``, numpy and SAMBASegmentLib are used, so this runs unchanged on ``slicer-core``. torch is
imported when the model is first needed, after the module has checked that it is installed.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from SAMBASegmentLib.errors import PromptError, VolumeError
from SAMBASegmentLib.labels import CLASS_COLOURS, CLASS_NAMES, WHOLE_TUMOUR_COLOUR
from SAMBASegmentLib.prompts import Box3D, SlicePrompt, add_click, component_boxes, to_slice
from SAMBASegmentLib.volumes import MODALITIES, ScalarVolume, normalise_intensities, role_of_name

MODULE_NAME = "SAMBASegment"
BOX_ATTRIBUTE = "SAMBASegment.Box"  # set on the ROI nodes that are prompts (other ROIs in the scene are not)
PROPOSAL_ATTRIBUTE = "SAMBASegment.Proposal"  # the detector's rank, on a proposed box until it is accepted
PROPOSAL_COLOUR = (1.0, 0.85, 0.0)
AGREEMENT_NAME = "SAMBA modality agreement"
WHOLE_TUMOUR = "WT"  # segment ID and name of SAM's binary result: the BraTS whole-tumour region
POSITIVE_COLOUR = (0.1, 0.9, 0.1)
NEGATIVE_COLOUR = (0.95, 0.1, 0.1)
UNDO_DEPTH = 10
# Segment slice's carried corrections ignore changes at most 2 * CARRY_RIM pixels thick: SAM's outline differs from an
# annotator's by such a rim all round, and carried as a correction it spread over 26 slices of a validation case.
CARRY_RIM = 2
# LiteMedSAM's image encoder measured by `samba bench` on 2 threads of an AVX-512 CPU: 0.73 s per slice in PyTorch
# under bf16 autocast (the engine's choice where the CPU has native bf16), 0.40 s in ONNX Runtime fp32 (its choice on
# other CPUs; PyTorch fp32 took 1.6 s there, and 2.0-2.4 s on an AVX2-only CPU, where ONNX Runtime was not measured);
# on a GPU the model line shows the speed measured at the first slice.
EXPECTED_CPU_SPEED = "about 0.4 to 0.8 s per new slice on a recent 2-core CPU, more on older ones, less on a GPU"
SEEN_SLICE_COST = "another prompt on a slice already seen costs only the decoder, tens of milliseconds"
# A slice view this far from the volume's axes (cosine of ~25°) is oblique, and SAM would see a different image.
_MIN_AXIS_ALIGNMENT = 0.9
# Box corners within this distance (voxels) of a voxel centre include that voxel; absorbs float round-off.
_VOXEL_TOLERANCE = 1e-3

Voxel = tuple[int, int, int]  # (k, j, i): array order, as SAMBASegmentLib and slicer.util.arrayFromVolume use


# --- names ------------------------------------------------------------------------------------------------------
def guessModalities(scene: slicer.vtkMRMLScene) -> dict[str, slicer.vtkMRMLScalarVolumeNode]:
    """Loaded scalar volumes by modality, from their names; a modality two volumes claim is left out."""
    claims: dict[str, list] = {}
    for node in _nodes(scene, "vtkMRMLScalarVolumeNode"):
        modality = None if node.IsA("vtkMRMLLabelMapVolumeNode") else role_of_name(node.GetName() or "")
        if modality in MODALITIES:
            claims.setdefault(modality, []).append(node)
    return {modality: nodes[0] for modality, nodes in claims.items() if len(nodes) == 1}


def _nodes(scene: slicer.vtkMRMLScene, className: str) -> list:
    collection = scene.GetNodesByClass(className)
    return [collection.GetItemAsObject(n) for n in range(collection.GetNumberOfItems())]


# --- geometry ---------------------------------------------------------------------------------------------------
def _array(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return slicer.util.arrayFromVTKMatrix(matrix)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """4x4 homogeneous matrix applied to (n, 3) points."""
    return (np.c_[points, np.ones(len(points))] @ matrix.T)[:, :3]


def parentToWorld(node: slicer.vtkMRMLTransformableNode) -> np.ndarray:
    """The node's parent frame → world RAS. Only a linear transform keeps a voxel grid a grid, so others are refused."""
    matrix = vtk.vtkMatrix4x4()
    if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(node.GetParentTransformNode(), None, matrix):
        raise VolumeError(f"{node.GetName()} is under a non-linear transform; harden it first "
                          "(Data module: right-click the transform, Harden transform)")
    return _array(matrix)


def ijkToWorld(volumeNode: slicer.vtkMRMLScalarVolumeNode) -> np.ndarray:
    ijkToRAS = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(ijkToRAS)
    return parentToWorld(volumeNode) @ _array(ijkToRAS)


def volumeShape(volumeNode: slicer.vtkMRMLScalarVolumeNode) -> tuple[int, int, int]:
    """(k, j, i) sizes."""
    image = volumeNode.GetImageData()
    if image is None:
        raise VolumeError(f"{volumeNode.GetName()} has no voxels")
    columns, rows, slices = image.GetDimensions()
    return slices, rows, columns


def _worldToVoxelCoordinates(volumeNode: slicer.vtkMRMLScalarVolumeNode, points: np.ndarray) -> np.ndarray:
    """World RAS (n, 3) → continuous (i, j, k) (n, 3); voxel centres are at integers."""
    return _apply(np.linalg.inv(ijkToWorld(volumeNode)), points)


def roiToBox(roiNode: slicer.vtkMRMLMarkupsROINode, volumeNode: slicer.vtkMRMLScalarVolumeNode) -> Box3D:
    """The voxels whose centres the ROI holds, as the IJK box around them (the ROI may be rotated in the volume).

    A box thinner than a voxel (drawn on one slice) keeps the slice that holds its centre.
    """
    bounds = [0.0] * 6
    roiNode.GetObjectBounds(bounds)
    corners = np.array(list(itertools.product(bounds[0:2], bounds[2:4], bounds[4:6])))
    ijk = _worldToVoxelCoordinates(volumeNode, _apply(_array(roiNode.GetObjectToWorldMatrix()), corners))
    low, high = ijk.min(axis=0), ijk.max(axis=0)
    first, last = np.ceil(low - _VOXEL_TOLERANCE), np.floor(high + _VOXEL_TOLERANCE)
    thin = first > last
    first[thin] = last[thin] = np.round((low + high) / 2)[thin]
    (i0, j0, k0), (i1, j1, k1) = first.astype(int), last.astype(int)
    return Box3D.from_ijk(i0, j0, k0, i1, j1, k1).clipped_to(volumeShape(volumeNode))


def boxToROI(roiNode: slicer.vtkMRMLMarkupsROINode, volumeNode: slicer.vtkMRMLScalarVolumeNode, box: Box3D) -> None:
    """Place ``roiNode`` on the voxels of ``box``, aligned with the volume's axes and under its parent transform."""
    ijkToRAS = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(ijkToRAS)
    ijkToRAS = _array(ijkToRAS)
    spacing = np.linalg.norm(ijkToRAS[:3, :3], axis=0)
    orientation = np.eye(4)
    orientation[:3, :3] = ijkToRAS[:3, :3] / spacing
    if np.linalg.det(orientation[:3, :3]) < 0:  # a left-handed grid: flip one axis, the box is symmetric
        orientation[:3, 2] *= -1
    lo, hi = np.array(box.lo[::-1], dtype=float), np.array(box.hi[::-1], dtype=float)  # (i, j, k)
    orientation[:3, 3] = _apply(ijkToRAS, ((lo + hi) / 2)[None])[0]
    roiNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
    roiNode.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(orientation))
    roiNode.SetSize(*((hi - lo + 1) * spacing))


def markupsVoxels(markupsNode: slicer.vtkMRMLMarkupsNode | None,
                  volumeNode: slicer.vtkMRMLScalarVolumeNode) -> list[Voxel]:
    """The voxel (k, j, i) under each placed control point."""
    if markupsNode is None:
        return []
    placed = [n for n in range(markupsNode.GetNumberOfControlPoints())
              if markupsNode.GetNthControlPointPositionStatus(n) == markupsNode.PositionDefined]
    if not placed:
        return []
    world = np.array([markupsNode.GetNthControlPointPositionWorld(n) for n in placed])
    ijk = np.round(_worldToVoxelCoordinates(volumeNode, world)).astype(int)
    return [(int(k), int(j), int(i)) for i, j, k in ijk]


@dataclass(frozen=True)
class SliceTarget:
    """The slice a view shows, in the engine's terms: array axis (0 = k, 1 = j, 2 = i) and index along it."""

    axis: int
    index: int


def sliceTarget(sliceNode: slicer.vtkMRMLSliceNode, volumeNode: slicer.vtkMRMLScalarVolumeNode) -> SliceTarget:
    """The volume slice a slice view shows: the array axis nearest the view's normal, at the view's plane."""
    sliceToRAS = _array(sliceNode.GetSliceToRAS())
    worldToIJK = np.linalg.inv(ijkToWorld(volumeNode))
    normal = worldToIJK[:3, :3] @ sliceToRAS[:3, 2]
    alignment = np.abs(normal) / np.linalg.norm(normal)
    ijkAxis = int(np.argmax(alignment))
    view = sliceNode.GetName() or "slice"
    if alignment[ijkAxis] < _MIN_AXIS_ALIGNMENT:
        raise PromptError(f"the {view} view is oblique to {volumeNode.GetName()}; "
                          "rotate it to the volume's axes (slice view menu: Rotate to volume plane)")
    index = int(np.round((worldToIJK @ sliceToRAS[:, 3])[ijkAxis]))
    axis = 2 - ijkAxis
    depth = volumeShape(volumeNode)[axis]
    if not 0 <= index < depth:
        raise PromptError(f"the {view} view shows slice {index}, outside {volumeNode.GetName()} (0-{depth - 1})")
    return SliceTarget(axis, index)


def clicksOn(target: SliceTarget, positives: list[Voxel], negatives: list[Voxel]) -> list[tuple[int, int, bool]]:
    """The (row, column, positive) of each point placed on the target slice."""
    clicks = []
    for voxel, positive in [(v, True) for v in positives] + [(v, False) for v in negatives]:
        pointIndex, row, col = to_slice(target.axis, voxel)
        if pointIndex == target.index:
            clicks.append((row, col, positive))
    return clicks


def withClicks(prompts: list[SlicePrompt], target: SliceTarget, positives: list[Voxel],
               negatives: list[Voxel]) -> list[SlicePrompt]:
    """``prompts`` with each point placed on the target slice joined to the object it falls in."""
    for row, col, positive in clicksOn(target, positives, negatives):
        prompts = add_click(prompts, row, col, positive)
    return prompts


def _promptsOn(target: SliceTarget, boxes: list[Box3D], positives: list[Voxel],
               negatives: list[Voxel]) -> list[SlicePrompt]:
    axis, index = target.axis, target.index
    boxPrompts = [SlicePrompt(box=box.in_plane_box(axis)) for box in boxes if box.lo[axis] <= index <= box.hi[axis]]
    return withClicks(boxPrompts, target, positives, negatives)


def slicePrompts(target: SliceTarget, boxes: list[Box3D], positives: list[Voxel],
                 negatives: list[Voxel]) -> list[SlicePrompt]:
    """The prompts of one slice: every box crossing it is one object; each click joins the object it falls in."""
    prompts = _promptsOn(target, boxes, positives, negatives)
    if not prompts:
        raise PromptError(f"nothing to segment on slice {target.index}: draw a box across it or place a + point on it")
    return prompts


def promptedSlices(axis: int, depth: int, boxes: list[Box3D], positives: list[Voxel],
                   negatives: list[Voxel]) -> dict[int, list[SlicePrompt]]:
    """The slices along ``axis`` that have prompts of their own, a point placed on them or a box drawn on them
    alone, each with all its prompts (as ``slicePrompts``): what Refine repeats on every modality. A slice left
    with nothing to segment (− points only) is skipped, as are points outside the volume's ``depth`` slices."""
    flat = {box.lo[axis] for box in boxes if box.hi[axis] == box.lo[axis]}
    clicked = {to_slice(axis, voxel)[0] for voxel in (*positives, *negatives)}
    prompts = {}
    for index in sorted(i for i in flat | clicked if 0 <= i < depth):
        onSlice = _promptsOn(SliceTarget(axis, index), boxes, positives, negatives)
        if onSlice:
            prompts[index] = onSlice
    return prompts


# --- segments ---------------------------------------------------------------------------------------------------
def _gridInSegmentationFrame(segmentationNode: slicer.vtkMRMLSegmentationNode,
                             volumeNode: slicer.vtkMRMLScalarVolumeNode) -> slicer.vtkOrientedImageData:
    """An empty image on the volume's voxel grid, expressed in the segmentation's parent frame."""
    ijkToSegmentation = np.linalg.inv(parentToWorld(segmentationNode)) @ ijkToWorld(volumeNode)
    slices, rows, columns = volumeShape(volumeNode)
    image = slicer.vtkOrientedImageData()
    image.SetExtent(0, columns - 1, 0, rows - 1, 0, slices - 1)
    image.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(ijkToSegmentation))
    return image


def writeMask(segmentationNode: slicer.vtkMRMLSegmentationNode, segmentId: str, mask: np.ndarray,
              volumeNode: slicer.vtkMRMLScalarVolumeNode) -> None:
    """Replace a segment's voxels with ``mask`` ((k, j, i) on the volume's grid); the segment must exist."""
    image = _gridInSegmentationFrame(segmentationNode, volumeNode)
    image.GetPointData().SetScalars(
        numpy_support.numpy_to_vtk(np.ascontiguousarray(mask, dtype=np.uint8).ravel(), deep=True,
                                   array_type=vtk.VTK_UNSIGNED_CHAR))
    replace = slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
    if not slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(image, segmentationNode, segmentId,
                                                                               replace):
        raise VolumeError(f"could not write segment {segmentId} into {segmentationNode.GetName()}")


def readMask(segmentationNode: slicer.vtkMRMLSegmentationNode, segmentId: str,
             volumeNode: slicer.vtkMRMLScalarVolumeNode) -> np.ndarray:
    """A segment's voxels on the volume's grid, (k, j, i) bool."""
    segmentImage = slicer.vtkOrientedImageData()
    if not segmentationNode.GetBinaryLabelmapRepresentation(segmentId, segmentImage):
        raise VolumeError(f"segment {segmentId} of {segmentationNode.GetName()} has no binary labelmap")
    reference = _gridInSegmentationFrame(segmentationNode, volumeNode)
    onGrid = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            segmentImage, reference, onGrid, False, True):
        raise VolumeError(f"segment {segmentId} cannot be resampled onto {volumeNode.GetName()}")
    return numpy_support.vtk_to_numpy(onGrid.GetPointData().GetScalars()).reshape(volumeShape(volumeNode)) > 0


def ensureSegment(segmentationNode: slicer.vtkMRMLSegmentationNode, name: str,
                  colour: tuple[float, float, float]) -> str:
    """The ID of the segment called ``name`` (ID = name), created empty with ``colour`` if absent."""
    segmentation = segmentationNode.GetSegmentation()
    if segmentation.GetSegment(name) is None:
        segmentation.AddEmptySegment(name, name, list(colour))
    return name


def writeLabelMap(segmentationNode: slicer.vtkMRMLSegmentationNode, label: np.ndarray,
                  volumeNode: slicer.vtkMRMLScalarVolumeNode) -> None:
    """An internal label map (1 NETC, 2 SNFH, 3 ET) as three segments with the BraTS names and colours."""
    for value, name in CLASS_NAMES.items():
        writeMask(segmentationNode, ensureSegment(segmentationNode, name, CLASS_COLOURS[name]), label == value,
                  volumeNode)


# --- SAM tasks --------------------------------------------------------------------------------------------------
class SamTask:
    """One SAM operation: ``run`` does the model work (any thread), ``finish`` writes the scene (main thread)."""

    def __init__(self, title: str, compute: Callable[[SamTask], Any], write: Callable[[Any], None]) -> None:
        self.title = title
        self.done, self.total = 0, 1
        self._compute, self._write = compute, write
        self._cancel, self._finished = threading.Event(), threading.Event()
        self._result: Any = None
        self._error: Exception | None = None

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def run(self) -> None:
        try:
            self._result = self._compute(self)
        except Exception as error:  # handed to the main thread by finish()
            self._error = error
        finally:
            self._finished.set()

    def start(self) -> None:
        threading.Thread(target=self.run, name=f"{MODULE_NAME}: {self.title}", daemon=True).start()

    def finish(self) -> bool:
        """Write the result into the scene, or raise the model's error; False (nothing written) if cancelled."""
        if self._error is not None:
            raise self._error
        if self.cancelled:
            return False
        self._write(self._result)
        return True


@functools.lru_cache(maxsize=1)
def _loadEngine(device: str | None, useAdapter: bool):
    """The model, loaded once per process and setting: reopening the module or the scene keeps it."""
    from SAMBASegmentLib.sam import SamEngine

    return SamEngine.create(adapter="default" if useAdapter else None, device=device)


@functools.lru_cache(maxsize=1)
def _loadDetector():
    from SAMBASegmentLib.detection import TumourDetector

    return TumourDetector.load()


@functools.lru_cache(maxsize=1)
def _loadVotingNetwork():
    from SAMBASegmentLib.voting import VotingNetwork

    return VotingNetwork.load()


@dataclass
class _UndoStep:
    segmentationNodeId: str
    volumeNodeId: str
    segments: dict[str, np.ndarray | None]  # segment ID → np.packbits of its mask before; None: it did not exist


class SAMBASegmentLogic:
    """Prompts from the scene → SAM → the whole-tumour segment, with undo; one instance per scene."""

    def __init__(self, scene: slicer.vtkMRMLScene) -> None:
        self.scene = scene
        self.device: str | None = None  # None: GPU when present, else CPU
        self.useAdapter = True
        self.secondsPerSlice: float | None = None  # measured: encoder + decoder for a slice not seen before
        self._engine = None
        self._volumes: dict[str, tuple[int, ScalarVolume]] = {}  # node ID → (voxels' MTime, normalised copy)
        self._session = None  # the PropagationSession that Propagate continues, and what it was made for
        self._sessionKey: tuple | None = None
        self._undo: list[_UndoStep] = []

    # --- scene nodes ---------------------------------------------------------------------------------------------
    def parameterNode(self) -> slicer.vtkMRMLScriptedModuleNode:
        """The module's singleton parameter node; the widget wraps it in its parameterNodeWrapper."""
        node = self._singleton(slicer.vtkMRMLScriptedModuleNode)
        node.SetAttribute("ModuleName", MODULE_NAME)
        return node

    def segmentEditorNode(self) -> slicer.vtkMRMLSegmentEditorNode:
        """The state of the module's embedded Segment Editor, apart from the Segment Editor module's own."""
        return self._singleton(slicer.vtkMRMLSegmentEditorNode)

    def _singleton(self, nodeClass: type) -> slicer.vtkMRMLNode:
        node = self.scene.GetSingletonNode(MODULE_NAME, nodeClass.__name__)
        if node is None:
            node = nodeClass()
            node.SetSingletonTag(MODULE_NAME)
            node.SetName(MODULE_NAME)
            self.scene.AddNode(node)
        return node

    def createPointsNode(self, positive: bool) -> slicer.vtkMRMLMarkupsFiducialNode:
        node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "SAMBA +" if positive else "SAMBA -")
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.SetSelectedColor(*(POSITIVE_COLOUR if positive else NEGATIVE_COLOUR))
        display.SetPointLabelsVisibility(False)
        return node

    def createBoxNode(self) -> slicer.vtkMRMLMarkupsROINode:
        """An empty ROI marked as a SAM box (the attribute is set before the node enters the scene)."""
        node = slicer.vtkMRMLMarkupsROINode()
        node.SetName(self.scene.GenerateUniqueName("SAMBA box"))
        node.SetAttribute(BOX_ATTRIBUTE, "1")
        self.scene.AddNode(node)
        node.CreateDefaultDisplayNodes()
        return node

    def boxNodes(self) -> list[slicer.vtkMRMLMarkupsROINode]:
        """The boxes that prompt SAM: drawn ones and accepted proposals (a proposal prompts once accepted)."""
        return [node for node in _nodes(self.scene, "vtkMRMLMarkupsROINode")
                if node.GetAttribute(BOX_ATTRIBUTE) and not node.GetAttribute(PROPOSAL_ATTRIBUTE)
                and node.GetNumberOfDefinedControlPoints() > 0]

    def pendingProposals(self) -> list[slicer.vtkMRMLMarkupsROINode]:
        """The detector's proposals not yet accepted or rejected, best first."""
        nodes = [n for n in _nodes(self.scene, "vtkMRMLMarkupsROINode") if n.GetAttribute(PROPOSAL_ATTRIBUTE)]
        return sorted(nodes, key=lambda n: int(n.GetAttribute(PROPOSAL_ATTRIBUTE)))

    def acceptProposal(self, node: slicer.vtkMRMLMarkupsROINode) -> None:
        """The proposal becomes an ordinary box: Segment and Propagate use it, the user may still drag it."""
        node.RemoveAttribute(PROPOSAL_ATTRIBUTE)
        node.SetName(node.GetName().replace("proposal", "box"))
        node.GetDisplayNode().SetSelectedColor(*node.GetDisplayNode().GetColor())

    def rejectProposal(self, node: slicer.vtkMRMLMarkupsROINode) -> None:
        self.scene.RemoveNode(node)

    def clearPrompts(self, *pointNodes: slicer.vtkMRMLMarkupsFiducialNode | None) -> None:
        for node in self.boxNodes() + self.pendingProposals():
            self.scene.RemoveNode(node)
        for node in pointNodes:
            if node is not None:
                node.RemoveAllControlPoints()

    def outputSegmentation(self, segmentationNode: slicer.vtkMRMLSegmentationNode | None,
                           volumeNode: slicer.vtkMRMLScalarVolumeNode) -> slicer.vtkMRMLSegmentationNode:
        """The segmentation the user chose, or a new one on the volume's grid."""
        if segmentationNode is None:
            segmentationNode = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                            f"{volumeNode.GetName()} SAMBA")
            segmentationNode.CreateDefaultDisplayNodes()
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
            segmentationNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        return segmentationNode

    # --- model ----------------------------------------------------------------------------------------------------
    def configure(self, device: str | None, useAdapter: bool) -> None:
        """Choose the model's device and adapter; a change reloads the model at the next operation."""
        if (device, useAdapter) != (self.device, self.useAdapter):
            self.device, self.useAdapter = device, useAdapter
            self._engine, self._session, self.secondsPerSlice = None, None, None

    def modelDescription(self) -> str:
        """One honest line: which model, where it runs, and how fast (measured once it has run)."""
        if self._engine is None:
            adapter = "with its fine-tuned adapter when one is shipped" if self.useAdapter else "zero-shot"
            where = {None: "the GPU if there is one, else the CPU", "cpu": "the CPU", "cuda": "the GPU (CUDA)"}
            return (f"LiteMedSAM {adapter}, on {where[self.device]}; loads at the first Segment or Propagate. "
                    f"Expect {EXPECTED_CPU_SPEED}; {SEEN_SLICE_COST}.")
        speed = (f"{self.secondsPerSlice:.2f} s per new slice, measured here" if self.secondsPerSlice
                 else f"speed is measured at the first new slice (expect {EXPECTED_CPU_SPEED})")
        return f"{self._engine.describe()}: {speed}; {SEEN_SLICE_COST}."

    def engine(self):
        """The model (a SamEngine), loaded at the first call for the configured device and adapter."""
        if self._engine is None:
            self._engine = _loadEngine(self.device, self.useAdapter)
        return self._engine

    def _timed(self, work: Callable[[Any], tuple[Any, int]]) -> Any:
        """Run ``work(engine)``, which returns (result, slices it went through), and keep the seconds per newly
        encoded slice as the model line's speed, when most slices were new: a re-prompt that mostly decodes
        cached slices says little about the encoder."""
        engine = self.engine()
        calls, start = engine.encoder_calls, time.perf_counter()
        result, slices = work(engine)
        encoded = engine.encoder_calls - calls
        if encoded and 2 * encoded >= slices:
            self.secondsPerSlice = (time.perf_counter() - start) / encoded
        return result

    # --- volumes and prompts --------------------------------------------------------------------------------------
    def scalarVolume(self, volumeNode: slicer.vtkMRMLScalarVolumeNode) -> ScalarVolume:
        """A normalised copy of the node's voxels (the node is never written), kept while its voxels don't change so
        that SAM's cached slice embeddings stay valid."""
        image = volumeNode.GetImageData()
        if image is None:
            raise VolumeError(f"{volumeNode.GetName()} has no voxels")
        stamp = image.GetMTime()
        cached = self._volumes.get(volumeNode.GetID())
        if cached is None or cached[0] != stamp:
            voxels = slicer.util.arrayFromVolume(volumeNode)
            if voxels.ndim != 3:
                raise VolumeError(f"{volumeNode.GetName()} has {voxels.shape[-1]} components per voxel; "
                                  "SAM needs a scalar volume")
            voxels = np.nan_to_num(voxels.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
            if cached is not None and self._engine is not None:
                self._engine.clear_cache(cached[1])
            spacing = tuple(float(s) for s in reversed(volumeNode.GetSpacing()))
            cached = (stamp, ScalarVolume(normalise_intensities(voxels), spacing))
            self._volumes[volumeNode.GetID()] = cached
        ijk = ijkToWorld(volumeNode)[:3, :3]
        volume = cached[1]
        return ScalarVolume(volume.array, volume.spacing, ijk / np.linalg.norm(ijk, axis=0), volume.key)

    def boxes(self, volumeNode: slicer.vtkMRMLScalarVolumeNode) -> list[Box3D]:
        boxes = []
        for node in self.boxNodes():
            try:
                boxes.append(roiToBox(node, volumeNode))
            except PromptError as error:  # say which of the boxes it is
                raise PromptError(f"{node.GetName()}: {error}") from error
        return boxes

    # --- operations -----------------------------------------------------------------------------------------------
    def segmentSliceTask(self, volumeNode: slicer.vtkMRMLScalarVolumeNode, sliceNode: slicer.vtkMRMLSliceNode,
                         segmentationNode: slicer.vtkMRMLSegmentationNode,
                         positiveNode: slicer.vtkMRMLMarkupsFiducialNode | None = None,
                         negativeNode: slicer.vtkMRMLMarkupsFiducialNode | None = None,
                         carry: bool = True) -> SamTask:
        """SAM on the slice the view shows, with the boxes and clicks on it. With ``carry``, what the clicks on it
        add (+) or remove (−) is carried to the neighbouring slices while the tissue looks alike
        (SAMBASegmentLib.corrections): a missed lobe or a leak spans several slices. On those slices only the
        carried change is applied; the rest of them, the annotator's corrections included, stays."""
        volume = self.scalarVolume(volumeNode)
        target = sliceTarget(sliceNode, volumeNode)
        positives, negatives = markupsVoxels(positiveNode, volumeNode), markupsVoxels(negativeNode, volumeNode)
        prompts = slicePrompts(target, self.boxes(volumeNode), positives, negatives)
        signs = sorted({positive for _, _, positive in clicksOn(target, positives, negatives)},
                       reverse=True) if carry else []
        segmentation = segmentationNode.GetSegmentation()
        current = (readMask(segmentationNode, WHOLE_TUMOUR, volumeNode)
                   if signs and segmentation is not None and segmentation.GetSegment(WHOLE_TUMOUR) is not None
                   else np.zeros(volumeShape(volumeNode), bool))

        def compute(task: SamTask) -> tuple[tuple[int, int], np.ndarray]:
            def segment(engine):
                mask = current.copy()
                planes = np.moveaxis(mask, target.axis, 0)
                before = planes[target.index].copy()
                planes[target.index] = engine.segment(volume, target.axis, target.index, prompts)
                changed = {target.index}
                for positive in signs:
                    changed.update(self._carry(engine, volume, target, mask, before, positive, positives, negatives))
                return (mask, changed), len(changed)

            mask, changed = self._timed(segment)
            task.progress(1, 1)
            low, high = min(changed), max(changed)
            return (low, high), np.take(mask, range(low, high + 1), axis=target.axis)

        def write(result: tuple[tuple[int, int], np.ndarray]) -> None:
            slices, slab = result
            self._replaceSlices(segmentationNode, volumeNode, target.axis, slices, slab)

        return SamTask(f"segment slice {target.index}", compute, write)

    @staticmethod
    def _carry(engine, volume: ScalarVolume, target: SliceTarget, mask: np.ndarray, before: np.ndarray,
               positive: bool, positives: list[Voxel], negatives: list[Voxel]) -> list[int]:
        """Carry what the clicks of one sign changed on the target slice of ``mask`` (it was ``before``), the
        pieces of the change under those clicks, to the neighbouring slices, applying only the carried change there;
        returns the slices it reached."""
        from SAMBASegmentLib.corrections import (  # torch: off the main thread
            CarrySettings, carry_correction, correction, pieces_touching,
        )
        from SAMBASegmentLib.propagation import PropagationSettings

        planes = np.moveaxis(mask, target.axis, 0)

        def promptsOf(index: int) -> list[SlicePrompt]:
            """What a neighbour is prompted with besides the carried click: for a + click nothing (SAM segments the
            object under it, and only what it adds is kept), for a − click a box around each piece of the
            neighbour's segment (the piece the click falls in is re-segmented without the leak); plus the points
            placed on the neighbour."""
            propagation = PropagationSettings()
            pieces = [] if positive else [SlicePrompt(box=box) for box in component_boxes(
                planes[index], propagation.box_margin, propagation.min_pixels)]
            return withClicks(pieces, SliceTarget(target.axis, index), positives, negatives)

        clicks = np.zeros_like(before)
        for row, col, sign in clicksOn(target, positives, negatives):
            clicks[row, col] |= sign == positive
        settings = CarrySettings(local=True, rim=CARRY_RIM)
        change = pieces_touching(correction(before, planes[target.index], positive), clicks, settings.rim)
        carried = carry_correction(engine, volume, target.axis, mask, target.index, change, positive, promptsOf,
                                   settings)
        for index, (_, _, carriedChange) in carried.items():
            planes[index] = planes[index] | carriedChange if positive else planes[index] & ~carriedChange
        return list(carried)

    def propagateTask(self, volumeNode: slicer.vtkMRMLScalarVolumeNode, sliceNode: slicer.vtkMRMLSliceNode,
                      segmentationNode: slicer.vtkMRMLSegmentationNode,
                      positiveNode: slicer.vtkMRMLMarkupsFiducialNode | None = None,
                      negativeNode: slicer.vtkMRMLMarkupsFiducialNode | None = None) -> SamTask:
        """Segment the view's slice and propagate through the volume (within the boxes' depth, if they have one).

        With the same volume, view axis and boxes as the previous propagation, this re-prompts it: only the slices
        from this one away from the first seed are redone, and slices prompted by hand are kept.
        """
        volume = self.scalarVolume(volumeNode)
        target = sliceTarget(sliceNode, volumeNode)
        boxes = self.boxes(volumeNode)
        prompts = slicePrompts(target, boxes, markupsVoxels(positiveNode, volumeNode),
                               markupsVoxels(negativeNode, volumeNode))
        sliceRange = self._boxesDepth(volumeNode, target.axis)
        key = (volume.key, target.axis, tuple(boxes))
        session = self._session if self._sessionKey == key else None
        self._session = self._sessionKey = None  # kept again only if this run completes

        def compute(task: SamTask) -> tuple:
            def propagate(engine):
                from SAMBASegmentLib.propagation import PropagationSession  # imports torch: off the main thread

                current = session or PropagationSession(engine, volume, target.axis, sliceRange)
                result = current.run(target.index, prompts, task.progress, lambda: task.cancelled)
                return (current, result), result.slices_segmented

            current, result = self._timed(propagate)
            low, high = result.changed
            slab = np.take(result.mask, range(low, high + 1), axis=target.axis)
            return current, (low, high), slab

        def write(result: tuple) -> None:
            current, slices, slab = result
            self._replaceSlices(segmentationNode, volumeNode, target.axis, slices, slab)
            self._session, self._sessionKey = current, key

        return SamTask(f"propagate from slice {target.index}", compute, write)

    def _boxesDepth(self, volumeNode: slicer.vtkMRMLScalarVolumeNode, axis: int) -> tuple[int, int] | None:
        """The slices the boxes with depth span along ``axis`` (where propagation and the views check stay), or
        None when no box has depth."""
        deep = [box for box in self.boxes(volumeNode) if box.hi[axis] > box.lo[axis]]
        return (min(b.lo[axis] for b in deep), max(b.hi[axis] for b in deep)) if deep else None

    def checkViewsTask(self, volumeNode: slicer.vtkMRMLScalarVolumeNode, sliceNode: slicer.vtkMRMLSliceNode,
                       segmentationNode: slicer.vtkMRMLSegmentationNode) -> SamTask:
        """The whole-tumour segment as it is now (the annotator's corrections included), checked in the two views
        other than the active one: SAM segments each of their slices from the segment's cross-section, and a
        voxel stays tumour where two of the three views agree (multiview.three_view_vote). Undo SAM restores it."""
        segmentation = segmentationNode.GetSegmentation() if segmentationNode is not None else None
        mask = (readMask(segmentationNode, WHOLE_TUMOUR, volumeNode)
                if segmentation is not None and segmentation.GetSegment(WHOLE_TUMOUR) is not None else None)
        if mask is None or not mask.any():
            raise PromptError(f"segment {WHOLE_TUMOUR} is empty: segment the tumour (Propagate) before checking it "
                              "in three views")
        volume = self.scalarVolume(volumeNode)
        axis = sliceTarget(sliceNode, volumeNode).axis
        sliceRange = self._boxesDepth(volumeNode, axis)

        def compute(task: SamTask) -> np.ndarray:
            def check(engine):
                from SAMBASegmentLib.multiview import three_view_problem, three_view_vote  # torch: off the main thread

                problem = three_view_problem(volume.spacing)
                if problem is not None:
                    raise PromptError(f"{volumeNode.GetName()} cannot be checked in three views: {problem}")
                checked = three_view_vote(engine, volume, mask, axis, sliceRange, progress=task.progress,
                                          cancel=lambda: task.cancelled)
                return checked, task.total

            return self._timed(check)

        def write(checked: np.ndarray) -> None:
            self._pushUndo(segmentationNode, volumeNode, (WHOLE_TUMOUR,))
            writeMask(segmentationNode, WHOLE_TUMOUR, checked, volumeNode)
            self._session = self._sessionKey = None  # its mask is no longer the segment's

        return SamTask("check the tumour in three views", compute, write)

    def _replaceSlices(self, segmentationNode: slicer.vtkMRMLSegmentationNode,
                       volumeNode: slicer.vtkMRMLScalarVolumeNode, axis: int, slices: tuple[int, int],
                       slab: np.ndarray) -> None:
        """Put ``slab`` into slices ``slices`` (inclusive) of the whole-tumour segment; the rest, including the
        annotator's corrections, stays. The segment's previous state goes onto the undo stack."""
        current = self._pushUndo(segmentationNode, volumeNode, (WHOLE_TUMOUR,))[WHOLE_TUMOUR]
        mask = current if current is not None else np.zeros(volumeShape(volumeNode), bool)
        selector = [slice(None)] * 3
        selector[axis] = slice(slices[0], slices[1] + 1)
        mask[tuple(selector)] = slab
        writeMask(segmentationNode, ensureSegment(segmentationNode, WHOLE_TUMOUR, WHOLE_TUMOUR_COLOUR), mask,
                  volumeNode)

    def _pushUndo(self, segmentationNode: slicer.vtkMRMLSegmentationNode,
                  volumeNode: slicer.vtkMRMLScalarVolumeNode,
                  segmentIds: tuple[str, ...]) -> dict[str, np.ndarray | None]:
        """Remember the segments an operation is about to change, as they are now; returns those masks (None for a
        segment that does not exist yet), so the operation need not read them again."""
        segmentation = segmentationNode.GetSegmentation()
        current = {segmentId: readMask(segmentationNode, segmentId, volumeNode)
                   if segmentation.GetSegment(segmentId) is not None else None for segmentId in segmentIds}
        before = {segmentId: None if mask is None else np.packbits(mask) for segmentId, mask in current.items()}
        self._undo.append(_UndoStep(segmentationNode.GetID(), volumeNode.GetID(), before))
        del self._undo[:-UNDO_DEPTH]
        return current

    @property
    def canUndo(self) -> bool:
        return bool(self._undo)

    def undo(self) -> bool:
        """Put the segments back as they were before the last SAM or Refine operation; False if nothing to undo."""
        if not self._undo:
            return False
        step = self._undo.pop()
        segmentationNode = self.scene.GetNodeByID(step.segmentationNodeId)
        volumeNode = self.scene.GetNodeByID(step.volumeNodeId)
        if segmentationNode is None or volumeNode is None:
            return False
        self._session = self._sessionKey = None  # it would propagate from masks the user no longer sees
        shape = volumeShape(volumeNode)
        for segmentId, packed in step.segments.items():
            if packed is None:
                segmentationNode.GetSegmentation().RemoveSegment(segmentId)
            else:
                writeMask(segmentationNode, segmentId, np.unpackbits(packed, count=int(np.prod(shape))).reshape(shape),
                          volumeNode)
        return True

    # --- detector and voting network ---------------------------------------------------------------------------------
    def proposeTask(self, volumeNode: slicer.vtkMRMLScalarVolumeNode) -> SamTask:
        """The detector's tumour candidates on ``volumeNode`` as proposed boxes (ROIs, best first), replacing
        proposals still pending; the user accepts, drags or rejects each."""
        volume = self.scalarVolume(volumeNode)

        def compute(task: SamTask) -> list:
            from SAMBASegmentLib.detection import propose

            task.progress(0, 1)
            candidates = propose(_loadDetector(), volume, volume.view_axis("axial"))
            task.progress(1, 1)
            return candidates

        def write(candidates: list) -> None:
            for node in self.pendingProposals():
                self.scene.RemoveNode(node)
            for rank, candidate in enumerate(candidates, start=1):
                node = slicer.vtkMRMLMarkupsROINode()
                node.SetName(self.scene.GenerateUniqueName(f"SAMBA proposal {rank} ({candidate.confidence:.2f})"))
                node.SetAttribute(BOX_ATTRIBUTE, "1")
                node.SetAttribute(PROPOSAL_ATTRIBUTE, str(rank))
                self.scene.AddNode(node)
                node.CreateDefaultDisplayNodes()
                node.GetDisplayNode().SetSelectedColor(*PROPOSAL_COLOUR)
                boxToROI(node, volumeNode, candidate.box3d())

        return SamTask("propose boxes", compute, write)

    def refineTask(self, volumeNodes: dict[str, slicer.vtkMRMLScalarVolumeNode],
                   referenceNode: slicer.vtkMRMLScalarVolumeNode, sliceNode: slicer.vtkMRMLSliceNode,
                   segmentationNode: slicer.vtkMRMLSegmentationNode,
                   positiveNode: slicer.vtkMRMLMarkupsFiducialNode | None = None,
                   negativeNode: slicer.vtkMRMLMarkupsFiducialNode | None = None, views: int = 3) -> SamTask:
        """SAM with the same prompts on every loaded modality (each mask checked in ``views`` views, 1 or 3), fused
        by the voting network into segments NETC, SNFH and ET, plus a modality-agreement volume (fraction of
        modalities whose mask covers each voxel). The prompts: each box that spans slices of the view, propagated
        through them, and every slice with points or a box of its own, segmented with those
        (SAMBASegmentLib.pipeline.segment_prompted): a clinician who clicked rather than drew gets the three classes
        too."""
        volumes = {}
        for modality, node in volumeNodes.items():
            if volumeShape(node) != volumeShape(referenceNode) or not np.allclose(ijkToWorld(node),
                                                                                  ijkToWorld(referenceNode), atol=1e-3):
                raise VolumeError(f"{node.GetName()} ({modality}) is not on {referenceNode.GetName()}'s voxel grid; "
                                  "resample it onto that volume first (Resample Scalar/Vector/DWI Volume)")
            volumes[modality] = self.scalarVolume(node)
        axis = sliceTarget(sliceNode, referenceNode).axis
        allBoxes = self.boxes(referenceNode)
        boxes = [box for box in allBoxes if box.hi[axis] > box.lo[axis]]
        positives, negatives = markupsVoxels(positiveNode, referenceNode), markupsVoxels(negativeNode, referenceNode)
        prompted = promptedSlices(axis, volumeShape(referenceNode)[axis], allBoxes, positives, negatives)
        if not boxes and not prompted:
            raise PromptError("Refine segments every modality with your prompts: draw or accept a box that spans "
                              "the tumour's slices, or place + points on the tumour, first")
        sliceRange = self._boxesDepth(referenceNode, axis)
        if sliceRange is not None and prompted:  # the views check keeps to the slices prompted, boxes or points
            sliceRange = (min(sliceRange[0], *prompted), max(sliceRange[1], *prompted))

        def compute(task: SamTask) -> Any:
            def segmentAll(engine):
                from SAMBASegmentLib.pipeline import checked_in_views, segment_prompted

                stepsPerModality = len(boxes) + 2  # each box, the prompted slices, the views check
                steps = len(volumes) * stepsPerModality

                def progress(first: int, step: int, done: int, slices: int) -> None:
                    task.progress((first + step) * slices + done, steps * slices)

                masks = {}
                for number, (modality, volume) in enumerate(volumes.items()):
                    first = number * stepsPerModality
                    mask = segment_prompted(engine, volume, axis, boxes, prompted, cancel=lambda: task.cancelled,
                                            progress=functools.partial(progress, first))
                    masks[modality] = checked_in_views(
                        engine, volume, mask, axis, views, cancel=lambda: task.cancelled, slice_range=sliceRange,
                        progress=functools.partial(progress, first, len(boxes) + 1))
                slices = sum(b.hi[axis] - b.lo[axis] + 1 for b in boxes) + len(prompted)
                return masks, slices * len(volumes) * views

            masks = self._timed(segmentAll)
            images = {modality: volume.array for modality, volume in volumes.items()}
            return _loadVotingNetwork().fuse(images, masks, next(iter(volumes.values())).spacing)

        def write(fusion: Any) -> None:
            self._pushUndo(segmentationNode, referenceNode, tuple(CLASS_NAMES.values()))
            writeLabelMap(segmentationNode, fusion.label, referenceNode)
            self.agreementVolume(referenceNode, fusion.agreement)

        return SamTask(f"refine into NETC / SNFH / ET on {len(volumes)} modalities", compute, write)

    def agreementVolume(self, referenceNode: slicer.vtkMRMLScalarVolumeNode,
                        agreement: np.ndarray) -> slicer.vtkMRMLScalarVolumeNode:
        """The modality-agreement map as a volume on the reference grid, created once and then updated."""
        node = self.scene.GetFirstNodeByName(AGREEMENT_NAME)
        if node is None:
            node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", AGREEMENT_NAME)
            node.CreateDefaultDisplayNodes()
        node.CopyOrientation(referenceNode)
        node.SetAndObserveTransformNodeID(referenceNode.GetTransformNodeID())
        slicer.util.updateVolumeFromArray(node, agreement.astype(np.float32))
        display = node.GetDisplayNode()
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)
        if self.scene.GetNodeByID("vtkMRMLColorTableNodeRainbow") is not None:
            display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeRainbow")
        return node
