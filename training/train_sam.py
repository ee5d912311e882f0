"""Fine-tune the engine's SAM on the cached training slices — one command per mode, resumable.

    python -m training.train_sam --mode lora       [--steps 600] [--encoder-steps 0]    # Cheap Lunch: boxes + clicks
    python -m training.train_sam --mode decoder    [--steps 120]                        # SAMBA: boxes, Dice
    python -m training.train_sam --mode multiclass [--steps 120]                        # SAMBA-mc: NETC/SNFH/ET
    torchrun --nproc_per_node N -m training.train_sam ...                                # DDP, unchanged

Decoder-side steps run on cached embeddings (``training.cache``); in ``lora`` mode the last ``--encoder-steps``
steps run the image encoder with its LoRA on the raw slices. A run folder holds ``log.jsonl``, ``checkpoint.pt``
(resumed automatically; a larger ``--steps`` extends a finished run) and the peft adapter in ``adapter/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from SAMBASegmentLib.sam.engine import cpu_supports_bf16
from SAMBASegmentLib.sam.model import load_sam

from .adapters import MODES, attach, freeze_batchnorm
from .cache import EmbeddingCache
from .dataset import SliceRecord
from .losses import mode_loss
from .prompted import PromptBatch, PromptedSam, frame_of, model_images, prompt_batch, slice_masks, targets
from .prompting import Click, corrective_click, empty_box, first_click, jittered_box

log = logging.getLogger("train_sam")

DEFAULTS = {  # mode: (steps, lr, head lr)
    "decoder": (120, 1e-4, 1e-4),
    "lora": (600, 1e-3, 2e-4),
    "multiclass": (120, 1e-4, 1e-4),
}
BOX_EXTRA_CLICKS = ((0, 1, 2), (0.6, 0.25, 0.15))
POINT_CLICKS = ((1, 2, 3, 4), (0.45, 0.2, 0.2, 0.15))


@dataclass
class Step:
    """What one training step feeds the model."""

    records: list[SliceRecord]
    embeddings: torch.Tensor
    prompts: PromptBatch
    target: torch.Tensor


def _clicks(rng: np.random.Generator, choices: tuple) -> int:
    return int(rng.choice(choices[0], p=choices[1]))


def _fallback_click(record: SliceRecord, rng: np.random.Generator) -> Click:
    """A click when the prediction is already perfect: positive inside tumour, else negative on brain."""
    if record.tumour.any():
        return first_click(record.tumour, rng)
    rows, cols = np.nonzero(record.brain if record.brain.any() else np.ones_like(record.brain))
    pick = int(rng.integers(rows.size))
    return Click(int(rows[pick]), int(cols[pick]), False)


class StepSampler:
    """Draws slices and simulates the clinician. Box batches draw tumour-free slices with probability
    ``negatives`` (measured: at 8 %, Dice on empty targets taught the decoder to shrink masks and box3d
    propagation stopped early), click batches tumour slices only. Corrective clicks come from the current
    model's own errors."""

    def __init__(self, cache: EmbeddingCache, mode: str, rng: np.random.Generator, negatives: float = 0.0,
                 box_shrink: int = 0, modalities: tuple[str, ...] | None = None):
        self.cache, self.mode, self.rng, self.negatives, self.box_shrink = cache, mode, rng, negatives, box_shrink
        usable = [(n, e) for n, e in enumerate(cache.entries) if modalities is None or e["modality"] in modalities]
        if not usable:
            raise ValueError(f"the cache holds no slice of the modalities {modalities}")
        self.with_tumour = np.array([n for n, e in usable if e["tumour_pixels"] > 0])
        self.without = np.array([n for n, e in usable if e["tumour_pixels"] == 0])

    def draw(self, model: PromptedSam, batch_size: int) -> Step:
        rng = self.rng
        use_box = self.mode != "lora" or rng.random() < 0.5
        negative = rng.random(batch_size) < (self.negatives if use_box and self.without.size else 0.0)
        indices = [int(rng.choice(self.without if n else self.with_tumour)) for n in negative]
        records = [self.cache.record(i) for i in indices]
        frames = [frame_of(r) for r in records]
        embeddings = self.cache.embeddings(indices)
        boxes = None
        clicks: list[list[Click]] = [[] for _ in records]
        if use_box:
            boxes = [jittered_box(r.tumour, rng, max_shrink=self.box_shrink) if r.tumour.any() else empty_box(r.brain, rng)
                     for r in records]
            extra = _clicks(rng, BOX_EXTRA_CLICKS) if self.mode == "lora" else 0
        else:
            clicks = [[first_click(r.tumour, rng)] for r in records]
            extra = _clicks(rng, POINT_CLICKS) - 1
        for _ in range(extra):
            with torch.no_grad():
                logits = model(embeddings, prompt_batch(frames, boxes, clicks))
            for record, mask, record_clicks in zip(records, slice_masks(logits, frames), clicks):
                record_clicks.append(corrective_click(mask, record.tumour) or _fallback_click(record, rng))
        return Step(records, embeddings, prompt_batch(frames, boxes, clicks),
                    targets(records, frames, self.mode == "multiclass"))


