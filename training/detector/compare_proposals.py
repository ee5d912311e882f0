"""Do the fast proposals (ONNX Runtime, coarse-to-fine scan) propose what the checkpoint under torch, scanning
every slice, proposes?

For each case and copy, the two are compared by what SAM is given from their proposals: each kept candidate's
slice range, seed slice and box, and the boxes it prompts on other slices (``box_confidence`` and above). Same
prompts means the automatic path's masks are the same, so its Dice is too. Also reported: the seconds each took
(the first call's set-up excluded) and the slices the detector saw. Nothing is tuned here, only checked, so every
case of the split may be used.

    .venv/bin/python -m training.detector.compare_proposals --sides train,tune,val \\
        --qualities none,thick,noise,bias --json training/runs/detector/compare_proposals.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from SAMBASegmentLib.detection import DETECTOR_DIR, Candidate, DetectionSettings, TumourDetector, propose, \
    read_detector_manifest
from SAMBASegmentLib.prompts import PixelBox
from SAMBASegmentLib.volumes import ScalarVolume, load_case
from training.detector.common import case_folder, case_roles
from training.detector.evaluate import DEGRADATIONS, degraded_case
from training.split import DEFAULT_DATA_DIR


def prompts_given(candidates: list[Candidate], settings: DetectionSettings) -> list[tuple]:
    """What the automatic path prompts SAM with, candidate by candidate (see ``detection.segment_candidate``)."""
    return [(c.slice_range, c.seed().index, c.seed().box,
             sorted((d.index, d.box) for d in c.detections if d.confidence >= settings.box_confidence))
            for c in candidates]


class CountingDetector(TumourDetector):
    """The detector, counting the slices it is shown."""

    slices = 0

    def detect_planes(self, planes: list[np.ndarray], settings: DetectionSettings = DetectionSettings()
                      ) -> list[list[tuple[PixelBox, float]]]:
        self.slices += len(planes)
        return super().detect_planes(planes, settings)


def timed_proposals(detector: CountingDetector, volume: ScalarVolume, settings: DetectionSettings
                    ) -> tuple[list[Candidate], float, int]:
    detector.slices = 0
    start = time.perf_counter()
    candidates = propose(detector, volume, volume.view_axis("axial"), settings)
    return candidates, time.perf_counter() - start, detector.slices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default="train,tune,val")
    parser.add_argument("--qualities", default="none," + ",".join(DEGRADATIONS))
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    roles = case_roles()
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    qualities = [q.strip() for q in args.qualities.split(",") if q.strip()]
    fast = DetectionSettings()
    full = replace(fast, scan_stride=1)
    shipped = CountingDetector(**vars(TumourDetector.load()))
    manifest = read_detector_manifest()
    reference = CountingDetector(**vars(TumourDetector.from_checkpoint(
        DETECTOR_DIR / manifest["file"], manifest["modality"], int(manifest["imgsz"]))))
    warm = load_case(case_folder(roles[sides[0]][0], args.data_dir)).volume(shipped.modality)
    for detector in (reference, shipped):  # the first call pays ultralytics' set-up: not timed
        propose(detector, warm, warm.view_axis("axial"), full)
    rows = []
    for side in sides:
        for seed, name in enumerate(roles[side]):
            case = load_case(case_folder(name, args.data_dir))
            for quality in qualities:
                copy = case if quality == "none" else degraded_case(case, quality, seed)
                volume = copy.volume(shipped.modality)
                old, old_seconds, old_slices = timed_proposals(reference, volume, full)
                new, new_seconds, new_slices = timed_proposals(shipped, volume, fast)
                row = {"side": side, "case": name, "quality": quality,
                       "same_prompts": prompts_given(old, full) == prompts_given(new, fast),
                       "candidates": [len(old), len(new)],
                       "seconds": [round(old_seconds, 3), round(new_seconds, 3)],
                       "slices": [old_slices, new_slices]}
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {"compared": ["checkpoint under torch, every slice",
                            f"ONNX Runtime, scan stride {fast.scan_stride}"], "copies": len(rows),
               "same_prompts": sum(r["same_prompts"] for r in rows),
               "mean_seconds": [float(np.mean([r["seconds"][i] for r in rows])) for i in (0, 1)],
               "max_seconds": [max(r["seconds"][i] for r in rows) for i in (0, 1)],
               "mean_slices": [float(np.mean([r["slices"][i] for r in rows])) for i in (0, 1)]}
    print(json.dumps(summary))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"summary": summary, "copies": rows}, indent=2))


if __name__ == "__main__":
    main()
