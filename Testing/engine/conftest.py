"""Engine fixtures: one real case and one zero-shot engine for the whole session (data_dir: Testing/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from SAMBASegmentLib.volumes import load_case

PROPAGATION_CASE = "Brats18_TCIA02_135_1"


@pytest.fixture(scope="session")
def real_case(data_dir: Path):
    return load_case(data_dir / PROPAGATION_CASE)


@pytest.fixture(scope="session")
def engine():
    """Zero-shot LiteMedSAM (no adapter), so these figures do not move when an adapter ships."""
    from SAMBASegmentLib.sam import SamEngine

    return SamEngine.create(adapter=None)
