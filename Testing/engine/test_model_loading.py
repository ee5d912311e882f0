"""Other bases and adapters: a segment-anything ViT checkpoint from a path, a peft LoRA adapter on top."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from SAMBASegmentLib.errors import WeightsError
from SAMBASegmentLib.prompts import SlicePrompt
from SAMBASegmentLib.sam import SamEngine
from SAMBASegmentLib.sam.model import load_sam
from SAMBASegmentLib.volumes import ScalarVolume
from SAMBASegmentLib.weights import sha256_of


@pytest.fixture(scope="module")
def small_volume() -> ScalarVolume:
    array = np.zeros((3, 48, 64), dtype=np.float32)
    array[:, 10:30, 20:40] = 1.0
    return ScalarVolume(array, (1.0, 1.0, 1.0))


def test_vit_checkpoint_from_a_path(tmp_path, small_volume):
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    path = tmp_path / "sam_vit_b_test.pth"
    torch.save(sam_model_registry["vit_b"](checkpoint=None).state_dict(), path)
    sam = load_sam(path, vit_type="vit_b", adapter=None)
    assert sam.input_size == 1024 and sam.input_scale == 255.0 and sam.name == "vit_b:sam_vit_b_test.pth"
    engine = SamEngine(sam, "cpu", bf16=False)
    mask = engine.segment(small_volume, 0, 1, [SlicePrompt(box=(10, 20, 29, 39))])
    assert mask.shape == (48, 64) and mask.dtype == bool
    with pytest.raises(WeightsError, match="is not a vit_l SAM checkpoint"):
        load_sam(path, vit_type="vit_l", adapter=None)


def _random_adapter(folder) -> None:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = load_sam(adapter=None).model
    config = LoraConfig(r=4, lora_alpha=4, target_modules=r".*mask_decoder.*\.(q_proj|k_proj|v_proj|out_proj)")
    peft_model = get_peft_model(base, config)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero (a no-op adapter); make this one change the output
            torch.nn.init.normal_(parameter, std=0.05)
    peft_model.save_pretrained(str(folder))


def test_lora_adapter_changes_the_model_and_is_checked(tmp_path, small_volume):
    _random_adapter(tmp_path / "adapter")
    base = SamEngine(load_sam(adapter=None), "cpu", bf16=False)
    adapted = SamEngine(load_sam(adapter=tmp_path / "adapter"), "cpu", bf16=False)
    assert adapted.sam.adapter == "adapter" and "adapter adapter" in adapted.describe()
    prompt = SlicePrompt(box=(10, 20, 29, 39))
    difference = (base.logits(small_volume, 0, 1, prompt) - adapted.logits(small_volume, 0, 1, prompt)).abs().max()
    assert difference > 1e-3
    manifest = tmp_path / "adapter" / "manifest.json"
    manifest.write_text(json.dumps({"sha256": sha256_of(tmp_path / "adapter" / "adapter_model.safetensors")}))
    load_sam(adapter=tmp_path / "adapter")  # the right hash loads
    manifest.write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(WeightsError, match="does not match the manifest"):
        load_sam(adapter=tmp_path / "adapter")
    with pytest.raises(WeightsError, match="not a peft adapter folder"):
        load_sam(adapter=tmp_path)
