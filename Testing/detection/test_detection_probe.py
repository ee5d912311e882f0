"""The detector issue's quick probe (training/detector/probe.py): every box at confidence 0.25 prompts SAM on its
own slice, and its data set follows the issue's recipe (every other tumour slice, about one empty slice in ten)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from SAMBASegmentLib.detection import Detection
from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.metrics import dice
from SAMBASegmentLib.volumes import ScalarVolume
from training.detector.export import export_case
from training.detector.probe import PROBE_EXPORT, epochs_done, probe_mask, probe_prompts


def test_probe_prompts_are_every_confident_box_on_its_own_slice() -> None:
    detections = [Detection(5, (10, 10, 40, 40), 0.9), Detection(5, (60, 60, 80, 90), 0.3),
                  Detection(6, (12, 12, 41, 41), 0.2), Detection(7, (11, 9, 39, 42), 0.25)]
    prompts = probe_prompts(detections)
    assert sorted(prompts) == [5, 7]
    assert [p.box for p in prompts[5]] == [(10, 10, 40, 40), (60, 60, 80, 90)]
    assert [p.box for p in prompts[7]] == [(11, 9, 39, 42)]
    assert all(not p.points for ps in prompts.values() for p in ps)


def test_probe_export_keeps_every_other_tumour_slice_and_few_negatives(training_case, tmp_path: Path) -> None:
    counts = export_case(training_case, "train", tmp_path, PROBE_EXPORT, np.random.default_rng(0))
    tumour_slices = sum(1 for p in (tmp_path / "labels" / "train").glob("*.txt") if p.read_text().strip())
    assert counts["tumour_slices"] == tumour_slices and counts["degraded"] == 0
    every_slice = int((region_mask(training_case.label, "WT").sum(axis=(1, 2)) >= 20).sum())
    assert abs(tumour_slices - every_slice / 2) <= 0.1 * every_slice
    share = counts["empty_slices"] / (counts["empty_slices"] + tumour_slices)
    assert 0.05 <= share <= 0.15, counts


def test_probe_segments_a_validation_sub_volume(detector, validation_case) -> None:
    """The shipped detector's boxes, each prompting zero-shot SAM on its slice, on 5 slices through the tumour."""
    from SAMBASegmentLib.sam import SamEngine

    truth = region_mask(validation_case.label, "WT")
    centre = int(np.argmax(truth.sum(axis=(1, 2))))
    flair = validation_case.volume("flair")
    window = slice(centre - 2, centre + 3)
    volume = ScalarVolume(flair.array[window].copy(), flair.spacing, flair.direction)
    mask = probe_mask(detector, SamEngine.create(adapter=None), volume)
    assert dice(mask, truth[window]) >= 0.75


def test_epochs_done_counts_the_rows_of_results_csv(tmp_path: Path) -> None:
    assert epochs_done(tmp_path) == 0
    (tmp_path / "results.csv").write_text("epoch,loss\n1,2.0\n2,1.5\n")
    assert epochs_done(tmp_path) == 2
