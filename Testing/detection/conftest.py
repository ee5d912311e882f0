"""Fixtures for the detector tests: real cases (``data_dir`` from Testing/conftest.py: missing data is a failure,
never a skip) and the shipped detector."""

from __future__ import annotations

from pathlib import Path

import pytest

from SAMBASegmentLib.volumes import Case, load_case

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
