"""Offline YOLOv8n training on the exported slices, on the CPU, resumable.

Built from ``yolov8n.yaml`` (a ``.pt`` name would download weights); ultralytics is configured by
``detection.configure_offline`` before it is imported, so the run makes no network attempt. ``--hours`` bounds
the wall time (ultralytics then re-plans the epoch count and learning-rate schedule after every epoch), which
is what matters on a shared CPU; ``--epochs`` alone gives a fixed schedule for longer runs.

    .venv/bin/python -m training.detector.train [--hours 0.45] [--imgsz 256] [--name axial_flair] [--resume]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from SAMBASegmentLib.detection import configure_offline
from training.detector.common import DATASET_DIR, RUNS_DIR


def train(data: Path, name: str, imgsz: int, epochs: int, hours: float, batch: int, resume: bool) -> Path:
    """Train (or resume) a run under ``RUNS_DIR/name``; returns the best checkpoint (chosen on the tune set)."""
    configure_offline(RUNS_DIR / "ultralytics-config")
    from ultralytics import YOLO

    last = RUNS_DIR / name / "weights" / "last.pt"
    if resume:
        if not last.is_file():
            raise FileNotFoundError(f"nothing to resume: {last} does not exist")
        model = YOLO(str(last))
        model.train(resume=True)
    else:
        model = YOLO("yolov8n.yaml")
        model.train(
            data=str(data), imgsz=imgsz, epochs=epochs, time=hours or None, batch=batch, device="cpu",
            workers=0, amp=False, project=str(RUNS_DIR), name=name, exist_ok=False, plots=False, cache="ram",
            single_cls=True, seed=0, deterministic=True, patience=0,
            # MRI slices: no hue/saturation; left-right flips are anatomical, up-down flips are not.
            hsv_h=0.0, hsv_s=0.0, hsv_v=0.3, fliplr=0.5, flipud=0.0, degrees=5.0, scale=0.3, translate=0.1,
        )
    return RUNS_DIR / name / "weights" / "best.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATASET_DIR / "data.yaml")
    parser.add_argument("--name", default="axial_flair")
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=40, help="fixed schedule when --hours is 0")
    parser.add_argument("--hours", type=float, default=0.45, help="wall-time budget; 0 = use --epochs")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--resume", action="store_true", help="continue RUNS_DIR/NAME from its last.pt")
    args = parser.parse_args()
    best = train(args.data, args.name, args.imgsz, args.epochs, args.hours, args.batch, args.resume)
    print(f"best checkpoint: {best}")


if __name__ == "__main__":
    main()
