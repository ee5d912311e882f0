"""The panel's .ui loads under PySide6 (offscreen) and matches what SAMBASegment.py expects of it."""

from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from PySide6.QtWidgets import QAbstractButton, QApplication, QPushButton, QWidget  # noqa: E402

sys.path.insert(0, str(REPO / "Resources" / "Screenshots"))
from render_panel import loadPanel  # noqa: E402

MODULE_SOURCE = (REPO / "SAMBASegment" / "SAMBASegment.py").read_text()
@pytest.fixture(scope="module")
def panel() -> QWidget:
    application = QApplication.instance() or QApplication([])
    widget = loadPanel(standIns=False)  # Slicer's widgets become plain QWidgets that keep their names
    yield widget
    widget.deleteLater()
    application.processEvents()


def widgetNames(panel: QWidget) -> set[str]:
    return {child.objectName() for child in panel.findChildren(QWidget)}


def test_every_widget_the_module_code_uses_exists_in_the_ui(panel):
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_SOURCE))
    assert len(used) > 10
    assert used <= widgetNames(panel), f"missing from the .ui: {sorted(used - widgetNames(panel))}"


def test_widgets_bound_to_parameters_name_fields_of_the_parameter_node(panel):
    tree = ast.parse(MODULE_SOURCE)
    (wrapper,) = [node for node in tree.body if isinstance(node, ast.ClassDef)
                  and node.name == "SAMBASegmentParameterNode"]
    fields = {item.target.id for item in wrapper.body if isinstance(item, ast.AnnAssign)}
    bound = [child.property("SlicerParameterName") for child in panel.findChildren(QWidget)
             if child.property("SlicerParameterName")]
    assert len(bound) == len(set(bound))
    assert set(bound) == {"flair", "t1", "t1ce", "t2", "promptModality", "output", "device", "useAdapter",
                          "refineInThreeViews", "carryCorrections"}
    assert set(bound) <= fields


def test_each_shortcut_is_shown_on_its_button(panel):
    shortcuts = {}
    for button in panel.findChildren(QAbstractButton):
        key = button.shortcut().toString()
        if key:
            assert f"({key})" in button.text(), button.objectName()
            shortcuts[key] = button.objectName()
    assert set(shortcuts) == {"Alt+P", "Alt+N", "Alt+B", "Alt+S", "Alt+G", "Alt+V", "Alt+A", "Alt+Z", "Alt+D", "Alt+R",
                              "Alt+F"}


def test_every_push_button_does_something(panel):
    """No dead button: each one in the panel is connected in the widget code, none says it is not available."""
    buttons = panel.findChildren(QPushButton)
    assert len(buttons) >= 12
    for button in buttons:
        name = button.objectName()
        assert f"self.ui.{name}.clicked.connect" in MODULE_SOURCE, name
        assert "Not available" not in button.toolTip(), name
