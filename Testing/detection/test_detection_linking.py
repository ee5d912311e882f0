"""Linking per-slice detections into 3D candidates, and the coarse-to-fine scan that finds them, on synthetic
detections whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from SAMBASegmentLib.detection import (Candidate, Detection, DetectionSettings, TumourDetector, candidate_covered,
                                       filter_candidates, link_detections)
from SAMBASegmentLib.prompts import merge_overlapping
from SAMBASegmentLib.volumes import ScalarVolume

# Explicit thresholds: these tests check the linking rules, not the shipped operating point.
SETTINGS = DetectionSettings(link_overlap=0.3, max_gap=1, min_extent_mm=3.0, score_top=3, min_score=0.5)


def drifting_tumour(first: int, last: int, skip: set[int] = frozenset()) -> list[Detection]:
    """A tumour whose box grows then shrinks and drifts one pixel per slice, detected with confidence 0.8."""
    middle = (first + last) / 2
    out = []
    for index in range(first, last + 1):
        if index in skip:
            continue
        half = int(20 - abs(index - middle))
        centre = 100 + (index - first)
        out.append(Detection(index, (centre - half, 60 - half, centre + half, 60 + half), 0.8))
    return out


def test_two_tumours_a_flicker_and_a_missed_slice() -> None:
    tumour_a = drifting_tumour(10, 25, skip={17})  # one missed slice inside: max_gap bridges it
    tumour_b = [Detection(i, (30, 150, 50, 175), 0.6) for i in range(40, 46)]
    flicker = [Detection(33, (200, 20, 210, 30), 0.3)]
    raw = link_detections(tumour_a + tumour_b + flicker, axis=0, settings=SETTINGS)
    assert len(raw) == 3
    kept = filter_candidates(raw, slice_spacing=1.0, settings=SETTINGS)
    assert [c.slice_range for c in kept] == [(10, 25), (40, 45)]  # best score first
    first = kept[0]
    assert 17 not in first.boxes and len(first.boxes) == 15
    assert first.boxes[10] == [tumour_a[0].box]
    assert first.seed().index in (17 - 1, 17 + 1, 18)  # the largest confident box is at the middle
    box = first.box3d()
    assert box.lo[0] == 10 and box.hi[0] == 25
    assert box.lo[1] == min(d.box[0] for d in tumour_a) and box.hi[2] == max(d.box[3] for d in tumour_a)


def test_gap_longer_than_max_gap_splits_a_stack() -> None:
    detections = [Detection(i, (50, 50, 80, 80), 0.9) for i in (10, 11, 12, 16, 17, 18)]
    candidates = link_detections(detections, 0, SETTINGS)
    assert sorted(c.slice_range for c in candidates) == [(10, 12), (16, 18)]


def test_non_overlapping_boxes_on_neighbouring_slices_are_different_candidates() -> None:
    left = [Detection(i, (100, 20, 130, 50), 0.9) for i in range(5, 12)]
    right = [Detection(i, (100, 170, 130, 200), 0.7) for i in range(5, 12)]
    candidates = filter_candidates(link_detections(left + right, 0, SETTINGS), 1.0, SETTINGS)
    assert len(candidates) == 2
    assert candidates[0].boxes[5] == [(100, 20, 130, 50)] and candidates[1].boxes[5] == [(100, 170, 130, 200)]


def test_fragmented_slice_keeps_both_fragments_in_one_candidate() -> None:
    stack = [Detection(i, (60, 60, 120, 120), 0.9) for i in range(20, 26)]
    fragments = [Detection(26, (60, 60, 85, 85), 0.7), Detection(26, (95, 95, 120, 120), 0.6)]
    candidates = link_detections(stack + fragments, 0, SETTINGS)
    assert len(candidates) == 1
    assert sorted(candidates[0].boxes[26]) == [(60, 60, 85, 85), (95, 95, 120, 120)]


def test_extent_is_in_millimetres_and_weak_stacks_are_dropped() -> None:
    short = [Detection(i, (50, 50, 80, 80), 0.9) for i in (3, 4)]  # 2 slices
    assert filter_candidates(link_detections(short, 0, SETTINGS), 1.0, SETTINGS) == []  # 2 mm: too short
    assert len(filter_candidates(link_detections(short, 0, SETTINGS), 5.0, SETTINGS)) == 1  # 10 mm of thick slices
    weak = [Detection(i, (50, 50, 80, 80), 0.15) for i in range(3, 15)]
    assert filter_candidates(link_detections(weak, 0, SETTINGS), 1.0, SETTINGS) == []


def test_other_axes_and_coverage() -> None:
    candidate = Candidate(axis=2, detections=[Detection(i, (10, 20, 30, 40), 0.9) for i in range(50, 55)])
    box = candidate.box3d()  # sagittal: slices across i, rows k, columns j
    assert box.lo == (10, 20, 50) and box.hi == (30, 40, 54)
    mask = np.zeros((64, 64, 64), dtype=bool)
    assert not candidate_covered(candidate, mask)
    mask[15, 25, 50:54] = True
    assert candidate_covered(candidate, mask)


def test_lobes_that_join_become_one_candidate() -> None:
    """Two lobes on slices 10-14 join into one mass on 15-20: greedy chaining leaves two chains, merging fuses
    them, so propagation from the seed is not cut at the second lobe's range."""
    lobes = [Detection(i, (50, 50, 70, 70), 0.9) for i in range(10, 15)]
    lobes += [Detection(i, (50, 100, 70, 120), 0.8) for i in range(10, 15)]
    mass = [Detection(i, (50, 50, 70, 120), 0.9) for i in range(15, 21)]
    candidates = link_detections(lobes + mass, 0, SETTINGS)
    assert len(candidates) == 1
    assert candidates[0].slice_range == (10, 20) and len(candidates[0].boxes[12]) == 2


