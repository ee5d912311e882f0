"""A few steps of each training mode lower the loss on a real batch; BatchNorm stays frozen."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SAMBASegmentLib.sam.model import load_sam
from training.adapters import MODES, attach, encoder_unchanged, freeze_batchnorm
from training.losses import mode_loss
from training.prompted import PromptedSam, frame_of, model_images
from training.train_sam import DEFAULTS, StepSampler, make_optimizer


def _core(mode: str) -> PromptedSam:
    core = PromptedSam(attach(load_sam(adapter=None).model, mode, seed=0))
    core.train()
    freeze_batchnorm(core)
    return core


def _fit(core: PromptedSam, mode: str, inputs: torch.Tensor, step, images: bool = False, steps: int = 5) -> tuple[float, float]:
    _, lr, head_lr = DEFAULTS[mode]
    optimizer = make_optimizer(core, lr, head_lr, 1e-4)

    def loss() -> torch.Tensor:
        return mode_loss(mode, core(inputs, step.prompts, mode == "multiclass", images=images), step.target)

    with torch.no_grad():
        before = float(loss())
    for _ in range(steps):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    with torch.no_grad():
        return before, float(loss())


@pytest.mark.parametrize("mode", MODES)
def test_steps_lower_the_loss_on_cached_embeddings(tiny_cache, mode):
    core = _core(mode)
    sampler = StepSampler(tiny_cache, mode, np.random.default_rng(0))
    kinds = set()
    for _ in range(12 if mode == "lora" else 1):  # lora mixes box and click batches: train on both
        step = sampler.draw(core, 4)
        kind = "box" if step.prompts.boxes is not None else "points"
        if kind in kinds:
            continue
        kinds.add(kind)
        before, after = _fit(core, mode, step.embeddings, step)
        assert after < 0.9 * before, (mode, kind, before, after)
    assert kinds == ({"box", "points"} if mode == "lora" else {"box"})
    if mode == "lora":
        assert encoder_unchanged(core.model)  # cached steps never touch the encoder: the cache stays valid


def test_encoder_lora_steps_lower_the_loss_and_keep_batchnorm(tiny_cache):
    core = _core("lora")
    batchnorm = {n: b.clone() for n, b in core.named_buffers() if "running" in n}
    step = StepSampler(tiny_cache, "lora", np.random.default_rng(1)).draw(core, 2)
    images = model_images(step.records, [frame_of(r) for r in step.records])
    before, after = _fit(core, "lora", images, step, images=True, steps=3)
    assert after < before
    assert not encoder_unchanged(core.model)
    assert batchnorm and all(torch.equal(b, dict(core.named_buffers())[n]) for n, b in batchnorm.items())
