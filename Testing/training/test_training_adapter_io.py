"""Saving and reloading an adapter reproduces the trained model; the engine loads the shipped adapter."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from peft import PeftModel

from SAMBASegmentLib.sam import SamEngine
from SAMBASegmentLib.sam.model import DEFAULT_ADAPTER_DIR, build_litemedsam, load_sam
from SAMBASegmentLib.sam.multiclass import class_logits, segment_classes
from SAMBASegmentLib.volumes import ScalarVolume
from SAMBASegmentLib.weights import sha256_of
from training.adapters import attach, encoder_unchanged, freeze_batchnorm
from training.evaluate import _same_encoder
from training.losses import mode_loss
from training.prompted import PromptedSam, frame_of, prompt_batch
from training.prompting import jittered_box
from training.train_sam import StepSampler, make_optimizer


@pytest.mark.parametrize("mode, full_decoder", [("lora", False), ("lora", True), ("multiclass", False)])
def test_save_and_reload_reproduce_outputs(tiny_cache, tmp_path, mode, full_decoder):
    core = PromptedSam(attach(load_sam(adapter=None).model, mode, seed=0, full_decoder=full_decoder))
    core.train()
    freeze_batchnorm(core)
    step = StepSampler(tiny_cache, mode, np.random.default_rng(4)).draw(core, 3)
    optimizer = make_optimizer(core, 1e-3, 1e-3, 0.0)
    multimask = mode == "multiclass"
    for _ in range(2):
        optimizer.zero_grad()
        mode_loss(mode, core(step.embeddings, step.prompts, multimask), step.target).backward()
        optimizer.step()
    core.model.save_pretrained(str(tmp_path))
    core.eval()
    with torch.no_grad():
        trained = core(step.embeddings, step.prompts, multimask)
        base = build_litemedsam()
        base.load_state_dict(load_sam(adapter=None).model.state_dict())
        reloaded = PromptedSam(PeftModel.from_pretrained(base, str(tmp_path))).eval()
        assert torch.equal(reloaded(step.embeddings, step.prompts, multimask), trained)
        merged = load_sam(adapter=tmp_path)  # what the engine runs: peft merge_and_unload
        merged_logits = PromptedSam(merged.model)(step.embeddings, step.prompts, multimask)
    torch.testing.assert_close(merged_logits, trained, atol=2e-3, rtol=1e-3)
    assert not torch.allclose(trained, PromptedSam(load_sam(adapter=None).model)(step.embeddings, step.prompts, multimask))
    if mode == "lora":
        assert encoder_unchanged(core.model) and _same_encoder(merged.model, load_sam(adapter=None).model)


def test_engine_loads_the_shipped_adapter_by_default():
    manifest = json.loads((DEFAULT_ADAPTER_DIR / "manifest.json").read_text())
    assert manifest["sha256"] == sha256_of(DEFAULT_ADAPTER_DIR / "adapter_model.safetensors")
    assert {"base_model", "data", "split", "metrics"} <= set(manifest)
    # Training settings: the run's own, or each parent's for a soup (training/soup.py).
    assert all("settings" in record for record in manifest.get("parents", [manifest]))
    assert (DEFAULT_ADAPTER_DIR / "MODEL_CARD.md").is_file()
    shipped = SamEngine.create(adapter="shipped", device="cpu")
    assert shipped.sam.adapter == DEFAULT_ADAPTER_DIR.name
    # Not below zero-shot on the workflow prompts (box3d, clicks), so the engine applies it unless told not to.
    assert manifest["applied_by_default"] is True
    assert SamEngine.create(device="cpu").sam.adapter == DEFAULT_ADAPTER_DIR.name
    assert SamEngine.create(adapter=None, device="cpu").sam.adapter is None
    with torch.no_grad():  # the shipped adapter changes the decoder: it is really applied
        a = shipped.sam.model.mask_decoder.output_hypernetworks_mlps[0].layers[0].weight
        b = load_sam(adapter=None).model.mask_decoder.output_hypernetworks_mlps[0].layers[0].weight
        assert not torch.equal(a, b)


def test_multiclass_decoding_matches_the_trained_channels(tiny_cache, tmp_path):
    """The engine-side decoder reads the classes in the order training wrote them (CLASS_ORDER)."""
    core = PromptedSam(attach(load_sam(adapter=None).model, "multiclass", seed=0))
    with torch.no_grad():
        for parameter in core.model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.01 * torch.randn_like(parameter))  # any trained state will do
    core.model.save_pretrained(str(tmp_path))
    record = next(tiny_cache.record(n) for n in range(len(tiny_cache)) if tiny_cache.record(n).tumour.sum() > 200)
    box = jittered_box(record.tumour, np.random.default_rng(0), max_jitter=0)
    engine = SamEngine(load_sam(adapter=tmp_path), "cpu")
    volume = ScalarVolume(record.image[None], (1.0, *record.spacing))
    decoded = class_logits(engine, volume, 0, 0, box)
    frame = frame_of(record)
    with torch.no_grad():
        trained = core.eval()(engine.embedding(volume, 0, 0), prompt_batch([frame], [box], [[]]), multimask=True)
    torch.testing.assert_close(decoded, frame.logits_to_slice(trained)[0], atol=2e-3, rtol=1e-3)
    labels = segment_classes(engine, volume, 0, 0, box)
    assert set(np.unique(labels)) <= {0, 1, 2, 3} and labels.shape == record.image.shape
