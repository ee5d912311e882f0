"""The ``samba`` command: segment a case from a box, evaluate against labels, benchmark the engine."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import SambaError
from .labels import CLASS_NAMES, LabelConvention, from_internal
from .pipeline import (DEFAULT_VIEWS, PROMPT_MODES, REFINED_REGIONS, VIEW_CHOICES, WHOLE_TUMOUR_VALUE,
                       checked_in_views, evaluate_case, evaluate_case_refined, fuse, segment_box3d, segment_modalities,
                       summarise)
from .postprocessing import remove_small_components
from .prompts import Box3D
from .volumes import IMAGE_SUFFIXES, MODALITIES, LABEL_KEY, Case, load_case, write_volume

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPOSITORY_ROOT.parent / "shared" / "data" / "brats"
BENCH_CASE = "Brats18_TCIA02_135_1"


class _Progress:
    """A tqdm bar fed by the engine's (done, total) callbacks."""

    def __init__(self, description: str):
        self.bar = tqdm(total=0, desc=description, unit="slice", leave=False, file=sys.stderr)

    def __call__(self, done: int, total: int) -> None:
        if self.bar.total != total:
            self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class _ModalityProgress(_Progress):
    """One bar for segmenting every modality in turn: its label names the modality being segmented."""

    def __call__(self, modality: str, done: int, total: int) -> None:  # type: ignore[override]
        self.bar.set_description(modality, refresh=False)
        super().__call__(done, total)


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--base", default="litemedsam", help="'litemedsam' (default) or a segment-anything ViT checkpoint")
    group.add_argument("--vit-type", default="vit_b", choices=("vit_b", "vit_l", "vit_h"))
    group.add_argument("--adapter", default="default",
                       help="LoRA adapter folder; 'shipped' for the shipped one even when it is opt-in "
                            "(default: the shipped one if its manifest makes it the default)")
    group.add_argument("--no-adapter", action="store_true", help="run the base model zero-shot")
    group.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    group.add_argument("--no-bf16", action="store_true",
                       help="fp32 on a CPU with native bf16 too (then in ONNX Runtime, unless --encoder-runtime torch)")
    group.add_argument("--encoder-runtime", default="auto", choices=("auto", "torch", "onnxruntime"),
                       help="what runs SAM's image encoder (default auto: PyTorch with bf16 autocast on a CPU that "
                            "has native bf16, and on a GPU; ONNX Runtime in fp32 on other CPUs, 3-4x faster than "
                            "PyTorch fp32; onnxruntime on a bf16 CPU: a little faster, Dice 0.2-0.4 points lower)")


def _add_refine_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("three tumour classes")
    group.add_argument("--refine", nargs="?", const="network", choices=("network", "rule"),
                       help="segment every modality with the same prompt and fuse the masks into NETC / SNFH / ET "
                            "with the voting network (or 'rule': the rule baseline); writes a modality-agreement "
                            "map beside the label map")
    group.add_argument("--voting-network", help="a voting network folder (default: the shipped one)")
    parser.add_argument("--whole-tumour", choices=("sam", "network"), default=None,
                        help="the whole tumour from one modality: SAM's mask, or redrawn by the voting network from "
                             "that modality alone (default: sam; --prompt auto fuses every modality as --refine "
                             "does unless this is given)")


def _add_view_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--view", default="axial", choices=("axial", "coronal", "sagittal"),
                        help="the view SAM segments slice by slice")
    parser.add_argument("--views", type=int, default=DEFAULT_VIEWS, choices=VIEW_CHOICES,
                        help="3: check the finished mask in the two other views and keep what two of three views agree "
                             f"on (about 2.5x the time, more accurate); 1: the --view alone (default {DEFAULT_VIEWS})")


def _add_case_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("case files (override detection by name)")
    for key in (*MODALITIES, LABEL_KEY):
        group.add_argument(f"--{key}-file", dest=f"{key}_file", metavar="FILE", help=f"the {key} file")
    group.add_argument("--label-convention", choices=[c.value for c in LabelConvention],
                       help="label values of the input label map (default: detected)")


def _engine(args: argparse.Namespace):
    from .sam.engine import SamEngine  # torch loads here, not at `samba --help`

    engine = SamEngine.create(args.base, adapter=None if args.no_adapter else args.adapter, device=args.device,
                              bf16=False if args.no_bf16 else None, vit_type=args.vit_type,
                              encoder_runtime=args.encoder_runtime)
    print(f"model: {engine.describe()}", file=sys.stderr)
    return engine


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    return {key: getattr(args, f"{key}_file") for key in (*MODALITIES, LABEL_KEY) if getattr(args, f"{key}_file", None)}


