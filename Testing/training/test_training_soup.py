"""Averaging two adapters (training/soup.py) gives exactly the average of their merged models."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from SAMBASegmentLib.sam.model import DEFAULT_ADAPTER_DIR, load_sam
from training.soup import CONFIG, WEIGHTS, average_adapters


def _perturbed_copy(folder, seed: int):
    """The shipped adapter with every tensor moved at random: a second, different adapter of the same shape."""
    folder.mkdir()
    shutil.copy(DEFAULT_ADAPTER_DIR / CONFIG, folder / CONFIG)
    generator = torch.Generator().manual_seed(seed)
    weights = load_file(DEFAULT_ADAPTER_DIR / WEIGHTS)
    save_file({k: v + 0.05 * v.abs().mean() * torch.randn(v.shape, generator=generator) for k, v in weights.items()},
              folder / WEIGHTS)
    return folder


def test_soup_equals_the_average_of_the_merged_models(tmp_path):
    second = _perturbed_copy(tmp_path / "second", seed=1)
    soup = average_adapters(DEFAULT_ADAPTER_DIR, second, tmp_path / "soup", weight=0.25)
    config = json.loads((soup / CONFIG).read_text())
    shipped_rank = json.loads((DEFAULT_ADAPTER_DIR / CONFIG).read_text())["r"]
    assert config["r"] == 2 * shipped_rank and config["lora_alpha"] / config["r"] == 1.0
    a = load_sam(adapter="shipped").model.state_dict()
    b = load_sam(adapter=second).model.state_dict()
    averaged = load_sam(adapter=soup).model.state_dict()
    qkv = "image_encoder.layers.1.blocks.0.attn.qkv.weight"
    assert not torch.allclose(a[qkv], b[qkv])  # the encoder LoRA really differs, so the check below means something
    for key, value in averaged.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.75 * a[key] + 0.25 * b[key], atol=1e-5, rtol=1e-4)


def test_adapters_of_different_layers_are_refused(tmp_path):
    second = _perturbed_copy(tmp_path / "second", seed=2)
    config = json.loads((second / CONFIG).read_text())
    (second / CONFIG).write_text(json.dumps({**config, "modules_to_save": ["mask_decoder"]}))
    with pytest.raises(ValueError, match="modules_to_save"):
        average_adapters(DEFAULT_ADAPTER_DIR, second, tmp_path / "soup")
