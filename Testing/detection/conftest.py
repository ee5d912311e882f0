"""Fixtures for the detector tests: real cases (``data_dir`` from Testing/conftest.py: missing data is a failure,
never a skip) and the shipped detector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.volumes import Case, load_case

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
VALIDATION_CASE = "Brats18_CBICA_AQN_1"  # on the validation side of training/split.json: never trained on
TRAINING_CASE = "Brats18_TCIA02_135_1"  # training side: used to check the export


@pytest.fixture(scope="session")
def validation_case(data_dir: Path) -> Case:
    return load_case(data_dir / VALIDATION_CASE)


@pytest.fixture(scope="session")
def training_case(data_dir: Path) -> Case:
    return load_case(data_dir / TRAINING_CASE)


@pytest.fixture(scope="session")
def detector():
    from SAMBASegmentLib.detection import TumourDetector

    return TumourDetector.load()


def largest_tumour_slice(case: Case) -> int:
    """Axial slice with the most whole-tumour pixels."""
    return int(np.argmax(region_mask(case.label, "WT").sum(axis=(1, 2))))


def empty_brain_slice(case: Case) -> int:
    """A tumour-free axial slice with a large brain cross-section, as far from the tumour as possible."""
    tumour = region_mask(case.label, "WT").sum(axis=(1, 2))
    brain = (case.volume("flair").array > 0).sum(axis=(1, 2))
    rows = np.nonzero(tumour)[0]
    candidates = [i for i in np.nonzero((tumour == 0) & (brain >= 0.6 * brain.max()))[0]]
    return int(max(candidates, key=lambda i: min(abs(i - rows.min()), abs(i - rows.max()))))
