"""The image encoder in ONNX Runtime (the CPU default) against PyTorch fp32, on real slices with the shipped adapter."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from SAMBASegmentLib.errors import SettingsError
from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.prompts import SlicePrompt, bounding_box
from SAMBASegmentLib.sam import SamEngine, load_sam
from SAMBASegmentLib.sam import engine as engine_module


@pytest.fixture(scope="module")
def adapted_sam():
    return load_sam(adapter="default")


def test_onnx_runtime_encodes_real_slices_as_pytorch_fp32_does(adapted_sam, real_case):
    """Same embeddings within 1e-4 and the same masks, voxel for voxel, on three slices across the tumour."""
    volume, truth = real_case.volume("flair"), region_mask(real_case.label, "WT")
    reference = SamEngine(adapted_sam, "cpu", bf16=False, encoder_runtime="torch")
    onnx = SamEngine(adapted_sam, "cpu", encoder_runtime="onnxruntime")
    assert onnx.encoder_runtime == "onnxruntime" and "ONNX Runtime" in onnx.describe() and not onnx.bf16
    assert reference.describe().endswith("(fp32)")
    tumour_slices = np.flatnonzero(truth.sum(axis=(1, 2)) > 100)
    for index in tumour_slices[[0, len(tumour_slices) // 2, -1]]:
        difference = (reference.embedding(volume, 0, index) - onnx.embedding(volume, 0, index)).abs().max()
        assert float(difference) < 1e-4
        prompt = SlicePrompt(box=bounding_box(truth[index]))
        expected = reference.segment(volume, 0, index, [prompt])
        assert expected.sum() > 100 and np.array_equal(onnx.segment(volume, 0, index, [prompt]), expected)


def test_auto_keeps_bf16_where_the_cpu_has_it_and_takes_onnx_runtime_where_it_does_not(adapted_sam):
    """The adapter was trained on bf16 embeddings: where bf16 runs natively it stays (fp32 costs 0.2-0.4 points)."""
    with_bf16 = SamEngine(adapted_sam, "cpu", bf16=True)
    assert (with_bf16.encoder_runtime, with_bf16.bf16) == ("torch", True)
    assert with_bf16.describe().endswith("(bf16 autocast)")
    without_bf16 = SamEngine(adapted_sam, "cpu", bf16=False)
    assert (without_bf16.encoder_runtime, without_bf16.bf16) == ("onnxruntime", False)
    assert without_bf16.describe().endswith("(fp32, encoder in ONNX Runtime)")


def test_settings_that_cannot_run_are_refused_before_loading(adapted_sam, monkeypatch):
    with pytest.raises(SettingsError, match="unknown encoder runtime 'tensorrt'"):
        SamEngine(adapted_sam, "cpu", encoder_runtime="tensorrt")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SettingsError, match="no usable NVIDIA GPU on this computer; use --device cpu"):
        SamEngine.create(device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU present: ONNX Runtime still runs on the CPU
    with pytest.raises(SettingsError, match="runs on the CPU, not on CUDA"):
        SamEngine.create(device="cuda", encoder_runtime="onnxruntime")


def test_a_failed_export_falls_back_to_pytorch_and_says_so(adapted_sam, real_case, monkeypatch, caplog):
    def failing_export(*args, **kwargs):
        raise RuntimeError("exporter broken")

    monkeypatch.setattr(engine_module, "OnnxImageEncoder", failing_export)
    with caplog.at_level(logging.WARNING):
        engine = SamEngine(adapted_sam, "cpu", bf16=False)
    assert "exporter broken" in caplog.text and engine.encoder_runtime == "torch"
    assert "ONNX" not in engine.describe()
    truth = region_mask(real_case.label, "WT")
    index = int(np.argmax(truth.sum(axis=(1, 2))))
    mask = engine.segment(real_case.volume("flair"), 0, index, [SlicePrompt(box=bounding_box(truth[index]))])
    assert mask.sum() > 100
