"""The YOLO export: its boxes must be the label's tumour components, in the frame the engine reads them back in."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from SAMBASegmentLib.detection import slice_to_detector_image, xyxy_to_pixel_box
from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.prompts import PixelBox
from training.detector.export import ExportSettings, export_case, yolo_line

SETTINGS = ExportSettings(degrade_fraction=0.0)


def read_boxes(path: Path, shape: tuple[int, int]) -> list[PixelBox]:
    """YOLO label file → inclusive pixel boxes, through the engine's own conversion of detector output."""
    rows, cols = shape
    boxes = []
    for line in path.read_text().splitlines():
        _, xc, yc, w, h = (float(v) for v in line.split())
        x0, x1 = (xc - w / 2) * cols, (xc + w / 2) * cols
        y0, y1 = (yc - h / 2) * rows, (yc + h / 2) * rows
        boxes.append(xyxy_to_pixel_box(x0, y0, x1, y1, shape))
    return boxes


def test_yolo_line_round_trip() -> None:
    for box in [(0, 0, 0, 0), (10, 20, 30, 60), (0, 5, 239, 239), (100, 3, 101, 4)]:
        _, xc, yc, w, h = (float(v) for v in yolo_line(box, (240, 240)).split())
        edges = ((xc - w / 2) * 240, (yc - h / 2) * 240, (xc + w / 2) * 240, (yc + h / 2) * 240)
        assert xyxy_to_pixel_box(*edges, (240, 240)) == box


def test_exported_boxes_match_label_components(training_case, tmp_path: Path) -> None:
    export_case(training_case, "train", tmp_path, SETTINGS, np.random.default_rng(0))
    tumour = region_mask(training_case.label, "WT")
    image = training_case.volume("flair").array
    labels = sorted((tmp_path / "labels" / "train").glob("*.txt"))
    assert labels, "nothing exported"
    positives = negatives = fragmented = 0
    for label_path in labels:
        index = int(label_path.stem.rsplit("_", 1)[1])
        plane = tumour[index]
        png = cv2.imread(str(tmp_path / "images" / "train" / f"{label_path.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(png, slice_to_detector_image(image[index])[:, :, 0])
        boxes = read_boxes(label_path, plane.shape)
        if not boxes:
            negatives += 1
            assert not plane.any(), f"slice {index} holds tumour but was exported as a negative"
            continue
        positives += 1
        components, count = ndimage.label(plane, structure=np.ones((3, 3), dtype=bool))
        sizes = ndimage.sum(plane, components, range(1, count + 1))
        fragmented += count > 1
        for box in boxes:
            inside = plane[box[0]:box[2] + 1, box[1]:box[3] + 1]
            # tight: tumour touches all four edges of the box
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any(), box
        for number, size in enumerate(sizes, start=1):
            if size < SETTINGS.min_component_pixels:
                continue
            rows, cols = np.nonzero(components == number)
            assert any(b[0] <= rows.min() and rows.max() <= b[2] and b[1] <= cols.min() and cols.max() <= b[3]
                       for b in boxes), f"slice {index}: component {number} ({int(size)} px) has no box"
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                x, y = boxes[a], boxes[b]
                assert x[2] < y[0] or y[2] < x[0] or x[3] < y[1] or y[3] < x[1], "overlapping boxes were not merged"
    assert positives > 20 and fragmented > 0
    # about one exported slice in five is a negative
    assert 0.1 <= negatives / (positives + negatives) <= 0.3


def test_the_modality_comparison_uses_only_cases_that_have_every_compared_modality(data_dir: Path) -> None:
    """Two BRATS 2013 cases have FLAIR and T1ce only: comparing all four modalities leaves them out of every role,
    comparing FLAIR with T1ce keeps them, and no role gains a case."""
    from training.detector.common import case_roles
    from training.detector.modalities import roles_with

    everything = case_roles()
    four = roles_with(["flair", "t1", "t1ce", "t2"], data_dir)
    two = roles_with(["flair", "t1ce"], data_dir)
    assert two == everything
    left_out = {name for names in everything.values() for name in names} - {n for v in four.values() for n in v}
    assert left_out == {"brats_2013_pat0001_1", "brats_2013_pat0006_1"}
    assert all(set(four[role]) <= set(everything[role]) for role in everything)