def learning_rate_factor(step: int, steps: int, warmup: int, final_ratio: float) -> float:
    """Linear warm-up, then exponential decay to ``final_ratio`` at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    return final_ratio ** ((step - warmup) / max(1, steps - 1 - warmup))


def make_optimizer(core: torch.nn.Module, lr: float, head_lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with LoRA matrices at ``lr`` and fully trained modules at ``head_lr`` (``base_lr`` kept per group)."""
    trainable = _trainable(core)
    groups = [{"params": [p for n, p in trainable.items() if "lora_" in n], "lr": lr, "base_lr": lr},
              {"params": [p for n, p in trainable.items() if "lora_" not in n], "lr": head_lr, "base_lr": head_lr}]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=weight_decay)


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def build_arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", required=True, choices=MODES)
    parser.add_argument("--cache", default="training/cache/default", help="embedding cache (python -m training.cache)")
    parser.add_argument("--run-dir", help="run folder (default training/runs/<mode>)")
    parser.add_argument("--steps", type=int, help="total optimiser steps (default per mode)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, help="LoRA / decoder learning rate (default per mode)")
    parser.add_argument("--head-lr", type=float, help="learning rate of fully trained modules (default per mode)")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--final-lr-ratio", type=float, default=0.05)
    parser.add_argument("--encoder-steps", type=int, default=0, help="lora: last steps with the encoder LoRA trained")
    parser.add_argument("--full-decoder", action="store_true",
                        help="lora: train prompt encoder and whole mask decoder in full (LoRA on the encoder only)")
    parser.add_argument("--negatives", type=float, default=0.0, help="share of tumour-free slices in box batches")
    parser.add_argument("--box-shrink", type=int, default=0,
                        help="box sides may also move inwards by up to this many px (propagation's boxes)")
    parser.add_argument("--modalities", nargs="+", metavar="MODALITY",
                        help="train on the cached slices of these modalities only (default: all)")
    parser.add_argument("--encoder-batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--save-every", type=int, default=100)
    return parser


def train(args: argparse.Namespace) -> Path:
    rank, world = _distributed()
    steps, lr, head_lr = DEFAULTS[args.mode]
    args.steps, args.lr, args.head_lr = args.steps or steps, args.lr or lr, args.head_lr or head_lr
    if args.encoder_steps and args.mode != "lora":
        raise ValueError("--encoder-steps applies to --mode lora only")
    run = Path(args.run_dir or f"training/runs/{args.mode}")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    cache = EmbeddingCache(args.cache)
    if not cache.complete:
        raise RuntimeError(f"{cache.folder}: only {cache.encoded}/{len(cache)} slices encoded; run python -m training.cache")
    if args.full_decoder and args.mode != "lora":
        raise ValueError("--full-decoder applies to --mode lora only")
    peft_model = attach(load_sam(adapter=None, device=device).model, args.mode, args.seed, args.full_decoder)
    core = PromptedSam(peft_model, bf16_encoder=device.type == "cpu" and cpu_supports_bf16()).to(device)
    core.train()
    freeze_batchnorm(core)
    trainable = _trainable(core)
    optimizer = make_optimizer(core, args.lr, args.head_lr, args.weight_decay)
    rng = np.random.default_rng([args.seed, rank])
    start = 0
    checkpoint_path = run / "checkpoint.pt"
    if checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        for name, value in state["trainable"].items():
            trainable[name].data.copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"][rank] if rank < len(state["rng"]) else rng.bit_generator.state
        start = int(state["step"])
        if rank == 0:
            print(f"resumed {run} at step {start}", flush=True)
    model = DistributedDataParallel(core, find_unused_parameters=True) if world > 1 else core
    sampler = StepSampler(cache, args.mode, rng, args.negatives, args.box_shrink,
                          tuple(args.modalities) if args.modalities else None)
    multimask = args.mode == "multiclass"
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        (run / "settings.json").write_text(json.dumps({**vars(args), "world_size": world, "cache_slices": len(cache)}, indent=1))
    window: list[float] = []
    began = time.perf_counter()
    for step in range(start, args.steps):
        factor = learning_rate_factor(step, args.steps, args.warmup, args.final_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        encoder_phase = args.mode == "lora" and step >= args.steps - args.encoder_steps
        batch = sampler.draw(core, args.encoder_batch_size if encoder_phase else args.batch_size)
        inputs = model_images(batch.records, [frame_of(r) for r in batch.records]) if encoder_phase else batch.embeddings
        logits = model(inputs.to(device), batch.prompts, multimask, images=encoder_phase)
        loss = mode_loss(args.mode, logits, batch.target.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window.append(float(loss.detach()))
        done = step + 1
        if rank == 0 and (done % args.log_every == 0 or done == args.steps):
            seconds = (time.perf_counter() - began) / (done - start)
            entry = {"step": done, "loss": float(np.mean(window)), "lr": optimizer.param_groups[0]["lr"],
                     "seconds_per_step": round(seconds, 3), "encoder_phase": encoder_phase, "time": time.time()}
            with open(run / "log.jsonl", "a") as handle:
                handle.write(json.dumps(entry) + "\n")
            print(f"{args.mode} step {done}/{args.steps} loss {entry['loss']:.4f} lr {entry['lr']:.2e} "
                  f"{seconds:.2f} s/step, {(args.steps - done) * seconds / 60:.1f} min left", flush=True)
            window = []
        if done % args.save_every == 0 or done == args.steps:
            save_checkpoint(run, core, optimizer, rng, done, rank, world)
    if rank == 0:
        adapter_dir = run / "adapter"
        peft_model.save_pretrained(str(adapter_dir))
        log_lines = (run / "log.jsonl").read_text().splitlines() if (run / "log.jsonl").is_file() else []
        summary = {"mode": args.mode, "steps": args.steps, "settings": json.loads((run / "settings.json").read_text()),
                   "last_log": json.loads(log_lines[-1]) if log_lines else None, "cache": str(cache.folder),
                   "cache_meta": {k: cache.meta.get(k) for k in ("settings", "exemplars", "labelled_slices_available",
                                                                  "training_cases", "encoder")}}
        (adapter_dir / "training.json").write_text(json.dumps(summary, indent=1))
        print(f"adapter written: {adapter_dir}", flush=True)
    if world > 1:
        dist.barrier()
    return run / "adapter"


def save_checkpoint(run: Path, core: torch.nn.Module, optimizer: torch.optim.Optimizer, rng: np.random.Generator,
                    step: int, rank: int, world: int) -> None:
    """Trainable weights, optimiser and every rank's sampler state; written atomically by rank 0."""
    states = [rng.bit_generator.state]
    if world > 1:
        gathered: list = [None] * world
        dist.all_gather_object(gathered, rng.bit_generator.state)
        states = gathered
    if rank != 0:
        return
    state = {"step": step, "trainable": {n: p.detach().cpu() for n, p in _trainable(core).items()},
             "optimizer": optimizer.state_dict(), "rng": states}
    temporary = run / "checkpoint.pt.tmp"
    torch.save(state, temporary)
    temporary.replace(run / "checkpoint.pt")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(build_arguments().parse_args(argv))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