def test_a_merged_box_takes_in_a_box_that_neither_part_overlapped() -> None:
    """The fragments' boxes of one slice: (0,5)-(1,6) overlaps neither (0,0)-(2,2) nor (2,2)-(6,6), only their
    union, so one pass over the pairs would leave two boxes."""
    assert merge_overlapping([(0, 0, 2, 2), (0, 5, 1, 6), (2, 2, 6, 6)]) == [(0, 0, 6, 6)]
    assert merge_overlapping([(0, 0, 2, 2), (4, 4, 6, 6)]) == [(0, 0, 2, 2), (4, 4, 6, 6)]


class SliceReader(TumourDetector):
    """A detector that reads each slice's index from its pixels and finds the tumour on ``tumour_slices``;
    it records the slices it was shown, so the scan's economy is checked, not assumed."""

    def __init__(self, tumour_slices: set[int]) -> None:
        super().__init__(model=None, path=None, modality="flair", imgsz=256)
        self.tumour_slices, self.shown = tumour_slices, []

    def detect_planes(self, planes, settings=DetectionSettings()):
        indices = [int(round(plane.max() * 1000)) - 1 for plane in planes]
        self.shown += indices
        return [[((10, 10, 30, 30), 0.9)] if i in self.tumour_slices else [] for i in indices]


def indexed_volume(slices: int, head: range) -> ScalarVolume:
    """Slice i holds (i + 1) / 1000 in a square when it is inside the head, nothing otherwise."""
    array = np.zeros((slices, 40, 40), dtype=np.float32)
    for index in head:
        array[index, 5:35, 5:35] = (index + 1) / 1000
    return ScalarVolume(array, (1.0, 1.0, 1.0), np.eye(3))


def test_coarse_to_fine_scan_finds_what_a_full_scan_finds_on_fewer_slices() -> None:
    """A tumour on slices 20-33 plus slice 18, which links across the empty slice 19 (``max_gap`` 1): the coarse
    pass (odd slices) never sees 18, the fine pass must reach it from 20."""
    volume = indexed_volume(60, range(3, 57))  # slices 0-2 and 57-59 lie outside the head
    tumour = {18, *range(20, 34)}
    full = SliceReader(tumour)
    everything = full.detect_volume(volume, 0, DetectionSettings(scan_stride=1))
    assert sorted(full.shown) == list(range(3, 57)) and {d.index for d in everything} == tumour
    coarse = SliceReader(tumour)
    assert coarse.detect_volume(volume, 0, DetectionSettings(scan_stride=2)) == everything
    # odd slices, then the even ones within two slices of a detection: 16 and 34 are looked at and found empty
    assert sorted(coarse.shown) == sorted(set(range(3, 57, 2)) | set(range(16, 35, 2)))
    wide = SliceReader(tumour)  # a stride of 4 needs more fine passes, and still misses nothing
    assert wide.detect_volume(volume, 0, DetectionSettings(scan_stride=4)) == everything
    assert len(wide.shown) < len(coarse.shown) < len(full.shown)


def test_a_scan_stride_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="scan_stride"):
        SliceReader(set()).detect_volume(indexed_volume(5, range(5)), 0, DetectionSettings(scan_stride=0))
