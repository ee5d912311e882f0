"""Evaluate the localizer and the automatic path on one side of the split.

Detection: box recall/precision (IoU ≥ 0.5) and slice-level tumour/no-tumour accuracy on every brain slice,
candidate hits and false candidates, seconds per case for the proposals, and (``--map``) ultralytics mAP50
on the exported slices of the same cases. Automatic path (unless ``--no-sam``): ``detection.segment_auto`` —
the very function the CLI calls, with the CLI's three-view check (``--views``), removal of specks and the voting
network's redrawing of the whole tumour (``wt_dice``; SAM's own mask: ``wt_dice_sam``) — then whole-tumour Dice per
case, zero-shot and/or with the SAM adapter, for each prompting variant (``--variants``).
``--qualities`` adds lower-quality copies (thick slices, noise, bias field).
Tune thresholds with ``--side tune`` (training-side cases); report with ``--side val``.

    .venv/bin/python -m training.detector.evaluate --side val [--weights PATH] [--adapters none,default]
        [--qualities none,thick,noise,bias] [--views 1|3] [--map] [--no-sam] --json training/runs/detector/eval_val.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SAMBASegmentLib.detection import (Candidate, DetectionSettings, TumourDetector, filter_candidates,
                                       link_detections, segment_auto)
from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.metrics import dice
from SAMBASegmentLib.pipeline import DEFAULT_VIEWS, REFINED_REGIONS, VIEW_CHOICES, checked_in_views, evaluate_case_refined
from SAMBASegmentLib.postprocessing import remove_small_components
from SAMBASegmentLib.prompts import PixelBox
from SAMBASegmentLib.volumes import MODALITIES, Case, ScalarVolume, load_case, scalar_volume_from_image
from SAMBASegmentLib.voting import VotingNetwork
from SAMBASegmentLib.voting.fusion import VOTING_DIR
from training.detector.common import DATASET_DIR, RUNS_DIR, case_folder, case_roles
from training.detector.export import ExportSettings, tumour_boxes
from training.split import DEFAULT_DATA_DIR

DEGRADATIONS = ("thick", "noise", "bias")
# How candidates prompt SAM: the seed box then propagation, or the detector's confident box on every slice too.
# "_wide": the propagation range reaches 10 mm past the candidate (where the detector misses the thin ends).
VARIANTS: dict[str, dict] = {
    "propagate": {"box_every_slice": False}, "boxes": {"box_every_slice": True},
    "propagate_wide": {"box_every_slice": False, "range_margin_mm": 10.0},
    "boxes_wide": {"box_every_slice": True, "range_margin_mm": 10.0},
}
SLICE_CONFIDENCE = 0.25  # per-slice operating point for box and slice-level figures (ultralytics' default)


def iou(a: PixelBox, b: PixelBox) -> float:
    rows = min(a[2], b[2]) - max(a[0], b[0]) + 1
    cols = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if rows <= 0 or cols <= 0:
        return 0.0
    inter = rows * cols
    return inter / (_area(a) + _area(b) - inter)


def _area(box: PixelBox) -> int:
    return (box[2] - box[0] + 1) * (box[3] - box[1] + 1)


def seed_on_tumour(candidate: Candidate, moved_truth: np.ndarray) -> bool:
    """A candidate is right when its seed box (SAM's first prompt) holds tumour on the seed slice."""
    seed = candidate.seed()
    return bool(moved_truth[seed.index, seed.box[0]:seed.box[2] + 1, seed.box[1]:seed.box[3] + 1].any())


def degrade_case(volume: ScalarVolume, truth: np.ndarray, kind: str, seed: int) -> tuple[ScalarVolume, np.ndarray]:
    """A lower-quality copy as an older scanner gives it, renormalised the way the engine loads any volume.

    thick: 5 axial slices averaged into one (5× slice spacing; the label keeps each block's middle slice);
    noise: Gaussian noise of 6 % of the intensity range over the head; bias: a smooth ±30 % multiplicative field.
    """
    if volume.view_axis("axial") != 0:
        raise ValueError("degraded copies are built for volumes whose axial slices lie across array axis 0")
    rng = np.random.default_rng(seed)
    array, spacing = volume.array.astype(np.float32), volume.spacing
    if kind == "thick":
        depth = array.shape[0] // 5 * 5
        array = array[:depth].reshape(depth // 5, 5, *array.shape[1:]).mean(axis=1)
        truth = truth[2:depth:5]
        spacing = (spacing[0] * 5, spacing[1], spacing[2])
    elif kind == "noise":
        array = array + (array > 0) * rng.normal(0.0, 0.06, size=array.shape).astype(np.float32)
    elif kind == "bias":
        k, j, i = np.meshgrid(*[np.linspace(-1, 1, s) for s in array.shape], indexing="ij")
        a, b, c = rng.choice([-1, 1], size=3) * 0.3
        array = array * np.exp(a * k / 2 + b * j + c * i).astype(np.float32)
    else:
        raise ValueError(f"unknown degradation {kind!r}; expected one of {DEGRADATIONS}")
    image = sitk.GetImageFromArray(np.clip(array, 0.0, None))
    image.SetSpacing((spacing[2], spacing[1], spacing[0]))
    image.SetDirection(tuple(np.asarray(volume.direction, dtype=float).ravel()))
    degraded, _ = scalar_volume_from_image(image, kind)
    return degraded, truth


def degraded_case(case: Case, kind: str, seed: int) -> Case:
    """Every modality of a labelled case degraded by ``degrade_case``, as one older acquisition gives them: the
    same slabs averaged and the same bias field in every modality, noise drawn for each modality on its own (FLAIR
    with ``seed`` itself, so its copy is the one the single-modality figures use). The label follows the slabs."""
    volumes: dict[str, ScalarVolume] = {}
    label = case.label
    for modality, volume in case.volumes.items():
        own_seed = seed if kind == "bias" else seed + 1000 * MODALITIES.index(modality)
        volumes[modality], label = degrade_case(volume, case.label, kind, own_seed)
    first = next(iter(volumes.values()))
    reference = sitk.Image([int(n) for n in first.array.shape[::-1]], sitk.sitkUInt8)
    reference.SetSpacing(tuple(float(s) for s in first.spacing[::-1]))
    reference.SetDirection(case.reference.GetDirection())
    reference.SetOrigin(case.reference.GetOrigin())
    return replace(case, name=f"{case.name} ({kind})", reference=reference, volumes=volumes, label=label)


def detection_figures(detector: TumourDetector, volume: ScalarVolume, truth: np.ndarray,
                      settings: DetectionSettings, min_pixels: int) -> dict:
    """Per-case detection figures along the axial axis (see the module docstring)."""
    axis = volume.view_axis("axial")
    start = time.perf_counter()
    detections = detector.detect_volume(volume, axis, settings)
    candidates = link_detections(detections, axis, settings)
    kept = filter_candidates(candidates, volume.spacing[axis], settings)
    seconds = time.perf_counter() - start
    moved_truth = np.moveaxis(truth, axis, 0)
    moved_image = np.moveaxis(volume.array, axis, 0)
    counts = {"gt_boxes": 0, "matched_gt": 0, "pred_boxes": 0, "true_pred": 0,
              "tp": 0, "tn": 0, "fp": 0, "fn": 0}
    for index in range(moved_truth.shape[0]):
        if not moved_image[index].any():
            continue
        gt = tumour_boxes(moved_truth[index], min_pixels)
        pred = [d.box for d in detections if d.index == index and d.confidence >= SLICE_CONFIDENCE]
        counts["gt_boxes"] += len(gt)
        counts["matched_gt"] += sum(any(iou(g, p) >= 0.5 for p in pred) for g in gt)
        counts["pred_boxes"] += len(pred)
        counts["true_pred"] += sum(any(iou(g, p) >= 0.5 for g in gt) for p in pred)
        if gt:
            counts["tp" if pred else "fn"] += 1
        elif not moved_truth[index].any():
            counts["fp" if pred else "tn"] += 1
    return {**counts, "proposal_seconds": seconds,
            "candidates": [{"score": round(c.score(settings.score_top), 4), "slices": list(c.slice_range),
                            "on_tumour": seed_on_tumour(c, moved_truth), "kept": any(c is k for k in kept)}
                           for c in candidates],
            "tumour_found": any(seed_on_tumour(c, moved_truth) for c in kept),
            "false_candidates": sum(not seed_on_tumour(c, moved_truth) for c in kept)}


def summarise(cases: dict[str, dict]) -> dict:
    total = {k: sum(c["detection"][k] for c in cases.values())
             for k in ("gt_boxes", "matched_gt", "pred_boxes", "true_pred", "tp", "tn", "fp", "fn")}
    summary = {
        "box_recall_iou50": total["matched_gt"] / max(1, total["gt_boxes"]),
        "box_precision_iou50": total["true_pred"] / max(1, total["pred_boxes"]),
        "slice_accuracy": (total["tp"] + total["tn"]) / max(1, sum(total[k] for k in ("tp", "tn", "fp", "fn"))),
        "slice_sensitivity": total["tp"] / max(1, total["tp"] + total["fn"]),
        "slice_specificity": total["tn"] / max(1, total["tn"] + total["fp"]),
        "cases_tumour_found": sum(c["detection"]["tumour_found"] for c in cases.values()),
        "false_candidates": sum(c["detection"]["false_candidates"] for c in cases.values()),
        "proposal_seconds_per_case": float(np.mean([c["detection"]["proposal_seconds"] for c in cases.values()])),
        "cases": len(cases), "slice_counts": total,
    }
    for figure in ("wt_dice", "wt_dice_sam"):
        dices: dict[str, list[float]] = {}
        for case in cases.values():
            for key, value in case.get("auto", {}).items():
                dices.setdefault(key, []).append(value[figure])
        summary[f"auto_{figure}"] = {key: float(np.mean(values)) for key, values in dices.items()}
    fused: dict[str, dict[str, list[float]]] = {}
    for case in cases.values():
        for key, scores in case.get("fused", {}).items():
            for figure, value in scores.items():
                fused.setdefault(key, {}).setdefault(figure, []).append(value)
    if fused:
        summary["auto_fused"] = {key: {figure: float(np.mean(values)) for figure, values in figures.items()}
                                 for key, figures in fused.items()}
    return summary


def ultralytics_map(weights: Path, data_yaml: Path, imgsz: int) -> dict:
    """mAP50 / mAP50-95 / precision / recall of ultralytics' own validator on an exported set."""
    from ultralytics import YOLO  # configured offline by TumourDetector.load before this runs

    metrics = YOLO(str(weights), task="detect").val(
        data=str(data_yaml), imgsz=imgsz, device="cpu", workers=0, plots=False, verbose=False, batch=32,
        project=str(RUNS_DIR), name=f"val_{data_yaml.stem}", exist_ok=True)
    return {"map50": float(metrics.box.map50), "map50_95": float(metrics.box.map),
            "precision": float(metrics.box.mp), "recall": float(metrics.box.mr)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=("tune", "val"), default="val")
    parser.add_argument("--weights", type=Path, help="a detector checkpoint instead of the shipped one")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--adapters", default="none",
                        help="comma-separated SAM adapters: none (zero-shot), default, shipped, or a folder")
    parser.add_argument("--variants", default="boxes",
                        help=f"comma-separated: {','.join(VARIANTS)} (default boxes: the CLI's settings)")
    parser.add_argument("--qualities", default="none",
                        help=f"comma-separated: none (the cases as they are), {', '.join(DEGRADATIONS)}")
    parser.add_argument("--min-score", type=float, help="override DetectionSettings.min_score")
    parser.add_argument("--scan-stride", type=int,
                        help="override DetectionSettings.scan_stride (1: the detector sees every slice, so the "
                             "slice-level figures are the detector's own rather than the product's scan)")
    parser.add_argument("--map", action="store_true", help="also ultralytics mAP50 on the exported slices")
    parser.add_argument("--no-sam", action="store_true", help="detection figures only")
    parser.add_argument("--voting", type=Path, default=VOTING_DIR,
                        help="the voting network that redraws the whole tumour (default: the shipped one)")
    parser.add_argument("--views", type=int, default=DEFAULT_VIEWS, choices=VIEW_CHOICES,
                        help="3: SAM's mask checked in three views before the redraw, as samba does by default")
    parser.add_argument("--fused", action="store_true",
                        help="also the path of `samba evaluate --prompt auto --refine`: every modality segmented from "
                             "the same candidates, fused by the voting network (ET, TC, WT Dice)")
    parser.add_argument("--cases", help="comma-separated case names of the side to run (default: all); each keeps "
                                        "the degradation seed of its place in the split, so its copies match a full run")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    names = case_roles()[args.side]
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else names
    if set(chosen) - set(names):
        parser.error(f"not on the {args.side} side: {sorted(set(chosen) - set(names))}")

    settings = DetectionSettings()
    if args.min_score is not None:
        settings = replace(settings, min_score=args.min_score)
    if args.scan_stride is not None:
        settings = replace(settings, scan_stride=args.scan_stride)
    detector = TumourDetector.from_checkpoint(args.weights) if args.weights else TumourDetector.load()
    min_pixels = ExportSettings.min_component_pixels
    adapters = [] if args.no_sam else [a.strip() for a in args.adapters.split(",") if a.strip()]
    engines = {}
    if adapters:
        from SAMBASegmentLib.sam import SamEngine

        engines = {a: SamEngine.create(adapter=None if a == "none" else a) for a in adapters}
    network = VotingNetwork.load(args.voting)  # the automatic path's whole tumour, as the CLI reports it
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; expected {sorted(VARIANTS)}")
    degradations = [d.strip() for d in args.qualities.split(",") if d.strip()]
    unknown = set(degradations) - {"none", *DEGRADATIONS}
    if unknown:
        parser.error(f"unknown qualities {sorted(unknown)}; expected none or {', '.join(DEGRADATIONS)}")
    report: dict = {"side": args.side, "views": args.views, "detector": detector.describe(),
                    "settings": asdict(settings), "engines": {a: e.describe() for a, e in engines.items()},
                    "by_quality": {}}
    for quality in degradations:
        cases: dict[str, dict] = {}
        for seed, name in enumerate(names):
            if name not in chosen:
                continue
            case = load_case(case_folder(name, args.data_dir))
            if quality != "none":
                case = degraded_case(case, quality, seed)
            volume, truth = case.volume(detector.modality), region_mask(case.label, "WT")
            axis = volume.view_axis("axial")
            entry = {"detection": detection_figures(detector, volume, truth, settings, min_pixels), "auto": {},
                     "fused": {}}
            for adapter, engine in engines.items():
                for variant in variants:  # variants share the slice embeddings: only the first pays the encoder
                    result = segment_auto(engine, detector, volume, axis, replace(settings, **VARIANTS[variant]))
                    sam_mask = remove_small_components(
                        checked_in_views(engine, volume, result.mask, axis, args.views), volume.spacing)
                    redrawn = network.whole_tumour(detector.modality, volume.array, sam_mask, volume.spacing)
                    entry["auto"][f"{adapter}/{variant}"] = {
                        "wt_dice": dice(redrawn, truth), "wt_dice_sam": dice(sam_mask, truth),
                        "candidates": len(result.candidates),
                        "segmented": len(result.segmented), "proposal_seconds": result.proposal_seconds,
                        "segmentation_seconds": result.segmentation_seconds}
                if args.fused:  # after the FLAIR-only path, whose FLAIR embeddings it reuses
                    fused = evaluate_case_refined(engine, case, "auto", network, axis, detector=detector,
                                                  views=args.views)
                    entry["fused"][adapter] = {**{f"{r.lower()}_dice": fused.scores[r]["dice"] for r in REFINED_REGIONS},
                                               "seconds": fused.seconds}
                engine.clear_cache()
            cases[name] = entry
            print(f"[{quality}] {name}: found={entry['detection']['tumour_found']} "
                  f"false={entry['detection']['false_candidates']} "
                  f"proposals={entry['detection']['proposal_seconds']:.2f}s "
                  + " ".join(f"dice[{a}]={v['wt_dice']:.3f} (SAM {v['wt_dice_sam']:.3f})" for a, v in entry["auto"].items())
                  + "".join(f" fused[{a}] ET/TC/WT {v['et_dice']:.3f}/{v['tc_dice']:.3f}/{v['wt_dice']:.3f} "
                            f"({v['seconds']:.0f} s)" for a, v in entry["fused"].items()),
                  flush=True)
        report["by_quality"][quality] = {"summary": summarise(cases), "cases": cases}
        print(f"[{quality}] summary: {json.dumps(report['by_quality'][quality]['summary'])}", flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))  # after each quality: a long run keeps what it finished
    if args.map:
        yaml = DATASET_DIR / ("report.yaml" if args.side == "val" else "data.yaml")
        report["ultralytics"] = ultralytics_map(detector.path, yaml, detector.imgsz)
        print(f"ultralytics on {yaml.name}: {report['ultralytics']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
