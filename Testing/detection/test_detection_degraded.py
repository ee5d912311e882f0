"""The lower-quality copies the automatic path is judged on: every modality of a case degraded as one acquisition."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from SAMBASegmentLib.labels import region_mask
from training.detector.evaluate import degrade_case, degraded_case


def test_a_thick_copy_keeps_every_modality_and_the_label_on_one_5_mm_grid(validation_case):
    thick = degraded_case(validation_case, "thick", seed=0)
    depth = validation_case.shape[0] // 5
    assert thick.shape == (depth, *validation_case.shape[1:])
    assert thick.spacing == (5 * validation_case.spacing[0], *validation_case.spacing[1:])
    assert set(thick.volumes) == set(validation_case.volumes)
    for volume in thick.volumes.values():
        assert volume.array.shape == thick.shape and volume.spacing == thick.spacing
    # each slab's label is its middle slice: the tumour stays where it was
    np.testing.assert_array_equal(thick.label, validation_case.label[2:depth * 5:5])
    assert thick.name.endswith("(thick)") and validation_case.volumes["flair"].array.shape[0] == 155  # input intact


def test_noise_is_drawn_for_each_modality_and_flair_matches_the_single_modality_copy(validation_case):
    noisy = degraded_case(validation_case, "noise", seed=3)
    flair_alone, truth = degrade_case(validation_case.volumes["flair"], region_mask(validation_case.label, "WT"),
                                      "noise", 3)
    np.testing.assert_array_equal(noisy.volumes["flair"].array, flair_alone.array)
    np.testing.assert_array_equal(noisy.label, validation_case.label)
    residuals = {m: noisy.volumes[m].array - validation_case.volumes[m].array for m in ("flair", "t2")}
    head = (validation_case.volumes["flair"].array > 0) & (validation_case.volumes["t2"].array > 0)
    correlation = np.corrcoef(residuals["flair"][head], residuals["t2"][head])[0, 1]
    assert abs(correlation) < 0.2  # independent noise, not one pattern copied into every modality


def test_the_bias_field_is_the_same_in_every_modality(validation_case):
    """One coil, one field: every modality gets the field FLAIR gets (the same draw), then its own renormalisation."""
    biased = degraded_case(validation_case, "bias", seed=1)
    truth = region_mask(validation_case.label, "WT")
    for modality, volume in validation_case.volumes.items():
        alone, _ = degrade_case(volume, truth, "bias", 1)
        np.testing.assert_array_equal(biased.volumes[modality].array, alone.array)
    other_field, _ = degrade_case(validation_case.volumes["t2"], truth, "bias", 2)
    assert not np.array_equal(other_field.array, biased.volumes["t2"].array)  # the seed does choose the field


def test_a_case_off_the_chosen_side_is_refused_before_any_model_loads(tmp_path):
    """``--cases`` fills cells of a run: a name not on ``--side`` is a clear error, not an empty report."""
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "training.detector.evaluate", "--side", "val", "--cases",
                             "Brats18_TCIA02_135_1", "--json", str(report)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "not on the val side: ['Brats18_TCIA02_135_1']" in result.stderr and not report.exists()