def _ras_box_to_ijk(case: Case, corners: list[float]) -> list[int]:
    """RAS mm corners (Slicer's frame) → voxel IJK via ITK's LPS physical frame."""
    ijk: list[int] = []
    for r, a, s in (corners[:3], corners[3:]):
        index = case.reference.TransformPhysicalPointToContinuousIndex((-r, -a, s))
        ijk.extend(int(round(v)) for v in index)
    return ijk[:3] + ijk[3:]


def _detector():
    from .detection import TumourDetector

    detector = TumourDetector.load()
    print(f"detector: {detector.describe()}", file=sys.stderr)
    return detector


def _voting_network(args: argparse.Namespace):
    from .voting import VotingNetwork

    network = VotingNetwork.load(args.voting_network) if args.voting_network else VotingNetwork.load()
    print(f"voting network: {network.describe()}", file=sys.stderr)
    return network


def _fusion(args: argparse.Namespace):
    """What --refine names: the shipped voting network (default) or the rule baseline."""
    return "rule" if args.refine == "rule" else _voting_network(args)


def _fuse_automatic_path_by_default(args: argparse.Namespace) -> None:
    """``--prompt auto`` fuses every modality (as ``--refine``) unless ``--whole-tumour`` or ``--refine`` says
    otherwise: nobody corrects the automatic path's masks, and the modalities together find the faint oedema that
    FLAIR's mask alone misses (validation WT Dice 0.849 → 0.863, README)."""
    if args.prompt == "auto" and args.refine is None and args.whole_tumour is None:
        args.refine = "network"


def _whole_tumour_network(args: argparse.Namespace):
    """The voting network that redraws a single modality's whole tumour (``--whole-tumour network``), or None to
    keep SAM's mask or when ``--refine`` fuses every modality."""
    if args.refine:
        if args.whole_tumour is not None:
            raise SambaError("--whole-tumour applies without --refine (--refine fuses every modality)")
        return None
    return _voting_network(args) if args.whole_tumour == "network" else None


def _sibling(path: Path, suffix: str) -> Path:
    """``out/case.nii.gz`` → ``out/case_agreement.nii.gz``."""
    name = path.name
    extension = ".nii.gz" if name.lower().endswith(".nii.gz") else path.suffix
    return path.with_name(name[: len(name) - len(extension)] + suffix + extension)


def _segment_refined(args: argparse.Namespace, case: Case, engine, axis: int, box: Box3D | None) -> int:
    """Every modality with the same box (or the detector's candidates), fused into NETC / SNFH / ET."""
    fusion = _fusion(args)
    if box is not None:
        def segment_prompted(volume, callback):
            return segment_box3d(engine, volume, box, axis, args.seed_slice, progress=callback)[1].mask
    else:
        from .detection import propose, segment_candidates

        detector = _detector()
        candidates = propose(detector, case.volume(detector.modality), axis)
        print(f"{len(candidates)} proposals", file=sys.stderr)

        def segment_prompted(volume, callback):
            return segment_candidates(engine, volume, candidates, progress=callback)[0]

    def segment_one(volume, callback):
        return checked_in_views(engine, volume, segment_prompted(volume, callback), axis, args.views, callback,
                                slice_range=box.slice_range(axis) if box is not None else None)
    progress = _ModalityProgress(case.name)
    masks = segment_modalities(engine, case, segment_one, progress)
    progress.close()
    result = fuse(fusion, case, masks)
    output = Path(args.output)
    path = write_volume(from_internal(result.label, args.label_format), case.reference, output)
    agreement = write_volume(result.agreement, case.reference, _sibling(output, "_agreement"))
    millilitres = float(np.prod(case.spacing)) / 1000.0
    volumes = ", ".join(f"{name} {np.sum(result.label == value) * millilitres:.1f} mL"
                        for value, name in CLASS_NAMES.items())
    print(f"{case.name}: {volumes} ({args.label_format} labels) → {path}\n"
          f"modality agreement (fraction of {len(masks)} modalities: {', '.join(masks)}) → {agreement}")
    return 0


