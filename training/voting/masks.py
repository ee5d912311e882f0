"""Per-modality SAM masks of every case, produced by the engine and cached: the voting network's inputs.

For each case and modality the engine segments the whole tumour with the prompts the product gives it:
``box3d`` (the simulated clinician's box, as ``samba evaluate --prompt box3d``), two jittered copies of that box
(clinicians draw looser or tighter boxes, SAMBA's 0-20 px), and ``auto`` (the shipped detector's candidates,
found on FLAIR and used on every modality, as ``--prompt auto``). One engine cache per modality means the slices
are encoded once for all four variants. ``--views 3`` checks each mask in three views, as ``samba`` does by
default (``multiview.three_view_vote``). One ``.npz`` per case; finished cases are skipped, so it resumes.

    for i in 0 1; do OMP_NUM_THREADS=1 nohup python -m training.voting.masks --side training --side validation \
        --shard $i/2 > training/runs/voting_masks_adapter_$i.log 2>&1 & done
    # and the same with --no-adapter: zero-shot LiteMedSAM's masks, in voting_masks/ (train.py --cache picks one)
    python -m training.voting.masks --side validation --views 3 --variants box3d auto   # what samba fuses by default
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from SAMBASegmentLib.detection import TumourDetector, propose, segment_candidates
from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.metrics import dice
from SAMBASegmentLib.pipeline import VIEW_CHOICES, checked_in_views, segment_box3d
from SAMBASegmentLib.postprocessing import remove_small_components
from SAMBASegmentLib.prompts import Box3D
from SAMBASegmentLib.sam import SamEngine
from SAMBASegmentLib.simulation import Box3DPrompt, box3d_prompt
from SAMBASegmentLib.volumes import MODALITIES, load_case

from ..split import REPOSITORY_ROOT, case_dirs

MASK_CACHE = REPOSITORY_ROOT / "training" / "cache" / "voting_masks"  # zero-shot LiteMedSAM's masks
ADAPTER_MASK_CACHE = REPOSITORY_ROOT / "training" / "cache" / "voting_masks_adapter"  # the default engine's
THREE_VIEW_SUFFIX = "_3views"  # masks checked in three views: <cache>_3views
VARIANTS = ("box3d", "box3d_jitter1", "box3d_jitter2", "auto")
MAX_JITTER_PX = 12
MAX_JITTER_SLICES = 2


def mask_key(variant: str, modality: str) -> str:
    return f"{variant}.{modality}"


def jittered(prompt: Box3DPrompt, shape: tuple[int, int, int], rng: np.random.Generator, axis: int = 0
             ) -> Box3DPrompt:
    """The clinician's box with each side moved by up to MAX_JITTER_PX (mostly outwards) and the slice range by
    up to MAX_JITTER_SLICES each way."""
    r0, c0, r1, c1 = prompt.seed_box
    shift = rng.integers(-MAX_JITTER_PX // 3, MAX_JITTER_PX + 1, size=4)
    rows, cols = [s for a, s in enumerate(shape) if a != axis]
    seed_box = (max(0, r0 - shift[0]), max(0, c0 - shift[1]), min(rows - 1, r1 + shift[2]), min(cols - 1, c1 + shift[3]))
    if seed_box[2] <= seed_box[0] or seed_box[3] <= seed_box[1]:
        seed_box = prompt.seed_box
    low, high = prompt.box.slice_range(axis)
    low = max(0, low - int(rng.integers(-MAX_JITTER_SLICES, MAX_JITTER_SLICES + 1)))
    high = min(shape[axis] - 1, high + int(rng.integers(-MAX_JITTER_SLICES, MAX_JITTER_SLICES + 1)))
    low, high = min(low, prompt.seed_index), max(high, prompt.seed_index)
    corners_low, corners_high = [0, 0, 0], [0, 0, 0]
    row_axis, col_axis = [a for a in range(3) if a != axis]
    corners_low[axis], corners_high[axis] = low, high
    corners_low[row_axis], corners_low[col_axis], corners_high[row_axis], corners_high[col_axis] = seed_box
    return Box3DPrompt(Box3D(tuple(corners_low), tuple(corners_high)), prompt.seed_index, seed_box)


def case_masks(engine: SamEngine, detector: TumourDetector, folder: Path, seed: int, views: int = 1,
               variants: tuple[str, ...] = VARIANTS) -> dict[str, np.ndarray]:
    """``{mask_key(variant, modality): whole-tumour mask}`` for one labelled case, each mask checked in
    ``views`` views."""
    case = load_case(folder)
    truth = region_mask(case.label, "WT")
    rng = np.random.default_rng(seed)
    clinician = box3d_prompt(truth, 0)
    prompts = {"box3d": clinician, "box3d_jitter1": jittered(clinician, truth.shape, rng),
               "box3d_jitter2": jittered(clinician, truth.shape, rng)}
    candidates = propose(detector, case.volume(detector.modality), 0)
    masks: dict[str, np.ndarray] = {}
    for modality in MODALITIES:
        if modality not in case.volumes:
            continue
        volume = case.volume(modality)
        for variant in variants:
            if variant == "auto":
                raw, _ = segment_candidates(engine, volume, candidates)
            else:
                prompt = prompts[variant]
                raw = segment_box3d(engine, volume, prompt.box, 0, prompt.seed_index, prompt.seed_box)[1].mask
            checked = checked_in_views(engine, volume, raw, 0, views)
            masks[mask_key(variant, modality)] = remove_small_components(checked, case.spacing)
        engine.clear_cache()
        print(f"  {case.name} {modality}: " + ", ".join(
            f"{v} {dice(masks[mask_key(v, modality)], truth):.3f}" for v in variants), file=sys.stderr, flush=True)
    return masks


def save_case_masks(masks: dict[str, np.ndarray], target: Path) -> None:
    """Bit-packed and compressed (a case's 16 masks take about 100 KB); written whole or not at all."""
    shape = next(iter(masks.values())).shape
    partial = target.with_suffix(".partial.npz")
    np.savez_compressed(partial, shape=np.array(shape), **{k: np.packbits(m) for k, m in masks.items()})
    partial.rename(target)


def load_case_masks(name: str, cache: Path = MASK_CACHE) -> dict[str, np.ndarray]:
    with np.load(cache / f"{name}.npz") as stored:
        shape = tuple(stored["shape"])
        return {key: np.unpackbits(stored[key], count=int(np.prod(shape))).reshape(shape).astype(bool)
                for key in stored.files if key != "shape"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", action="append", choices=("training", "validation"), required=True)
    parser.add_argument("--cache", type=Path, help=f"default: {ADAPTER_MASK_CACHE.name}, with --no-adapter "
                        f"{MASK_CACHE.name}; with --views 3 the name ends in {THREE_VIEW_SUFFIX}")
    parser.add_argument("--views", type=int, default=1, choices=VIEW_CHOICES,
                        help="3: each mask checked in three views (what samba fuses by default)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard", default="0/1", help="i/n: this process takes every n-th case from the i-th "
                        "(run n processes with OMP_NUM_THREADS=1: one slice at a time keeps only one core busy)")
    parser.add_argument("--no-adapter", action="store_true",
                        help="masks of zero-shot LiteMedSAM instead of the engine's default (the shipped adapter)")
    args = parser.parse_args(argv)
    if args.cache is None:
        default = MASK_CACHE if args.no_adapter else ADAPTER_MASK_CACHE
        args.cache = default.with_name(default.name + THREE_VIEW_SUFFIX) if args.views == 3 else default
    args.cache.mkdir(parents=True, exist_ok=True)
    engine = SamEngine.create(adapter=None if args.no_adapter else "default")
    detector = TumourDetector.load()
    print(f"model: {engine.describe()}\ndetector: {detector.describe()}", file=sys.stderr)
    folders = [folder for side in args.side for folder in case_dirs(side)]
    shard, shards = (int(v) for v in args.shard.split("/"))
    for number, folder in enumerate(folders, start=1):
        if (number - 1) % shards != shard:
            continue
        target = args.cache / f"{folder.name}.npz"
        if target.exists():
            continue
        start = time.perf_counter()
        save_case_masks(case_masks(engine, detector, folder, args.seed + number, args.views, tuple(args.variants)),
                        target)
        (args.cache / "settings.json").write_text(json.dumps(
            {"variants": args.variants, "views": args.views, "max_jitter_px": MAX_JITTER_PX,
             "max_jitter_slices": MAX_JITTER_SLICES,
             "engine": engine.describe(), "detector": detector.describe(), "seed": args.seed}, indent=2))
        print(f"[{number}/{len(folders)}] {folder.name} done in {time.perf_counter() - start:.0f} s",
              file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
