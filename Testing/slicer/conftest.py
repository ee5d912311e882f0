"""Fixtures for the Slicer module's tests: a real MRML scene from slicer-core, wired as Slicer wires it, and the
shared BraTS cases (data_dir: Testing/conftest.py). Missing data fails the tests: they exist to check the module on real MRML and real images."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import slicer

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "SAMBASegment"
sys.path.insert(0, str(MODULE_DIR))  # where Slicer puts a scripted module's folder: SAMBASegmentMRML imports from it


@pytest.fixture
def scene() -> slicer.vtkMRMLScene:
    """A scene with the application, colour, segmentation and volume logics that Slicer attaches at start-up.

    slicer-core has no share directory, so the colour logic logs that it cannot find colour files; the built-in
    colour tables it adds are the ones these tests need."""
    mrmlScene = slicer.vtkMRMLScene()
    appLogic = slicer.vtkSlicerApplicationLogic()
    appLogic.SetMRMLScene(mrmlScene)
    colorLogic = slicer.vtkSlicerColorLogic()
    for name, logic in (("Colors", colorLogic),
                        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic()),
                        ("Volumes", slicer.vtkSlicerVolumesLogic()),
                        ("Markups", slicer.vtkSlicerMarkupsLogic())):
        logic.SetMRMLApplicationLogic(appLogic)
        logic.SetMRMLScene(mrmlScene)
        appLogic.SetModuleLogic(name, logic)
    colorLogic.AddDefaultColorNodes()
    mrmlScene.appLogic = appLogic  # the logics are owned by it: keep it alive as long as the scene
    return mrmlScene


@pytest.fixture(scope="session")
def caseDir(data_dir: Path) -> Path:
    from SAMBASegmentMRML.selftest import CASE

    folder = data_dir / CASE
    if not folder.is_dir():
        pytest.fail(f"{folder} is missing")
    return folder


@pytest.fixture(scope="session")
def selfTestSlab(caseDir: Path, slab_case) -> Path:
    """The self-test case cut to its tumour's central axial slices (``slab_case``): the self-test's own logic at a
    fraction of the encoder calls (Slicer's runner gives it the whole case)."""
    return slab_case(caseDir.name)
