"""Which MRI modality the tumour detector should read: the same short training run on each, compared.

The shipped detector reads axial FLAIR. The detector issue asks for the modalities that detect best, measured.
This module exports the same slices (same cases, same tumour-free negatives and degraded copies, every other
tumour slice of the training cases to keep each run short) from each modality, of the cases that have every
compared modality (two BRATS 2013 cases have only FLAIR and T1ce), trains YOLOv8n from scratch with
the shipped trainer for the same fixed number of epochs, and reports, per modality, ultralytics' mAP50 and recall
on the tune cases (training side) and on the validation cases, and the engine's own detection figures on the
validation cases (box recall at IoU 0.5, slice-level tumour/no-tumour accuracy, whether the linked candidates
find the tumour). Every run keeps its last epoch's weights, so nothing is chosen on the validation cases.
Interrupted, it resumes: finished exports and runs are reused, a half-trained run continues.

    python -m training.detector.modalities [--modalities flair,t2,t1ce,t1] [--epochs 15] \
        --json training/runs/detector/modalities/compare.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from SAMBASegmentLib.detection import DetectionSettings, TumourDetector, configure_offline
from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.volumes import MODALITIES, find_case_files, load_case
from training.detector.common import RUNS_DIR, case_folder, case_roles
from training.detector.evaluate import detection_figures, summarise, ultralytics_map
from training.detector.export import ExportSettings, export
from training.detector.probe import epochs_done
from training.detector.train import train
from training.split import DEFAULT_DATA_DIR

COMPARE_DIR = RUNS_DIR / "modalities"
COMPARE_EXPORT = ExportSettings(tumour_stride=2)  # the shipped export, every other training tumour slice


def roles_with(modalities: list[str], data_dir: Path) -> dict[str, list[str]]:
    """The detector's case roles, keeping only the cases that have every one of ``modalities``."""
    return {role: [name for name in names if set(modalities) <= set(find_case_files(case_folder(name, data_dir)))]
            for role, names in case_roles().items()}


def exported_yaml(modality: str, roles: dict[str, list[str]], data_dir: Path) -> Path:
    """The modality's data set (exported once; ``data.yaml`` validates on the tune cases)."""
    out = COMPARE_DIR / modality / "dataset"
    if not (out / "export.json").is_file():
        if out.exists() and any(out.iterdir()):
            raise RuntimeError(f"{out} holds an unfinished export: remove it and run again")
        export(out, replace(COMPARE_EXPORT, modality=modality), data_dir, roles)
    elif json.loads((out / "export.json").read_text())["roles"] != roles:
        raise RuntimeError(f"{out} was exported from other cases: remove it and run again")
    return out / "data.yaml"


def trained_weights(modality: str, yaml: Path, epochs: int, imgsz: int) -> tuple[Path, float]:
    """The last-epoch weights of the modality's run (trained or resumed as needed) and the seconds spent now."""
    run = COMPARE_DIR / modality / "yolo"
    weights = run / "weights" / "last.pt"
    began = time.perf_counter()
    if epochs_done(run) < epochs:
        train(yaml, str(run.relative_to(RUNS_DIR)), imgsz, epochs, hours=0.0, batch=16, resume=weights.is_file())
    return weights, time.perf_counter() - began


def validation_detection(weights: Path, modality: str, cases: list[str], imgsz: int, data_dir: Path) -> dict:
    """The engine's detection figures (``training.detector.evaluate``) on the validation cases, this modality."""
    detector = TumourDetector.from_checkpoint(weights, modality, imgsz)
    settings = DetectionSettings()
    figures = {}
    for name in cases:
        case = load_case(case_folder(name, data_dir))
        figures[name] = {"detection": detection_figures(detector, case.volume(modality), region_mask(case.label, "WT"),
                                                        settings, COMPARE_EXPORT.min_component_pixels)}
    summary = summarise(figures)
    return {key: summary[key] for key in ("box_recall_iou50", "box_precision_iou50", "slice_accuracy",
                                          "slice_sensitivity", "slice_specificity", "cases_tumour_found",
                                          "false_candidates")}


def compare(modalities: list[str], epochs: int, imgsz: int, data_dir: Path) -> dict:
    configure_offline(RUNS_DIR / "ultralytics-config")
    roles = roles_with(modalities, data_dir)
    rows = {}
    for modality in modalities:
        yaml = exported_yaml(modality, roles, data_dir)
        weights, seconds = trained_weights(modality, yaml, epochs, imgsz)
        rows[modality] = {
            "training_seconds_this_call": round(seconds, 1),
            "tune": ultralytics_map(weights, yaml, imgsz),
            "val": ultralytics_map(weights, yaml.with_name("report.yaml"), imgsz),
            "val_detection": validation_detection(weights, modality, roles["val"], imgsz, data_dir),
        }
        print(f"{modality}: {json.dumps(rows[modality])}", flush=True)
    return {"epochs": epochs, "imgsz": imgsz, "cases": roles, "export": {"tumour_stride": COMPARE_EXPORT.tumour_stride,
                                                         "empty_fraction": COMPARE_EXPORT.empty_fraction,
                                                         "degrade_fraction": COMPARE_EXPORT.degrade_fraction},
            "rows": rows,
            "best_by_tune_map50": max(rows, key=lambda m: rows[m]["tune"]["map50"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modalities", default=",".join(MODALITIES))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    modalities = [m.strip() for m in args.modalities.split(",") if m.strip()]
    unknown = set(modalities) - set(MODALITIES)
    if unknown:
        parser.error(f"unknown modalities {sorted(unknown)}; expected some of {list(MODALITIES)}")
    report = compare(modalities, args.epochs, args.imgsz, args.data_dir)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"best modality on the tune cases: {report['best_by_tune_map50']}; wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
