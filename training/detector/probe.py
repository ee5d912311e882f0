"""The detector issue's quick probe, reproduced on our split: the baseline the automatic path must clearly beat.

The issue reports that YOLOv8n trained from scratch for 30 epochs on every other axial FLAIR tumour slice of 18
cases plus about one tumour-free brain slice in ten (one box per connected component), with every box it finds at
confidence 0.25 prompting zero-shot LiteMedSAM on its slice, gives whole-tumour Dice 0.84 on cases we do not have
(val mAP50 0.45, recall 0.42). Its cases are not ours, so that figure cannot be set beside ``samba evaluate
--prompt auto`` on ours; this module trains the same probe on the split's 18 training cases (with the shipped
detector's trainer and augmentations, last epoch's weights: nothing is chosen on the validation cases) and scores
it on the validation cases.

    python -m training.detector.probe [--epochs 30] --json training/runs/detector/probe/eval_val.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from SAMBASegmentLib.detection import Detection, DetectionSettings, TumourDetector
from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.metrics import dice
from SAMBASegmentLib.pipeline import segment_slices
from SAMBASegmentLib.prompts import SlicePrompt
from SAMBASegmentLib.sam import SamEngine
from SAMBASegmentLib.volumes import ScalarVolume, load_case
from training.detector.common import RUNS_DIR, case_folder
from training.detector.evaluate import ultralytics_map
from training.detector.export import ExportSettings, export_case, write_yaml
from training.detector.train import train
from training.split import DEFAULT_DATA_DIR, load_split

PROBE_DIR = RUNS_DIR / "probe"
PROBE_EXPORT = ExportSettings(tumour_stride=2, empty_fraction=0.1, degrade_fraction=0.0)
PROBE_CONFIDENCE = 0.25  # ultralytics' default: every box the probe reports
AXIAL = 0


def export_probe_data(out: Path, data_dir: Path = DEFAULT_DATA_DIR) -> Path:
    """The probe's data set: every other tumour slice and ~1 empty slice in 10 of all 18 training cases (no
    degraded copies), plus every tumour slice (and ~1 empty in 10) of the validation cases for ultralytics' mAP50,
    which is only reported: the probe keeps its last epoch's weights. Returns the yaml."""
    yaml = out / "probe.yaml"
    if yaml.is_file():
        return yaml
    rng = np.random.default_rng(PROBE_EXPORT.seed)
    split = load_split()
    for role, names in (("train", split["training"]), ("val", split["validation"])):
        for name in names:
            counts = export_case(load_case(case_folder(name, data_dir)), role, out, PROBE_EXPORT, rng)
            print(f"{role:5s} {name}: {counts}", flush=True)
    return write_yaml(out, yaml.name, "val")


def probe_prompts(detections: list[Detection], confidence: float = PROBE_CONFIDENCE) -> dict[int, list[SlicePrompt]]:
    """One box prompt per detection of at least ``confidence``, on its own slice: no linking, no propagation."""
    prompts: dict[int, list[SlicePrompt]] = {}
    for detection in detections:
        if detection.confidence >= confidence:
            prompts.setdefault(detection.index, []).append(SlicePrompt(box=detection.box))
    return prompts


def probe_mask(detector: TumourDetector, engine: SamEngine, volume: ScalarVolume) -> np.ndarray:
    """The probe's whole tumour: every detected box segmented by SAM on its slice, the union of the results."""
    detections = detector.detect_volume(volume, AXIAL, replace(DetectionSettings(), confidence=PROBE_CONFIDENCE))
    return segment_slices(engine, volume, AXIAL, probe_prompts(detections))


def epochs_done(run: Path) -> int:
    """Epochs an ultralytics run has finished (the rows of its results.csv)."""
    results = run / "results.csv"
    return max(0, len(results.read_text().splitlines()) - 1) if results.is_file() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    yaml = export_probe_data(PROBE_DIR / "dataset", args.data_dir)
    run = PROBE_DIR / "yolo"
    weights = run / "weights" / "last.pt"
    began = time.perf_counter()
    if epochs_done(run) < args.epochs:  # a fresh run, or one an interrupted session left half done
        train(yaml, str(run.relative_to(RUNS_DIR)), args.imgsz, args.epochs, hours=0.0, batch=16,
              resume=weights.is_file())
    training_seconds = time.perf_counter() - began
    detector = TumourDetector.from_checkpoint(weights, imgsz=args.imgsz)
    engine = SamEngine.create(adapter=None)
    rows = []
    for name in load_split()["validation"]:
        case = load_case(case_folder(name, args.data_dir))
        mask = probe_mask(detector, engine, case.volume("flair"))
        rows.append({"case": name, "wt_dice": dice(mask, region_mask(case.label, "WT"))})
        engine.clear_cache()
        print(f"{name}: probe WT Dice {rows[-1]['wt_dice']:.3f}", flush=True)
    report = {"probe": {"epochs": args.epochs, "imgsz": args.imgsz, "weights": str(weights),
                        "training_seconds": round(training_seconds, 1), "export": asdict(PROBE_EXPORT)},
              "detection_val": ultralytics_map(weights, yaml, args.imgsz),
              "rows": rows, "mean_wt_dice": float(np.mean([r["wt_dice"] for r in rows]))}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"probe: mean WT Dice {report['mean_wt_dice']:.3f}, val {report['detection_val']}; wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
