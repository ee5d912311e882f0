"""The SAM issue's quick probe, reproduced on our split: the baseline the shipped adapter must clearly beat.

The issue reports that four minutes of fine-tuning LiteMedSAM's prompt encoder and mask decoder on cached FLAIR
slices with one click (at the distance-transform maximum or a random tumour pixel; BCE + Dice, AdamW 1e-4) gives
whole-tumour Dice 0.88 with one click per slice on cases we do not have. Its cases are not ours, so that figure
cannot be set beside ours; this module trains the same probe on the training cases' cached axial FLAIR slices and
scores it with ``samba evaluate --prompt points`` on our validation cases, the protocol of the adapter's table.

    python -m training.probe [--steps 240] [--views 1] --json training/runs/probe/points_val.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from SAMBASegmentLib.pipeline import VIEW_CHOICES, evaluate_case
from SAMBASegmentLib.sam import SamEngine, load_sam
from SAMBASegmentLib.volumes import load_case

from .adapters import freeze_batchnorm
from .cache import EmbeddingCache
from .losses import dice_loss
from .prompted import PromptedSam, frame_of, prompt_batch, targets
from .prompting import first_click
from .split import DEFAULT_DATA_DIR, case_dirs

TRAINED = ("prompt_encoder", "mask_decoder")
AXIAL = 0
BATCH_SIZE = 8


def probe_slices(cache: EmbeddingCache, modality: str = "flair") -> list[int]:
    """Cache indices of the axial tumour slices of one modality: what the probe trains on."""
    return [n for n, entry in enumerate(cache.entries)
            if entry["modality"] == modality and entry["axis"] == AXIAL and entry["tumour_pixels"] > 0]


def probe_model() -> PromptedSam:
    """Zero-shot LiteMedSAM with only the prompt encoder and mask decoder trainable."""
    core = PromptedSam(load_sam(adapter=None).model)
    core.requires_grad_(False)
    for module in TRAINED:
        getattr(core.sam, module).requires_grad_(True)
    core.train()
    freeze_batchnorm(core)
    return core


def probe_loss(core: PromptedSam, cache: EmbeddingCache, indices: list[int], rng: np.random.Generator) -> torch.Tensor:
    """BCE + Dice of one click per slice (first_click: half at the distance-transform maximum, half anywhere)."""
    records = [cache.record(i) for i in indices]
    frames = [frame_of(r) for r in records]
    clicks = [[first_click(r.tumour, rng)] for r in records]
    logits = core(cache.embeddings(indices), prompt_batch(frames, None, clicks))
    target = targets(records, frames, multiclass=False)
    return F.binary_cross_entropy_with_logits(logits, target) + dice_loss(logits, target)


def train_probe(cache: EmbeddingCache, steps: int, batch_size: int = BATCH_SIZE, seed: int = 0,
                log_every: int = 20) -> tuple[PromptedSam, list[float]]:
    """The probe's fine-tuning; returns the model and the mean loss of every ``log_every`` steps."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pool = probe_slices(cache)
    if not pool:
        raise ValueError(f"{cache.folder}: no axial FLAIR tumour slice to train the probe on")
    core = probe_model()
    optimizer = torch.optim.AdamW([p for p in core.parameters() if p.requires_grad], lr=1e-4)
    losses, window, began = [], [], time.perf_counter()
    for step in range(1, steps + 1):
        loss = probe_loss(core, cache, [int(i) for i in rng.choice(pool, batch_size)], rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window.append(float(loss.detach()))
        if step % log_every == 0 or step == steps:
            losses.append(float(np.mean(window)))
            window = []
            print(f"probe step {step}/{steps} loss {losses[-1]:.4f} "
                  f"{(time.perf_counter() - began) / step:.2f} s/step", flush=True)
    return core, losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default="training/cache/default", help="embedding cache (python -m training.cache)")
    parser.add_argument("--steps", type=int, default=240,
                        help=f"batches of {BATCH_SIZE} (240: about four minutes on this CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--views", type=int, default=1, choices=VIEW_CHOICES,
                        help="1 as the probe; 3 as samba evaluate's default")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    cache = EmbeddingCache(args.cache)
    began = time.perf_counter()
    core, losses = train_probe(cache, args.steps, seed=args.seed)
    training_seconds = time.perf_counter() - began
    engine = SamEngine.create(adapter=None)
    decoder_side = {k: v for k, v in core.sam.state_dict().items() if k.startswith(TRAINED)}
    engine.sam.model.load_state_dict(decoder_side, strict=False)
    engine.sam.model.eval()
    rows = []
    for folder in case_dirs("validation", args.data_dir):
        evaluation = evaluate_case(engine, load_case(folder), "points", views=args.views)
        rows.append(evaluation.as_json())
        print(f"{folder.name}: points WT Dice {evaluation.scores['WT']['dice']:.3f}", flush=True)
    report = {"probe": {"steps": args.steps, "batch_size": BATCH_SIZE, "slices": len(probe_slices(cache)),
                        "training_seconds": round(training_seconds, 1), "losses": losses, "seed": args.seed},
              "views": args.views, "rows": rows,
              "mean_wt_dice": float(np.mean([r["WT"]["dice"] for r in rows])),
              "mean_wt_lesion_dice": float(np.mean([r["WT"]["lesion_dice"] for r in rows]))}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"probe, one click per tumour slice: mean WT Dice {report['mean_wt_dice']:.3f} "
          f"(lesion-wise {report['mean_wt_lesion_dice']:.3f}); wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
