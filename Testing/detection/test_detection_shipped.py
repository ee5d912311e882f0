"""The shipped detector on real, never-trained-on slices, its sha256 check, and the automatic path end to end.

The network check runs in a fresh interpreter whose sockets and DNS raise before anything is imported, so
import-time behaviour of ultralytics is covered too (checked, not assumed).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from SAMBASegmentLib import detection
from SAMBASegmentLib.detection import DetectionSettings, TumourDetector, segment_auto
from SAMBASegmentLib.errors import WeightsError
from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.metrics import dice
from SAMBASegmentLib.prompts import bounding_box
from SAMBASegmentLib.volumes import Case, ScalarVolume
from SAMBASegmentLib.weights import verify_sha256
from training.detector.evaluate import iou

OPERATING_CONFIDENCE = 0.25
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


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


def test_finds_the_tumour_on_a_validation_slice(detector, validation_case) -> None:
    index = largest_tumour_slice(validation_case)
    truth = bounding_box(region_mask(validation_case.label, "WT")[index])
    found = detector.detect_planes([validation_case.volume("flair").array[index]])[0]
    confident = [box for box, conf in found if conf >= OPERATING_CONFIDENCE]
    assert confident, f"no box on slice {index} of {validation_case.name}"
    assert max(iou(box, truth) for box in confident) >= 0.5, (confident, truth)


def test_nothing_on_an_empty_slice(detector, validation_case) -> None:
    index = empty_brain_slice(validation_case)
    found = detector.detect_planes([validation_case.volume("flair").array[index]])[0]
    assert [conf for _, conf in found if conf >= OPERATING_CONFIDENCE] == []


def test_detection_leaves_torch_threads_to_sam(validation_case) -> None:
    """Ultralytics sets torch's CPU threads to cores - 1 when it first predicts; SAM, which runs next in the
    automatic path, must keep the threads it had (on two cores it would run at half speed). A fresh detector,
    since only the first prediction sets them."""
    import torch
    from ultralytics.utils import NUM_THREADS

    plane = validation_case.volume("flair").array[largest_tumour_slice(validation_case)]
    before = torch.get_num_threads()
    wanted = NUM_THREADS + 1  # anything ultralytics would not set
    torch.set_num_threads(wanted)
    try:
        TumourDetector.load().detect_planes([plane])
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)


def test_refuses_weights_with_the_wrong_sha256(monkeypatch) -> None:
    manifest = detection.read_detector_manifest()
    monkeypatch.setattr(detection, "read_detector_manifest", lambda: {**manifest, "runtime_sha256": "0" * 64})
    with pytest.raises(WeightsError, match="sha256"):
        TumourDetector.load()


def test_the_runtime_file_finds_what_its_checkpoint_finds(detector, validation_case) -> None:
    """The shipped ONNX export against the checkpoint it was exported from (hash-checked), run by torch, on
    tumour and tumour-free slices of a never-trained-on case: the same boxes, the same confidences."""
    manifest = detection.read_detector_manifest()
    checkpoint = verify_sha256(detection.DETECTOR_DIR / manifest["file"], manifest["sha256"])
    reference = TumourDetector.from_checkpoint(checkpoint, manifest["modality"], int(manifest["imgsz"]))
    assert detector.path.suffix == ".onnx" and "ONNX Runtime" in detector.describe()
    flair = validation_case.volume("flair").array
    tumour = largest_tumour_slice(validation_case)
    planes = [flair[i] for i in (tumour - 8, tumour, tumour + 8, empty_brain_slice(validation_case))]
    exported, original = detector.detect_planes(planes), reference.detect_planes(planes)
    assert sum(map(len, original)) >= 3
    for ours, theirs in zip(exported, original):
        assert len(ours) == len(theirs)
        ours, theirs = sorted(ours), sorted(theirs)
        assert np.abs(np.array([b for b, _ in ours]) - np.array([b for b, _ in theirs])).max(initial=0) <= 1
        assert np.allclose([c for _, c in ours], [c for _, c in theirs], atol=1e-3)


def test_no_network_during_load_and_predict(validation_case, tmp_path) -> None:
    plane = validation_case.volume("flair").array[largest_tumour_slice(validation_case)]
    np.save(tmp_path / "plane.npy", plane)
    script = textwrap.dedent(f"""
        import socket
        attempts = []
        def refuse(*args, **kwargs):
            attempts.append(args[:2])
            raise OSError("network attempt")
        socket.socket.connect = socket.socket.connect_ex = socket.getaddrinfo = socket.create_connection = refuse
        import numpy as np
        from SAMBASegmentLib.detection import TumourDetector
        detector = TumourDetector.load(config_dir={str(tmp_path / "config")!r})
        found = detector.detect_planes([np.load({str(tmp_path / "plane.npy")!r})])[0]
        assert found, "the detector found nothing"
        print("ATTEMPTS", len(attempts), attempts)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPOSITORY_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ATTEMPTS 0 []" in result.stdout, result.stdout[-2000:]


def test_automatic_path_on_a_validation_sub_volume(detector, validation_case) -> None:
    """Detector → candidates → SAM seed box → propagation, on 9 slices around the largest tumour slice."""
    from SAMBASegmentLib.sam import SamEngine

    centre = largest_tumour_slice(validation_case)
    flair = validation_case.volume("flair")
    window = slice(centre - 4, centre + 5)
    volume = ScalarVolume(flair.array[window].copy(), flair.spacing, flair.direction)
    truth = region_mask(validation_case.label, "WT")[window]
    settings = replace(DetectionSettings(), range_margin_mm=0.0)
    result = segment_auto(SamEngine.create(adapter=None), detector, volume, 0, settings)
    assert len(result.segmented) >= 1
    assert result.candidates[0].slice_range[0] <= 4 <= result.candidates[0].slice_range[1]
    assert dice(result.mask, truth) >= 0.8
