"""The nodes the widget gets from the logic: singletons, prompt nodes, and which ROIs count as SAM boxes."""

from __future__ import annotations

from SAMBASegmentMRML.logic import BOX_ATTRIBUTE, NEGATIVE_COLOUR, POSITIVE_COLOUR, SAMBASegmentLogic


def test_parameter_and_segment_editor_nodes_are_scene_singletons(scene):
    logic = SAMBASegmentLogic(scene)
    parameters = logic.parameterNode()
    assert SAMBASegmentLogic(scene).parameterNode() is parameters
    assert parameters.GetAttribute("ModuleName") == "SAMBASegment"
    editor = logic.segmentEditorNode()
    assert editor.IsA("vtkMRMLSegmentEditorNode") and logic.segmentEditorNode() is editor
    assert scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode") == 1


def test_prompt_nodes_and_clearing_them(scene):
    logic = SAMBASegmentLogic(scene)
    positive, negative = logic.createPointsNode(True), logic.createPointsNode(False)
    assert positive.GetDisplayNode().GetSelectedColor() == POSITIVE_COLOUR
    assert negative.GetDisplayNode().GetSelectedColor() == NEGATIVE_COLOUR
    positive.AddControlPoint(1.0, 2.0, 3.0)
    negative.AddControlPoint(4.0, 5.0, 6.0)

    other = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "not a prompt")
    other.SetSize(5.0, 5.0, 5.0)
    box = logic.createBoxNode()
    assert box.GetAttribute(BOX_ATTRIBUTE) and logic.boxNodes() == []  # not placed yet
    box.SetSize(5.0, 5.0, 5.0)  # what placing it in a view does: its control point is defined
    assert logic.boxNodes() == [box]

    logic.clearPrompts(positive, negative, None)
    assert logic.boxNodes() == [] and box.GetScene() is None
    assert other.GetScene() is scene
    assert positive.GetNumberOfControlPoints() == negative.GetNumberOfControlPoints() == 0