def command_segment(args: argparse.Namespace) -> int:
    if (args.box is None) == (args.prompt == "box"):
        raise SambaError("give --box I0 J0 K0 I1 J1 K1 for --prompt box, and no box for --prompt auto")
    case = load_case(args.case_dir, _overrides(args), args.label_convention, load_label=False)
    volume = case.volume(args.modality)
    axis = volume.view_axis(args.view)
    box = None
    if args.prompt == "box":
        corners = _ras_box_to_ijk(case, args.box) if args.ras else [int(round(v)) for v in args.box]
        box = Box3D.from_ijk(*corners).clipped_to(volume.array.shape)  # fails before the model loads
    _fuse_automatic_path_by_default(args)
    network = _whole_tumour_network(args)
    engine = _engine(args)
    if args.refine:
        return _segment_refined(args, case, engine, axis, box)
    progress = _Progress(f"{case.name} {args.modality}")
    if args.prompt == "box":
        _, result = segment_box3d(engine, volume, box, axis, args.seed_slice, progress=progress)
        raw = result.mask
    else:
        from .detection import segment_auto

        auto = segment_auto(engine, _detector(), volume, axis, progress=progress)
        print(f"{len(auto.candidates)} proposals in {auto.proposal_seconds:.1f} s, {len(auto.segmented)} segmented",
              file=sys.stderr)
        raw = auto.mask
    if args.views > 1:
        progress.bar.set_description(f"{case.name} {args.modality}: {args.views} views")
    depth = box.slice_range(axis) if box is not None else None
    mask = remove_small_components(checked_in_views(engine, volume, raw, axis, args.views, progress,
                                                    slice_range=depth), case.spacing)
    progress.close()
    if network is not None:
        mask = network.whole_tumour(args.modality, volume.array, mask, case.spacing)
    path = write_volume(mask.astype(np.uint8) * WHOLE_TUMOUR_VALUE, case.reference, args.output)
    millilitres = mask.sum() * float(np.prod(case.spacing)) / 1000.0
    print(f"{case.name}: whole tumour {millilitres:.1f} mL over {int(mask.any(axis=(1, 2)).sum())} axial "
          f"slices → {path}")
    return 0


def _case_dirs(paths: list[str]) -> list[Path]:
    """Case folders as given; a folder that holds case folders (and no images) stands for all of them."""
    result: list[Path] = []
    for raw in paths:
        path = Path(raw)
        has_images = path.is_dir() and any(p.name.lower().endswith(IMAGE_SUFFIXES) for p in path.iterdir())
        subfolders = sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() and not has_images else []
        result.extend(subfolders or [path])
    return result


def _print_table(rows: list[dict], summary: dict) -> None:
    regions = [r for r in REFINED_REGIONS if rows and r in rows[0]]
    header = f"{'case':28s} {'prompt':7s} " + " ".join(
        f"{r + ' Dice':>8s} {r + ' HD95':>8s} {r + ' les':>7s}" for r in regions) + f" {'s':>6s}"
    print(header)
    print("-" * len(header))

    def cells(scores: dict) -> str:
        return " ".join(f"{scores[r]['dice']:8.3f} {scores[r]['hd95']:8.2f} {scores[r]['lesion_dice']:7.3f}"
                        for r in regions)

    for row in rows:
        print(f"{row['case']:28s} {row['prompt']:7s} {cells(row)} {row['seconds']:6.1f}")
    if summary:
        print("-" * len(header))
        print(f"{'mean of ' + str(summary['cases']) + ' cases':28s} {'':7s} {cells(summary)} "
              f"{summary['seconds_per_case']:6.1f}")
        if len(regions) > 1:
            print(f"mean Dice of {', '.join(regions)}: {np.mean([summary[r]['dice'] for r in regions]):.3f}")


