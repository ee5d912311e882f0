"""YOLO-format export: slices of the cases as PNG, one box per connected tumour component, plus negatives.

Slices come from the engine's own normalised volumes (``load_case``) and are written exactly as the engine
feeds the detector (``detection.slice_to_detector_image``). Boxes: one per 8-connected whole-tumour component
of at least ``min_component_pixels`` pixels, overlapping boxes merged (the engine's ``component_boxes``, so a
lesion fragmented on one slice is one object, as propagation treats it). About one exported slice in five is
a tumour-free brain slice, so the detector learns to stay silent. A fraction of the training slices is degraded
(thick-slice averaging, bias field, noise) because the product must hold up on older scanners' images.

    .venv/bin/python -m training.detector.export [--views axial] [--modality flair] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from SAMBASegmentLib.detection import slice_to_detector_image
from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.prompts import PixelBox, component_boxes
from SAMBASegmentLib.volumes import Case, load_case
from training.degradation import degrade
from training.detector.common import DATASET_DIR, VIEWS, case_folder, case_roles
from training.split import DEFAULT_DATA_DIR


@dataclass(frozen=True)
class ExportSettings:
    """What goes into the data set. ``tumour_stride``: every n-th tumour slice of the training cases (2 halves
    the data set for short runs; tune/val keep every one); ``empty_fraction``: share of tumour-free slices among those
    exported; ``min_brain_fraction``: negatives need this much of the case's largest brain cross-section."""

    modality: str = "flair"
    views: tuple[str, ...] = ("axial",)
    tumour_stride: int = 1
    empty_fraction: float = 0.2
    min_component_pixels: int = 20
    min_brain_fraction: float = 0.3
    degrade_fraction: float = 0.3
    seed: int = 0


def tumour_boxes(tumour_plane: np.ndarray, min_pixels: int) -> list[PixelBox]:
    """Tight boxes of the connected tumour components of a slice (overlapping ones merged)."""
    return component_boxes(tumour_plane, margin=0, min_pixels=min_pixels)


def yolo_line(box: PixelBox, shape: tuple[int, int]) -> str:
    """Inclusive pixel box → YOLO ``class xc yc w h`` normalised by the image size (pixel-edge frame)."""
    rows, cols = shape
    r0, c0, r1, c1 = box
    return (f"0 {(c0 + c1 + 1) / 2 / cols:.6f} {(r0 + r1 + 1) / 2 / rows:.6f} "
            f"{(c1 - c0 + 1) / cols:.6f} {(r1 - r0 + 1) / rows:.6f}")


def choose_slices(tumour: np.ndarray, brain: np.ndarray, axis: int, stride: int, settings: ExportSettings,
                  rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """(slices with at least one box, tumour-free brain slices) to export along ``axis``; slices holding only
    specks below ``min_component_pixels`` are neither (they would teach the detector that tumour is background)."""
    other = tuple(a for a in range(3) if a != axis)
    areas = tumour.sum(axis=other)
    brain_areas = brain.sum(axis=other)
    moved = np.moveaxis(tumour, axis, 0)
    with_tumour = [int(i) for i in np.nonzero(areas >= settings.min_component_pixels)[0]
                   if tumour_boxes(moved[i], settings.min_component_pixels)][::stride]
    empty = np.nonzero((areas == 0) & (brain_areas >= settings.min_brain_fraction * brain_areas.max()))[0]
    wanted = int(round(len(with_tumour) * settings.empty_fraction / (1.0 - settings.empty_fraction)))
    negatives = sorted(int(i) for i in rng.choice(empty, min(wanted, empty.size), replace=False))
    return with_tumour, negatives


def export_case(case: Case, role: str, out: Path, settings: ExportSettings, rng: np.random.Generator) -> dict:
    """Write one case's slices and labels under ``out/images/<role>`` and ``out/labels/<role>``."""
    if case.label is None:
        raise ValueError(f"{case.name}: exporting needs a label map")
    volume = case.volume(settings.modality)
    tumour = region_mask(case.label, "WT")
    stride = settings.tumour_stride if role == "train" else 1
    counts = {"tumour_slices": 0, "empty_slices": 0, "boxes": 0, "degraded": 0}
    for view in settings.views:
        axis = volume.view_axis(view)
        positives, negatives = choose_slices(tumour, volume.array > 0, axis, stride, settings, rng)
        for index in sorted(positives + negatives):
            plane = volume.slice(axis, index)
            if role == "train" and rng.random() < settings.degrade_fraction:
                plane = degrade(volume.array, axis, index, rng)
                counts["degraded"] += 1
            boxes = tumour_boxes(np.take(tumour, index, axis=axis), settings.min_component_pixels)
            stem = f"{case.name}_{view}_{index:03d}"
            image_path = out / "images" / role / f"{stem}.png"
            image_path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(image_path), slice_to_detector_image(plane)[:, :, 0])
            label_path = out / "labels" / role / f"{stem}.txt"
            label_path.parent.mkdir(parents=True, exist_ok=True)
            label_path.write_text("".join(yolo_line(b, plane.shape) + "\n" for b in boxes))
            counts["boxes"] += len(boxes)
            counts["tumour_slices" if boxes else "empty_slices"] += 1
    return counts


def write_yaml(out: Path, name: str, val_role: str) -> Path:
    """An ultralytics data file; ``val_role`` picks which exported set ultralytics validates on."""
    path = out / name
    path.write_text(f"path: {out}\ntrain: images/train\nval: images/{val_role}\nnames:\n  0: tumour\n")
    return path


def export(out: Path, settings: ExportSettings, data_dir: Path = DEFAULT_DATA_DIR,
           roles: dict[str, list[str]] | None = None) -> dict:
    """Export train, tune and val (``roles``: the cases of each, by default ``case_roles()``); ``data.yaml``
    validates on tune (training side), ``report.yaml`` on val."""
    rng = np.random.default_rng(settings.seed)
    summary: dict = {"settings": asdict(settings), "roles": roles or case_roles(), "counts": {}}
    for role, names in summary["roles"].items():
        for name in names:
            case = load_case(case_folder(name, data_dir))
            summary["counts"][name] = {"role": role, **export_case(case, role, out, settings, rng)}
            print(f"{role:5s} {name}: {summary['counts'][name]}", flush=True)
    write_yaml(out, "data.yaml", "tune")
    write_yaml(out, "report.yaml", "val")
    (out / "export.json").write_text(json.dumps(summary, indent=2))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATASET_DIR)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--modality", default=ExportSettings.modality)
    parser.add_argument("--views", default="axial", help="comma-separated: axial,coronal,sagittal")
    parser.add_argument("--stride", type=int, default=ExportSettings.tumour_stride)
    parser.add_argument("--empty-fraction", type=float, default=ExportSettings.empty_fraction)
    parser.add_argument("--degrade-fraction", type=float, default=ExportSettings.degrade_fraction)
    args = parser.parse_args()
    views = tuple(v.strip() for v in args.views.split(",") if v.strip())
    unknown = set(views) - set(VIEWS)
    if unknown:
        parser.error(f"unknown views {sorted(unknown)}; expected {sorted(VIEWS)}")
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty: remove it first (an export never mixes with an older one)")
    settings = ExportSettings(args.modality, views, args.stride, args.empty_fraction,
                              degrade_fraction=args.degrade_fraction)
    summary = export(args.out, settings, args.data_dir)
    totals = {role: sum(c["tumour_slices"] + c["empty_slices"] for c in summary["counts"].values() if c["role"] == role)
              for role in summary["roles"]}
    print(f"exported to {args.out}: {totals}")


if __name__ == "__main__":
    main()
