"""Render the module panel (SAMBASegment/Resources/UI/SAMBASegment.ui) to panel.png without Slicer.

PySide6 draws the .ui offscreen; Slicer's own widgets (ctk, qMRML) are replaced by plain Qt stand-ins that show
what Slicer would: titled sections, volume pickers holding a BraTS case's names, a box where the Segment Editor
goes. The model line is the logic's own text before the model has loaded.

    QT_QPA_PLATFORM=offscreen .venv/bin/python Resources/Screenshots/render_panel.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from PySide6.QtCore import Property, QFile, QLoggingCategory
from PySide6.QtUiTools import QUiLoader
from PySide6.QtWidgets import QApplication, QComboBox, QGroupBox, QLabel, QWidget

REPO = Path(__file__).resolve().parents[2]
UI_FILE = REPO / "SAMBASegment" / "Resources" / "UI" / "SAMBASegment.ui"
OUTPUT = Path(__file__).with_name("panel.png")
CASE = "Brats18_TCIA02_135_1"
SELECTOR_ITEMS = {
    "flairSelector": f"{CASE}_flair", "t1Selector": f"{CASE}_t1", "t1ceSelector": f"{CASE}_t1ce",
    "t2Selector": f"{CASE}_t2", "outputSelector": "Create new segmentation",
    "promptModalityComboBox": "FLAIR", "deviceComboBox": "Automatic (GPU if present)",
}


class ctkCollapsibleButton(QGroupBox):  # noqa: N801 - the .ui's class name
    def _text(self) -> str:
        return self.title()

    def _setText(self, text: str) -> None:
        self.setTitle(text)

    text = Property(str, _text, _setText)


class qMRMLNodeComboBox(QComboBox):  # noqa: N801
    pass


class qMRMLWidget(QWidget):  # noqa: N801
    pass


class qMRMLSegmentEditorWidget(QLabel):  # noqa: N801
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Slicer's Segment Editor on the output segmentation:\n"
                         "Paint, Draw, Erase, Islands, Smoothing, ... with its own undo", parent)
        self.setMinimumHeight(90)
        self.setStyleSheet("border: 1px dashed gray; padding: 6px;")


def loadPanel(standIns: bool) -> QWidget:
    """The panel as QUiLoader builds it: with the stand-ins, or (standIns=False) with unknown classes as QWidgets."""
    loader = QUiLoader()
    if standIns:
        for widgetClass in (ctkCollapsibleButton, qMRMLNodeComboBox, qMRMLWidget, qMRMLSegmentEditorWidget):
            loader.registerCustomWidget(widgetClass)
    uiFile = QFile(str(UI_FILE))
    if not uiFile.open(QFile.ReadOnly):
        raise OSError(f"cannot open {UI_FILE}")
    panel = loader.load(uiFile)
    uiFile.close()
    if panel is None:
        raise RuntimeError(f"{UI_FILE.name} does not load: {loader.errorString()}")
    return panel


def modelLine() -> str:
    sys.path.insert(0, str(REPO / "SAMBASegment"))
    import slicer
    from SAMBASegmentMRML.logic import SAMBASegmentLogic

    return SAMBASegmentLogic(slicer.vtkMRMLScene()).modelDescription()


def main() -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    QLoggingCategory.setFilterRules("qt.core.qobject.connect=false")  # Slicer's scene signals have no stand-in
    application = QApplication.instance() or QApplication([])
    panel = loadPanel(standIns=True)
    for name, item in SELECTOR_ITEMS.items():
        panel.findChild(QComboBox, name).addItem(item)
    panel.findChild(QLabel, "modelLabel").setText(modelLine())
    for name in ("progressBar", "cancelButton"):  # shown only while SAM runs
        panel.findChild(QWidget, name).hide()
    panel.resize(440, panel.sizeHint().height())
    panel.grab().save(str(OUTPUT))
    application.quit()
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
