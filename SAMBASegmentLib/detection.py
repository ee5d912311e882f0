"""The tumour localizer: a YOLO detector on slices, its detections linked across slices into 3D candidates, and
the fully automatic path (candidates → SAM box prompts → propagation).

Per-slice boxes alone are a poor prompt source (SAMBA's one-top-box-per-slice path reached Dice 33.7): a single
slice is often ambiguous, but a tumour is a stack of consistent boxes on neighbouring slices while false alarms
are short and weak. So detections are linked into 3D candidates (per-slice boxes, slice range, confidence); a
candidate is the proposal a clinician accepts or drags, and its best slice seeds the propagation that the
interactive box3d workflow already uses.

Ultralytics is run fully offline (no settings sync, font download, online check or auto-install): see
``configure_offline``. It is imported lazily so that the rest of the engine never pays for it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import WeightsError
from .prompts import Box3D, PixelBox, SlicePrompt, expand_box, in_plane_axes, merge_until_apart
from .propagation import CancelCheck, PropagationSession, PropagationSettings
from .sam.engine import SamEngine
from .volumes import ScalarVolume
from .weights import WEIGHTS_DIR, verify_sha256

DETECTOR_DIR = WEIGHTS_DIR / "detector"
DETECTOR_MANIFEST = DETECTOR_DIR / "manifest.json"
DEFAULT_CONFIG_DIR = Path(tempfile.gettempdir()) / "sambasegment-ultralytics"
ProgressCallback = Callable[[int, int], None]


def configure_offline(config_dir: Path | str | None = None) -> Path:
    """Make ultralytics work without any network attempt; returns its (writable) config directory.

    YOLO_OFFLINE stops the online check and settings sync, YOLO_AUTOINSTALL=0 stops pip, and a local
    ``Arial.ttf`` (matplotlib's DejaVuSans) stops the font download that every dataset check triggers.
    Must run before ``import ultralytics`` to take full effect; an existing YOLO_CONFIG_DIR is respected.
    """
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    directory = Path(config_dir or os.environ.get("YOLO_CONFIG_DIR") or DEFAULT_CONFIG_DIR)
    os.environ["YOLO_CONFIG_DIR"] = str(directory)
    targets = [directory / "Ultralytics"]
    if "ultralytics.utils" in sys.modules:  # imported before us: its config dir is already fixed
        targets.append(Path(sys.modules["ultralytics.utils"].USER_CONFIG_DIR))
    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for target in targets:
        target.mkdir(parents=True, exist_ok=True)
        if not (target / "Arial.ttf").is_file():
            shutil.copyfile(font, target / "Arial.ttf")
    return directory


@dataclass(frozen=True)
class DetectionSettings:
    """Thresholds of the localizer (chosen on training-side cases only).

    ``confidence``: per-slice detections kept for linking (low on purpose: weak boxes next to strong ones are
    the tumour's ends); ``link_overlap``: intersection over the smaller box for two boxes on nearby slices to
    belong to one candidate; ``max_gap``: slices a candidate may skip; ``min_extent_mm``: shortest candidate;
    ``min_score``: a candidate's score (mean of its ``score_top`` best confidences, missing ones count 0) needed
    to become a proposal; ``seed_margin``: pixels added around the seed box (SAM was trained on loose boxes);
    ``range_margin_mm``: the propagation range extends this far past the candidate's slices, where the detector
    misses the tumour's thin ends; ``box_every_slice``: besides the seed, every slice where the candidate has a
    box of at least ``box_confidence`` is prompted with that box instead of the previous slice's mask;
    ``scan_stride``: the detector first sees every ``scan_stride``-th slice, then only the slices near one where it
    found something (see ``TumourDetector.detect_volume``); 1 scans every slice.
    """

    confidence: float = 0.1
    scan_stride: int = 2
    nms_iou: float = 0.5
    batch: int = 32
    link_overlap: float = 0.3
    max_gap: int = 1
    min_extent_mm: float = 3.0
    score_top: int = 3
    min_score: float = 0.7
    seed_margin: int = 5
    range_margin_mm: float = 3.0
    box_every_slice: bool = True
    box_confidence: float = 0.5


@dataclass(frozen=True)
class Detection:
    """One box on one slice: ``box`` is inclusive (row0, col0, row1, col1) in the slice's pixel frame."""

    index: int
    box: PixelBox
    confidence: float

    @property
    def area(self) -> int:
        return (self.box[2] - self.box[0] + 1) * (self.box[3] - self.box[1] + 1)


def overlap_of_smaller(a: PixelBox, b: PixelBox) -> float:
    """Intersection over the smaller box's area: robust to the tumour growing or shrinking between slices."""
    rows = min(a[2], b[2]) - max(a[0], b[0]) + 1
    cols = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if rows <= 0 or cols <= 0:
        return 0.0
    smaller = min((a[2] - a[0] + 1) * (a[3] - a[1] + 1), (b[2] - b[0] + 1) * (b[3] - b[1] + 1))
    return rows * cols / smaller


@dataclass
class Candidate:
    """A 3D tumour proposal along one view axis: the linked per-slice detections (several per slice when the
    tumour is fragmented there)."""

    axis: int
    detections: list[Detection] = field(default_factory=list)

    @property
    def slice_range(self) -> tuple[int, int]:
        indices = [d.index for d in self.detections]
        return min(indices), max(indices)

    @property
    def boxes(self) -> dict[int, list[PixelBox]]:
        """Per-slice boxes, by slice index."""
        out: dict[int, list[PixelBox]] = {}
        for detection in self.detections:
            out.setdefault(detection.index, []).append(detection.box)
        return out

    @property
    def confidence(self) -> float:
        return max(d.confidence for d in self.detections)

    def score(self, top: int) -> float:
        """Mean of the ``top`` best per-slice confidences (missing ones 0): a long, confident stack scores high,
        a one-slice flicker scores at most 1/top of its confidence."""
        best = sorted((d.confidence for d in self.detections), reverse=True)[:top]
        return float(sum(best) / top)

    def extent_mm(self, spacing: float) -> float:
        low, high = self.slice_range
        return (high - low + 1) * spacing

    def seed(self) -> Detection:
        """The slice to prompt first: the largest box among the confident ones (SAM does best where the tumour
        is largest; the box3d workflow seeds there too)."""
        best = self.confidence
        confident = [d for d in self.detections if d.confidence >= 0.8 * best]
        return max(confident, key=lambda d: (d.area, d.confidence))

    def box3d(self) -> Box3D:
        """The candidate's 3D bounding box (union of its per-slice boxes, over its slice range)."""
        row_axis, col_axis = in_plane_axes(self.axis)
        lo, hi = [0, 0, 0], [0, 0, 0]
        lo[self.axis], hi[self.axis] = self.slice_range
        lo[row_axis] = min(d.box[0] for d in self.detections)
        lo[col_axis] = min(d.box[1] for d in self.detections)
        hi[row_axis] = max(d.box[2] for d in self.detections)
        hi[col_axis] = max(d.box[3] for d in self.detections)
        return Box3D((lo[0], lo[1], lo[2]), (hi[0], hi[1], hi[2]))

    def as_json(self) -> dict[str, Any]:
        return {"axis": self.axis, "slice_range": list(self.slice_range), "confidence": round(self.confidence, 4),
                "boxes": {str(k): [list(b) for b in v] for k, v in sorted(self.boxes.items())}}


def link_detections(detections: list[Detection], axis: int, settings: DetectionSettings = DetectionSettings()
                    ) -> list[Candidate]:
    """Link per-slice detections into 3D candidates, slice by slice.

    A detection joins the open candidate whose boxes on its latest slice (at most ``max_gap`` slices back)
    overlap it best (≥ ``link_overlap`` of the smaller box); otherwise it opens a new candidate. Several
    detections on one slice may join one candidate (a fragmented lesion). Chains that touch anywhere are then
    merged (``merge_touching``): lobes that split and rejoin are one lesion. Unfiltered: see ``propose``.
    """
    candidates: list[Candidate] = []
    by_slice: dict[int, list[Detection]] = {}
    for detection in detections:
        by_slice.setdefault(detection.index, []).append(detection)
    for index in sorted(by_slice):
        open_candidates = [c for c in candidates if 0 < index - c.slice_range[1] <= settings.max_gap + 1]
        for detection in sorted(by_slice[index], key=lambda d: -d.confidence):
            best, best_overlap = None, settings.link_overlap
            for candidate in open_candidates:
                last = max(d.index for d in candidate.detections if d.index < index)
                overlap = max(overlap_of_smaller(detection.box, d.box)
                              for d in candidate.detections if d.index == last)
                if overlap >= best_overlap:
                    best, best_overlap = candidate, overlap
            if best is None:
                best = Candidate(axis)
                candidates.append(best)
            best.detections.append(detection)
    return merge_touching(candidates, settings)


def _touch(a: Candidate, b: Candidate, settings: DetectionSettings) -> bool:
    return any(abs(x.index - y.index) <= settings.max_gap + 1
               and overlap_of_smaller(x.box, y.box) >= settings.link_overlap
               for x in a.detections for y in b.detections)


def merge_touching(candidates: list[Candidate], settings: DetectionSettings = DetectionSettings()) -> list[Candidate]:
    """Merge candidates that have linkable detections (close slices, overlapping boxes) until none have.

    Greedy slice-by-slice linking follows one chain; a tumour whose lobes separate and rejoin leaves two chains
    side by side, and prompting them apart would cut each one's propagation at the other's range.
    """
    def absorb(kept: Candidate, absorbed: Candidate) -> Candidate:
        kept.detections = sorted(kept.detections + absorbed.detections, key=lambda d: d.index)
        return kept

    return merge_until_apart(candidates, lambda a, b: _touch(a, b, settings), absorb)


def filter_candidates(candidates: list[Candidate], slice_spacing: float,
                      settings: DetectionSettings = DetectionSettings()) -> list[Candidate]:
    """Candidates long and confident enough to be proposed, best score first."""
    kept = [c for c in candidates
            if c.extent_mm(slice_spacing) >= settings.min_extent_mm
            and c.score(settings.score_top) >= settings.min_score]
    return sorted(kept, key=lambda c: -c.score(settings.score_top))


def slice_to_detector_image(plane: np.ndarray) -> np.ndarray:
    """A normalised [0, 1] slice as the 3-channel uint8 image the detector was trained on (the exported PNGs)."""
    grey = np.clip(np.rint(plane * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def xyxy_to_pixel_box(x0: float, y0: float, x1: float, y1: float, shape: tuple[int, int]) -> PixelBox:
    """Edge coordinates (YOLO, in pixels) → inclusive pixel box, clipped to the slice."""
    rows, cols = shape
    r0 = int(np.clip(round(y0), 0, rows - 1))
    c0 = int(np.clip(round(x0), 0, cols - 1))
    r1 = int(np.clip(round(y1) - 1, r0, rows - 1))
    c1 = int(np.clip(round(x1) - 1, c0, cols - 1))
    return r0, c0, r1, c1


class TumourDetector:
    """The shipped YOLO tumour detector (or any ultralytics detector file), CPU by default."""

    def __init__(self, model: Any, path: Path, modality: str, imgsz: int, device: str = "cpu") -> None:
        self.model, self.path, self.modality, self.imgsz, self.device = model, path, modality, imgsz, device

    @classmethod
    def load(cls, device: str = "cpu", config_dir: Path | str | None = None) -> "TumourDetector":
        """The shipped detector: its ONNX export, run by ONNX Runtime (faster than the checkpoint under torch on
        a laptop CPU, the same boxes: see its model card), after checking its sha256 against the manifest."""
        manifest = read_detector_manifest()
        path = verify_sha256(DETECTOR_DIR / manifest["runtime_file"], manifest["runtime_sha256"])
        return cls.from_checkpoint(path, manifest["modality"], int(manifest["imgsz"]), device, config_dir)

    @classmethod
    def from_checkpoint(cls, path: Path | str, modality: str = "flair", imgsz: int = 256, device: str = "cpu",
                        config_dir: Path | str | None = None) -> "TumourDetector":
        """A detector file ultralytics can run (a training run's ``.pt`` checkpoint, or its ONNX export), not
        hash-checked: for training-side evaluation."""
        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"detector weights not found: {path}")
        configure_offline(config_dir)
        from ultralytics import YOLO

        return cls(YOLO(str(path), task="detect"), path, modality, imgsz, device)

    def describe(self) -> str:
        runtime = "ONNX Runtime" if self.path.suffix == ".onnx" else "torch"
        return (f"YOLOv8n tumour detector {self.path.name} ({self.modality}, {self.imgsz} px) "
                f"on {self.device.upper()} ({runtime})")

    def detect_planes(self, planes: list[np.ndarray], settings: DetectionSettings = DetectionSettings()
                      ) -> list[list[tuple[PixelBox, float]]]:
        """Boxes and confidences on each [0, 1] slice, in that slice's own pixel frame."""
        out: list[list[tuple[PixelBox, float]]] = []
        for start in range(0, len(planes), settings.batch):
            chunk = planes[start:start + settings.batch]
            threads = torch.get_num_threads()
            try:
                results = self.model.predict([slice_to_detector_image(p) for p in chunk], imgsz=self.imgsz,
                                             conf=settings.confidence, iou=settings.nms_iou, device=self.device,
                                             verbose=False)
            finally:  # ultralytics sets torch's CPU threads to cores - 1 (1 on two cores): SAM would run on that
                torch.set_num_threads(threads)
            for plane, result in zip(chunk, results):
                xyxy = result.boxes.xyxy.cpu().numpy()
                conf = result.boxes.conf.cpu().numpy()
                out.append([(xyxy_to_pixel_box(*b, plane.shape), float(c)) for b, c in zip(xyxy, conf)])
        return out

    def detect_volume(self, volume: ScalarVolume, axis: int = 0, settings: DetectionSettings = DetectionSettings()
                      ) -> list[Detection]:
        """Detections on the slices that hold any image (empty slices outside the head are skipped), scanned
        coarse to fine: every ``scan_stride``-th slice first, then, until nothing new is found, the unscanned
        slices near a slice with a detection: within ``scan_stride - 1`` (the slices the coarse pass stepped over)
        or ``max_gap + 1`` (the farthest a detection can link), whichever is more.

        A tumour spans many slices, so the coarse pass cannot step over one, and the fine pass finds every
        detection that links to a found one, so candidates come out as from a scan of every slice; what is
        skipped is every other slice of the tumour-free head. Only a chain of detections on unscanned slices
        alone, with none on a coarse slice, is lost: a flicker that ``filter_candidates`` would drop anyway.
        """
        if settings.scan_stride < 1:
            raise ValueError(f"scan_stride must be at least 1, not {settings.scan_stride}")
        moved = np.moveaxis(volume.array, axis, 0)
        in_head = {int(i) for i in np.nonzero(moved.reshape(moved.shape[0], -1).max(axis=1) > 0)[0]}
        reach = max(settings.scan_stride - 1, settings.max_gap + 1)
        found: dict[int, list[tuple[PixelBox, float]]] = {}
        todo = sorted(in_head)[::settings.scan_stride]
        while todo:
            found.update(zip(todo, self.detect_planes([moved[i] for i in todo], settings)))
            near = {i + step for i, boxes in found.items() if boxes for step in range(-reach, reach + 1)}
            todo = sorted(near & in_head - set(found))
        return [Detection(i, box, conf) for i in sorted(found) for box, conf in found[i]]


def read_detector_manifest() -> dict[str, Any]:
    if not DETECTOR_MANIFEST.is_file():
        raise WeightsError(f"detector manifest not found: {DETECTOR_MANIFEST}")
    return json.loads(DETECTOR_MANIFEST.read_text())["detector"]


def propose(detector: TumourDetector, volume: ScalarVolume, axis: int = 0,
            settings: DetectionSettings = DetectionSettings()) -> list[Candidate]:
    """The proposals for a volume: detections on every slice, linked, filtered; best first."""
    detections = detector.detect_volume(volume, axis, settings)
    return filter_candidates(link_detections(detections, axis, settings), volume.spacing[axis], settings)


def candidate_covered(candidate: Candidate, mask: np.ndarray) -> bool:
    """True when most of the candidate's per-slice boxes already hold segmented tumour (a duplicate proposal)."""
    moved = np.moveaxis(mask, candidate.axis, 0)
    hits = [bool(moved[d.index, d.box[0]:d.box[2] + 1, d.box[1]:d.box[3] + 1].any()) for d in candidate.detections]
    return float(np.mean(hits)) >= 0.5


def segment_candidate(engine: SamEngine, volume: ScalarVolume, candidate: Candidate,
                      settings: DetectionSettings = DetectionSettings(), progress: ProgressCallback | None = None,
                      cancel: CancelCheck | None = None,
                      propagation: PropagationSettings = PropagationSettings()) -> PropagationSession:
    """SAM on the candidate's seed slice with its (slightly grown) box, then propagation over the candidate's
    slice range plus ``range_margin_mm`` each way. With ``box_every_slice`` the candidate's confident boxes are
    entered as prompted slices first, so the one propagation pass prompts them with the detector's boxes (and
    bridges slices where the mask vanished). The returned session accepts corrections like a drawn box."""
    axis = candidate.axis
    seed = candidate.seed()
    shape = tuple(s for a, s in enumerate(volume.array.shape) if a != axis)
    margin = int(round(settings.range_margin_mm / volume.spacing[axis]))
    low, high = candidate.slice_range
    session = PropagationSession(engine, volume, axis, (low - margin, high + margin), propagation)
    if settings.box_every_slice:
        for detection in candidate.detections:
            if detection.index != seed.index and detection.confidence >= settings.box_confidence:
                prompt = SlicePrompt(box=expand_box(detection.box, settings.seed_margin, shape))
                session.slice_prompts.setdefault(detection.index, []).append(prompt)
                session.user_slices.add(detection.index)
    session.run(seed.index, [SlicePrompt(box=expand_box(seed.box, settings.seed_margin, shape))], progress, cancel)
    return session


@dataclass
class AutoSegmentation:
    """The automatic path's result: the whole-tumour mask, the proposals used, and where the time went."""

    mask: np.ndarray
    candidates: list[Candidate]
    segmented: list[Candidate]
    proposal_seconds: float
    segmentation_seconds: float


def segment_candidates(engine: SamEngine, volume: ScalarVolume, candidates: list[Candidate],
                       settings: DetectionSettings = DetectionSettings(), progress: ProgressCallback | None = None,
                       cancel: CancelCheck | None = None) -> tuple[np.ndarray, list[Candidate]]:
    """Segment each candidate (best first) unless an earlier one already covers it; return the union and the
    candidates segmented. The volume may be another modality than the one the candidates were found on."""
    mask = np.zeros(volume.array.shape, dtype=bool)
    segmented: list[Candidate] = []
    for done, candidate in enumerate(candidates, start=1):
        if cancel and cancel():
            break
        if not candidate_covered(candidate, mask):
            mask |= segment_candidate(engine, volume, candidate, settings, cancel=cancel).mask
            segmented.append(candidate)
        if progress:
            progress(done, len(candidates))
    return mask, segmented


def segment_auto(engine: SamEngine, detector: TumourDetector, volume: ScalarVolume, axis: int = 0,
                 settings: DetectionSettings = DetectionSettings(), progress: ProgressCallback | None = None,
                 cancel: CancelCheck | None = None) -> AutoSegmentation:
    """Fully automatic whole-tumour segmentation: propose candidates, segment them, return the union.
    ``progress`` counts candidates done."""
    start = time.perf_counter()
    candidates = propose(detector, volume, axis, settings)
    proposal_seconds = time.perf_counter() - start
    mask, segmented = segment_candidates(engine, volume, candidates, settings, progress, cancel)
    segmentation_seconds = time.perf_counter() - start - proposal_seconds
    return AutoSegmentation(mask, candidates, segmented, proposal_seconds, segmentation_seconds)
