"""Voting-network fixtures: one validation case segmented by SAM on every modality, once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.pipeline import segment_box3d, segment_modalities
from SAMBASegmentLib.simulation import box3d_prompt
from SAMBASegmentLib.volumes import load_case

VALIDATION_CASE = "Brats18_CBICA_AQN_1"  # in training/split.json's validation side: the network never saw it


@pytest.fixture(scope="session")
def validation_case(data_dir: Path):
    return load_case(data_dir / VALIDATION_CASE)


@pytest.fixture(scope="session")
def sam_masks(validation_case):
    """Zero-shot SAM's whole-tumour mask on each modality from the simulated clinician's box (box3d)."""
    from SAMBASegmentLib.sam import SamEngine

    engine = SamEngine.create(adapter=None)
    prompt = box3d_prompt(region_mask(validation_case.label, "WT"), 0)
    return segment_modalities(engine, validation_case, lambda volume, callback: segment_box3d(
        engine, volume, prompt.box, 0, prompt.seed_index, prompt.seed_box, callback)[1].mask)