def command_evaluate(args: argparse.Namespace) -> int:
    folders = _case_dirs(args.case_dirs)
    if args.prompt == "auto" and args.clicks:
        raise SambaError("--prompt auto is the path without a clinician; it simulates no corrective clicks")
    if args.refine and args.clicks:
        raise SambaError("--refine evaluates the first prompt on every modality; it simulates no clicks")
    _fuse_automatic_path_by_default(args)
    network = _whole_tumour_network(args)
    engine = _engine(args)
    detector = _detector() if args.prompt == "auto" else None
    fusion = _fusion(args) if args.refine else None
    evaluations, skipped = [], []
    for folder in tqdm(folders, desc="cases", unit="case", file=sys.stderr):
        try:
            case = load_case(folder, label_convention=args.label_convention)
            if case.label is None:
                raise SambaError(f"{case.name}: no label map")
            volume = case.volume(args.modality)
        except SambaError as exc:
            skipped.append({"case": folder.name, "reason": str(exc)})
            print(f"skipped: {exc}", file=sys.stderr)
            continue
        axis = volume.view_axis(args.view)
        if fusion is None:
            progress = _Progress(f"{case.name} {args.prompt}")
            evaluation = evaluate_case(engine, case, args.prompt, args.modality, args.clicks, axis=axis,
                                       progress=progress, detector=detector, whole_tumour_network=network,
                                       views=args.views)
        else:
            progress = _ModalityProgress(case.name)
            evaluation = evaluate_case_refined(engine, case, args.prompt, fusion, axis, progress, detector,
                                               views=args.views)
        progress.close()
        evaluations.append(evaluation)
        engine.clear_cache()  # one case at a time: keep memory flat over long runs
        if args.overlays:
            from .overlays import save_worst_slices

            save_worst_slices(volume.array, evaluation.prediction > 0, evaluation.truth > 0,
                              Path(args.overlays) / f"{case.name}_{args.modality}_{args.prompt}.png",
                              f"{case.name} {args.modality} {args.prompt} WT Dice {evaluation.scores['WT']['dice']:.3f}",
                              axis=volume.view_axis(args.view))
    rows = [e.as_json() for e in evaluations]
    summary = summarise(evaluations)
    _print_table(rows, summary)
    if args.json:
        report = {"engine": engine.describe(), "prompt": args.prompt, "modality": args.modality, "clicks": args.clicks,
                  "view": args.view, "views": args.views,
                  "refine": None if fusion is None else fusion if fusion == "rule" else fusion.describe(),
                  "whole_tumour": "fused" if fusion is not None else "network" if network is not None else "sam",
                  "cases": rows, "skipped": skipped, "summary": summary}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"written: {args.json}", file=sys.stderr)
    return 0 if evaluations else 1


def command_bench(args: argparse.Namespace) -> int:
    from .bench import run_benchmark

    case = load_case(args.case or DEFAULT_DATA_DIR / BENCH_CASE)
    engine = _engine(args)
    progress = _Progress("propagate")
    report = run_benchmark(engine, case, args.modality, progress=progress)
    progress.close()
    for key, value in report.items():
        print(f"{key:24s} {value if not isinstance(value, float) else round(value, 2)}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samba", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    segment = commands.add_parser("segment", help="segment the tumour inside a 3D box and write a label map")
    segment.add_argument("case_dir")
    segment.add_argument("--prompt", default="box", choices=("box", "auto"),
                         help="box: segment inside --box; auto: the detector proposes the tumour")
    segment.add_argument("--box", type=float, nargs=6, metavar=("I0", "J0", "K0", "I1", "J1", "K1"),
                         help="box corners in voxel IJK (or RAS mm with --ras)")
    segment.add_argument("--ras", action="store_true", help="--box is in RAS millimetres, as Slicer shows")
    segment.add_argument("--modality", default="flair", choices=MODALITIES)
    _add_view_options(segment)
    segment.add_argument("--seed-slice", type=int, default=None, help="slice to start on (default: box centre)")
    segment.add_argument("--output", required=True, help="label map to write (.nii.gz or .nrrd)")
    segment.add_argument("--label-format", default=LabelConvention.BRATS2023.value,
                         choices=(LabelConvention.BRATS2023.value, LabelConvention.BRATS2021.value),
                         help="label values written with --refine (2023: 1 NETC 2 SNFH 3 ET; 2021: 1 2 4)")
    _add_refine_options(segment)
    _add_case_options(segment)
    _add_engine_options(segment)
    segment.set_defaults(run=command_segment)

    evaluate = commands.add_parser("evaluate", help="segment labelled cases with simulated prompts and score them")
    evaluate.add_argument("case_dirs", nargs="+", help="case folders, or a folder of case folders")
    evaluate.add_argument("--prompt", required=True, choices=PROMPT_MODES)
    evaluate.add_argument("--clicks", type=int, default=0, help="corrective clicks after the first prompt")
    evaluate.add_argument("--modality", default="flair", choices=MODALITIES)
    _add_view_options(evaluate)
    evaluate.add_argument("--label-convention", choices=[c.value for c in LabelConvention])
    evaluate.add_argument("--json", help="write per-case figures and the summary here")
    evaluate.add_argument("--overlays", help="folder for PNGs of each case's worst slices")
    _add_refine_options(evaluate)
    _add_engine_options(evaluate)
    evaluate.set_defaults(run=command_evaluate)

    bench = commands.add_parser(
        "bench", help="encoder/decoder speed, propagation time, the detector's proposal time and peak memory")
    bench.add_argument("--case", help=f"a labelled case folder (default: {BENCH_CASE} in the shared data)")
    bench.add_argument("--modality", default="flair", choices=MODALITIES)
    bench.add_argument("--json")
    _add_engine_options(bench)
    bench.set_defaults(run=command_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        return args.run(args)
    except SambaError as exc:
        print(f"samba: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
