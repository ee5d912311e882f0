"""Ship a trained detector: copy its checkpoint into the engine's weights, export the ONNX file the engine runs,
and write the manifest (sha256 of both).

The manifest records what the engine needs to use the file (modality, image size, view) and what a reader needs
to trust it (run, epochs, cases, licences). The model card (MODEL_CARD.md beside it) quotes the evaluation.
``--runtime-only`` re-exports the ONNX file from the shipped checkpoint (the training run is not needed).

    .venv/bin/python -m training.detector.ship [--run axial_flair] [--checkpoint best] [--runtime-only]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

from SAMBASegmentLib.detection import DETECTOR_DIR, DETECTOR_MANIFEST, configure_offline
from SAMBASegmentLib.weights import sha256_of
from training.detector.common import DATASET_DIR, RUNS_DIR, case_roles

SHIPPED_NAME = "tumour_detector_yolov8n_axial_flair.pt"
RUNTIME_NAME = "tumour_detector_yolov8n_axial_flair.onnx"
EXPORT_BATCH = 32  # DetectionSettings.batch; the batch axis stays dynamic
DATA_LICENCES = ("BRATS 2012-2015: CC BY-NC-SA 3.0; BraTS 2018: research use with citation "
                 "(Menze et al. 2015 IEEE TMI 34(10); Bakas et al. 2017 Sci Data 4; Bakas et al. 2018 "
                 "arXiv:1811.02629). Weights are for research use only.")


def epochs_trained(run: Path) -> int:
    """Epochs actually completed, from ultralytics' results.csv (a time-bounded run re-plans its epoch count)."""
    with open(run / "results.csv", newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def export_runtime(checkpoint: Path, imgsz: int) -> dict:
    """The checkpoint as the ONNX file the engine runs (ultralytics' own exporter, dynamic batch, fp32), beside
    it under ``RUNTIME_NAME``; returns its manifest fields."""
    configure_offline()
    from ultralytics import YOLO

    exported = Path(YOLO(str(checkpoint), task="detect").export(
        format="onnx", imgsz=imgsz, dynamic=True, batch=EXPORT_BATCH, simplify=False, device="cpu"))
    target = DETECTOR_DIR / RUNTIME_NAME
    if exported != target:
        shutil.move(exported, target)
    return {"runtime_file": RUNTIME_NAME, "runtime_sha256": sha256_of(target), "runtime_bytes": target.stat().st_size,
            "runtime": "ONNX Runtime (CPUExecutionProvider), exported by ultralytics from the checkpoint"}


def ship_runtime_only() -> dict:
    """Re-export the runtime file from the shipped checkpoint and update the manifest."""
    entry = json.loads(DETECTOR_MANIFEST.read_text())["detector"]
    entry.update(export_runtime(DETECTOR_DIR / entry["file"], int(entry["imgsz"])))
    DETECTOR_MANIFEST.write_text(json.dumps({"detector": entry}, indent=2) + "\n")
    return entry


def ship(run: Path, checkpoint: str) -> dict:
    source = run / "weights" / f"{checkpoint}.pt"
    if not source.is_file():
        raise FileNotFoundError(f"checkpoint not found: {source}")
    export = json.loads((DATASET_DIR / "export.json").read_text())
    args = (run / "args.yaml").read_text()
    imgsz = next(int(line.split(":")[1]) for line in args.splitlines() if line.startswith("imgsz:"))
    DETECTOR_DIR.mkdir(parents=True, exist_ok=True)
    target = DETECTOR_DIR / SHIPPED_NAME
    shutil.copyfile(source, target)
    roles = case_roles()
    entry = {
        "file": SHIPPED_NAME,
        "sha256": sha256_of(target),
        "bytes": target.stat().st_size,
        "architecture": "YOLOv8n from yolov8n.yaml (trained from scratch, no pretrained weights)",
        "modality": export["settings"]["modality"],
        "views": export["settings"]["views"],
        "imgsz": imgsz,
        "epochs": epochs_trained(run),
        "checkpoint": f"{run.name}/{checkpoint}.pt (chosen on the tune cases)",
        "training_cases": roles["train"],
        "tune_cases": roles["tune"],
        "never_seen": roles["val"],
        "export_settings": export["settings"],
        "licence": "AGPL-3.0 (ultralytics); see MODEL_CARD.md",
        "data_licences": DATA_LICENCES,
        **export_runtime(target, imgsz),
    }
    DETECTOR_MANIFEST.write_text(json.dumps({"detector": entry}, indent=2) + "\n")
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="axial_flair")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--runtime-only", action="store_true",
                        help="only re-export the ONNX file from the shipped checkpoint")
    args = parser.parse_args()
    entry = ship_runtime_only() if args.runtime_only else ship(RUNS_DIR / args.run, args.checkpoint)
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
