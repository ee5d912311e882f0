"""Train the voting network on the cached per-modality SAM masks of the training cases (never the validation ones).

Patches of 48³ (a third centred on a whole-tumour voxel, a third on a tumour-core voxel, the rest anywhere near
the tumour), Dice + binary cross-entropy on the three nested regions (WT, TC, ET), AdamW with warm-up and cosine
decay, fixed seeds. Augmentation teaches what the product meets: the prompt variant is drawn per patch (the
clinician's box, jittered boxes, the detector's), sometimes per modality; SAM's masks are eroded or dilated by a
few voxels (``--mask-noise``; how far, how often inwards and whether all modalities together:
``--max-border-shift``, ``--inward-share``, ``--same-direction``) so the network learns to place a border from the
image rather than copy SAM's (SAM stops short of faint oedema); modalities are dropped (zero channels, flag 0) so a
missing one is a known input, down to a single one (``--drop``: the automatic path's FLAIR-only refinement);
intensities are scaled and shifted; left-right and front-back flips. Checkpoints every ``--save-every`` steps; a
second run with the same folder resumes. The shipped network (the defaults, 8000 steps: under an hour on 2 cores):

    OMP_NUM_THREADS=2 nohup python -m training.voting.train --out training/runs/voting --seed 1 > training/runs/voting.log 2>&1 &

Stochastic weight averaging (``--average-every``, usually with ``--init`` from a trained network and ``--schedule
constant``): the weights visited every N steps at a constant learning rate are averaged and the average is what
the run exports; a wide optimum found this way tends to carry better to new cases than the last point of one run,
with the same number of parameters.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel
from scipy import ndimage

from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.volumes import MODALITIES, load_case
from SAMBASegmentLib.voting.fusion import INPUT_CHANNELS, VotingNetwork, relative_to_normal_brain
from SAMBASegmentLib.voting.network import (DEFAULT_NORMALISATION, DEFAULT_WIDTHS, NORMALISATIONS, OUTPUT_REGIONS,
                                            VotingUNet3D, parameter_count)

from ..split import case_dirs
from .masks import MASK_CACHE, VARIANTS, load_case_masks, mask_key

CROP_MARGIN = 16
PATCH = 48  # 64³ costs 2.4x the time per step on a 2-core CPU for the same number of steps
DROP_PROBABILITIES = (0.2, 0.05, 0.15)  # one, two, three modalities dropped: a single one is often all there is
BATCH_NORM_BATCHES = 200  # training batches whose mean statistics a batch-normalised network keeps
WARMUP_STEPS = 50
MAX_BORDER_SHIFT = 3  # voxels a perturbed SAM mask's border moves, inwards or outwards


@dataclass
class CaseVolumes:
    """One training case cropped around its tumour: images (4, …), masks (variants, 4, …), regions (3, …)."""

    name: str
    images: np.ndarray
    present: np.ndarray
    masks: np.ndarray
    regions: np.ndarray


def load_training_case(folder: Path, cache: Path = MASK_CACHE, patch: int = PATCH,
                       relative_intensities: bool = False) -> CaseVolumes:
    """``relative_intensities``: each image scaled to its normal brain outside the SAM masks, as the engine does
    for a network whose manifest says so (``fusion.relative_to_normal_brain``)."""
    case = load_case(folder)
    stored = load_case_masks(folder.name, cache)
    shape = case.label.shape
    masks = np.zeros((len(VARIANTS), len(MODALITIES), *shape), dtype=bool)
    images = np.zeros((len(MODALITIES), *shape), dtype=np.float32)
    present = np.zeros(len(MODALITIES), dtype=bool)
    for channel, modality in enumerate(MODALITIES):
        if modality in case.volumes:
            images[channel], present[channel] = case.volume(modality).array, True
            for v, variant in enumerate(VARIANTS):
                masks[v, channel] = stored[mask_key(variant, modality)]
    regions = np.stack([region_mask(case.label, r) for r in OUTPUT_REGIONS])
    seen_by_sam = masks.any(axis=(0, 1))
    if relative_intensities:
        for channel in np.nonzero(present)[0]:
            images[channel] = relative_to_normal_brain(images[channel], seen_by_sam)
    union = regions[0] | seen_by_sam
    box = ndimage.find_objects(union.astype(np.uint8))[0]
    crop = tuple(slice(max(0, s.start - CROP_MARGIN), min(n, s.stop + CROP_MARGIN)) for s, n in zip(box, shape))
    padding = [(0, max(0, patch - (s.stop - s.start))) for s in crop]

    def cut(array: np.ndarray) -> np.ndarray:
        lead = array.ndim - 3
        return np.pad(array[(slice(None),) * lead + crop], [(0, 0)] * lead + padding)

    return CaseVolumes(folder.name, cut(images).astype(np.float16), present, cut(masks), cut(regions))


@dataclass(frozen=True)
class MaskNoise:
    """How SAM's masks are perturbed in training. ``chance``: that a modality's mask has its border moved;
    ``max_shift``: voxels it moves at most; ``inward_share``: chance that it shrinks rather than grows;
    ``same_direction``: every perturbed modality of a patch moves the same way, as when SAM stops short of faint
    oedema in every modality at once (training/README: tried, not adopted)."""

    chance: float = 0.0
    max_shift: int = MAX_BORDER_SHIFT
    inward_share: float = 0.5
    same_direction: bool = False


def shifted_border(mask: np.ndarray, rng: np.random.Generator, max_shift: int = MAX_BORDER_SHIFT,
                   inward_share: float = MaskNoise.inward_share, inwards: bool | None = None) -> np.ndarray:
    """``mask`` eroded or dilated by 1 to ``max_shift`` voxels: a SAM mask that stopped short of the border or ran
    past it. Eroded with chance ``inward_share``, unless ``inwards`` decides."""
    shift = int(rng.integers(1, max_shift + 1))
    shrink = rng.random() >= 1 - inward_share if inwards is None else inwards
    if shrink:  # the patch's edge is not the mask's border: what lies beyond it is unknown, not background
        moved = ndimage.binary_erosion(mask > 0, iterations=shift, border_value=1)
    else:
        moved = ndimage.binary_dilation(mask > 0, iterations=shift)
    return moved.astype(mask.dtype)


def sample_patch(case: CaseVolumes, rng: np.random.Generator, patch: int = PATCH,
                 drop_probabilities: tuple[float, ...] = DROP_PROBABILITIES, mask_noise: MaskNoise = MaskNoise()
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One augmented (inputs, regions) patch; ``drop_probabilities[n - 1]``: chance that n modalities are dropped."""
    shape = case.regions.shape[1:]
    draw = rng.random()
    region = case.regions[0] if draw < 0.35 else case.regions[1] if draw < 0.7 else None
    if region is not None and region.any():  # a third on the whole tumour, a third on the core (the hard part)
        voxels = np.argwhere(region)
        centre = voxels[rng.integers(len(voxels))]
    else:
        centre = np.array([rng.integers(s) for s in shape])
    start = [int(np.clip(c - patch // 2, 0, s - patch)) for c, s in zip(centre, shape)]
    window = tuple(slice(s, s + patch) for s in start)
    images = case.images[(slice(None), *window)].astype(np.float32)
    if rng.random() < 0.7:
        variants = np.full(len(MODALITIES), rng.integers(len(VARIANTS)))
    else:
        variants = rng.integers(len(VARIANTS), size=len(MODALITIES))
    masks = np.stack([case.masks[(v, m, *window)] for m, v in enumerate(variants)]).astype(np.float32)
    if mask_noise.chance > 0:
        inwards = rng.random() < mask_noise.inward_share if mask_noise.same_direction else None
        for channel in np.nonzero(rng.random(len(MODALITIES)) < mask_noise.chance)[0]:
            masks[channel] = shifted_border(masks[channel], rng, mask_noise.max_shift, mask_noise.inward_share,
                                            inwards)
    present = case.present.copy()
    count = int(rng.choice(len(drop_probabilities) + 1, p=[1 - sum(drop_probabilities), *drop_probabilities]))
    available = np.nonzero(present)[0]
    if 0 < count < len(available):
        present[rng.choice(available, count, replace=False)] = False
    scale = rng.uniform(0.9, 1.1, (len(MODALITIES), 1, 1, 1)).astype(np.float32)
    images = images * scale + rng.uniform(-0.05, 0.05, (len(MODALITIES), 1, 1, 1)).astype(np.float32)
    images[~present] = 0.0
    masks[~present] = 0.0
    flags = np.broadcast_to(present[:, None, None, None], masks.shape).astype(np.float32)
    inputs = np.concatenate([images, masks, flags])
    regions = case.regions[(slice(None), *window)].astype(np.float32)
    for axis in (2, 3):  # j (front-back) and i (left-right)
        if rng.random() < 0.5:
            inputs, regions = np.flip(inputs, axis), np.flip(regions, axis)
    return np.ascontiguousarray(inputs), np.ascontiguousarray(regions)


def voting_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy + soft Dice per region (Dice over the whole batch, so empty patches are fine)."""
    probability = torch.sigmoid(logits)
    dims = (0, 2, 3, 4)
    intersection = (probability * target).sum(dims)
    total = probability.sum(dims) + target.sum(dims)
    dice = (2 * intersection + smooth) / (total + smooth)
    return F.binary_cross_entropy_with_logits(logits, target) + (1 - dice).mean()


def draw_batch(cases: list[CaseVolumes], rng: np.random.Generator, size: int, patch: int,
               drop_probabilities: tuple[float, ...], mask_noise: MaskNoise) -> tuple[torch.Tensor, torch.Tensor]:
    batch = [sample_patch(cases[rng.integers(len(cases))], rng, patch, drop_probabilities, mask_noise)
             for _ in range(size)]
    return torch.from_numpy(np.stack([b[0] for b in batch])), torch.from_numpy(np.stack([b[1] for b in batch]))


def recalibrate_batch_norm(model: VotingUNet3D, next_inputs: Callable[[], torch.Tensor], count: int) -> int:
    """Batch-norm statistics set to the plain mean over ``count`` training batches, not the running average that
    training leaves (mostly its last ~10 batches of two patches): the fixed levels inference normalises with.
    Returns the number of batch-norm layers recalibrated."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    if not norms:
        return 0
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(count):
            model(next_inputs())
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return len(norms)


SCHEDULES = ("cosine", "constant")


def learning_rate(step: int, steps: int, peak: float, warmup: int = WARMUP_STEPS, schedule: str = "cosine") -> float:
    """Linear warm-up, then cosine decay to zero, or ``peak`` held (the averaging phase of weight averaging)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def save_checkpoint(model: VotingUNet3D, optimiser: torch.optim.Optimizer, step: int, path: Path,
                    average: AveragedModel | None = None) -> None:
    """``average``: the running weight average, saved with its count so that a resumed run goes on averaging."""
    state = {"model": model.state_dict(), "optimiser": optimiser.state_dict(), "step": step}
    if average is not None:
        state["average"] = average.state_dict()
    torch.save(state, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


def trained_weights(state: dict, model: VotingUNet3D) -> dict[str, torch.Tensor]:
    """The weights a checkpoint ships: the running average when the run averaged weights, else the last ones."""
    if "average" not in state:
        return state["model"]
    average = AveragedModel(model)
    average.load_state_dict(state["average"])
    return average.module.state_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("training/runs/voting"))
    parser.add_argument("--cache", type=Path, default=MASK_CACHE)
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--patch", type=int, default=PATCH, help="patch side in voxels (a multiple of 4)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--widths", type=int, nargs="+", default=list(DEFAULT_WIDTHS))
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drop", type=float, nargs="+", default=list(DROP_PROBABILITIES),
                        help="chance that 1, 2, (3) modalities are dropped from a patch")
    parser.add_argument("--mask-noise", type=float, default=0.5,
                        help="chance that a modality's SAM mask is eroded or dilated in a patch")
    parser.add_argument("--max-border-shift", type=int, default=MAX_BORDER_SHIFT,
                        help="voxels a perturbed mask's border moves at most")
    parser.add_argument("--inward-share", type=float, default=MaskNoise.inward_share,
                        help="chance that a perturbed mask shrinks rather than grows")
    parser.add_argument("--same-direction", action="store_true",
                        help="every perturbed mask of a patch shrinks, or every one grows")
    parser.add_argument("--relative-intensities", action="store_true",
                        help="scale each image so its normal brain (outside the SAM masks) has one level")
    parser.add_argument("--normalisation", default=DEFAULT_NORMALISATION, choices=sorted(NORMALISATIONS),
                        help="batch: keeps absolute levels (statistics recomputed over many patches at the end)")
    parser.add_argument("--cases", type=int, default=None, help="use only the first N training cases (tests)")
    parser.add_argument("--init", type=Path, help="start from an exported network's weights (a folder with "
                        "manifest.json, sha256 checked; e.g. SAMBASegmentLib/weights/voting) instead of random ones")
    parser.add_argument("--schedule", default="cosine", choices=SCHEDULES,
                        help="after warm-up: cosine decay to zero, or the learning rate held (weight averaging)")
    parser.add_argument("--average-every", type=int, default=0,
                        help="N > 0: average the weights every N steps after warm-up and export the average")
    args = parser.parse_args(argv)
    if args.average_every > 0 and args.normalisation == "batch":
        raise SystemExit("--average-every needs instance normalisation: averaged weights would not match the "
                         "batch-norm statistics")
    torch.manual_seed(args.seed)
    mask_noise = MaskNoise(args.mask_noise, args.max_border_shift, args.inward_share, args.same_direction)
    args.out.mkdir(parents=True, exist_ok=True)
    folders = case_dirs("training")[: args.cases]
    missing = [f.name for f in folders if not (args.cache / f"{f.name}.npz").exists()]
    if missing:
        raise SystemExit(f"no cached SAM masks for {missing}: run python -m training.voting.masks --side training")
    cases = [load_training_case(folder, args.cache, args.patch, args.relative_intensities) for folder in folders]
    model = VotingUNet3D(INPUT_CHANNELS, tuple(args.widths), normalisation=args.normalisation)
    if args.init:
        initial = VotingNetwork.load(args.init)
        if len(initial.models) != 1:
            raise SystemExit(f"--init {args.init}: an ensemble of {len(initial.models)} networks; "
                             "give one member's export")
        start = initial.models[0]
        if (start.widths, start.normalisation) != (model.widths, model.normalisation):
            raise SystemExit(f"--init {args.init}: widths {start.widths} / {start.normalisation} norm, but this run "
                             f"asks for {model.widths} / {model.normalisation}")
        model.load_state_dict(start.state_dict())
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    average = AveragedModel(model) if args.average_every > 0 else None
    checkpoint_path = args.out / "checkpoint.pt"
    step = 0
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=True)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        if average is not None and "average" in state:
            average.load_state_dict(state["average"])
        step = int(state["step"])
        print(f"resumed at step {step}", file=sys.stderr)
    settings = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "cases": [c.name for c in cases], "variants": VARIANTS,
                "parameters": parameter_count(model)}
    if args.init:  # which weights the run started from, whatever the folder holds later
        settings["init_sha256"] = json.loads((args.init / "manifest.json").read_text())["sha256"]
    (args.out / "settings.json").write_text(json.dumps(settings, indent=2))
    print(f"{len(cases)} training cases, {parameter_count(model):,} parameters, from step {step} to {args.steps}",
          file=sys.stderr, flush=True)
    rng = np.random.default_rng(args.seed * 100_003 + step)  # a resumed run does not replay the same patches
    model.train()
    started, recent = time.perf_counter(), []
    with open(args.out / "log.jsonl", "a") as log:
        while step < args.steps:
            inputs, target = draw_batch(cases, rng, args.batch, args.patch, tuple(args.drop), mask_noise)
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(step, args.steps, args.lr, schedule=args.schedule)
            loss = voting_loss(model(inputs), target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            step += 1
            recent.append(loss.item())
            if average is not None and step > WARMUP_STEPS and step % args.average_every == 0:
                average.update_parameters(model)
            if step == args.steps:
                def next_inputs() -> torch.Tensor:
                    return draw_batch(cases, rng, args.batch, args.patch, tuple(args.drop), mask_noise)[0]

                if recalibrate_batch_norm(model, next_inputs, BATCH_NORM_BATCHES):
                    print(f"batch-norm statistics recomputed over {BATCH_NORM_BATCHES} batches", file=sys.stderr)
            if step % args.save_every == 0 or step == args.steps:
                save_checkpoint(model, optimiser, step, checkpoint_path, average)
                record = {"step": step, "loss": float(np.mean(recent)),
                          "lr": learning_rate(step - 1, args.steps, args.lr, schedule=args.schedule),
                          "seconds": round(time.perf_counter() - started, 1)}
                if average is not None:
                    record["averaged"] = int(average.n_averaged)
                log.write(json.dumps(record) + "\n")
                log.flush()
                print(json.dumps(record), file=sys.stderr, flush=True)
                recent = []
    final = model.state_dict() if average is None else average.module.state_dict()
    torch.save(final, args.out / "final_state.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
