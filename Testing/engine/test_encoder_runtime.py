"""The image encoder in ONNX Runtime (the CPU default) against PyTorch fp32, on real slices with the shipped adapter."""

from __future__ import annotations

import logging

import numpy as np
import pytest

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
    onnx = SamEngine(adapted_sam, "cpu")
    assert onnx.encoder_runtime == "onnxruntime" and "ONNX Runtime" in onnx.describe()
    assert reference.describe().endswith("(fp32)")
    tumour_slices = np.flatnonzero(truth.sum(axis=(1, 2)) > 100)
    for index in tumour_slices[[0, len(tumour_slices) // 2, -1]]:
        difference = (reference.embedding(volume, 0, index) - onnx.embedding(volume, 0, index)).abs().max()
        assert float(difference) < 1e-4
        prompt = SlicePrompt(box=bounding_box(truth[index]))
        expected = reference.segment(volume, 0, index, [prompt])
        assert expected.sum() > 100 and np.array_equal(onnx.segment(volume, 0, index, [prompt]), expected)


def test_the_onnx_runtime_encoder_is_refused_off_the_cpu(adapted_sam):
    with pytest.raises(SettingsError, match="runs on the CPU, not on CUDA"):
        SamEngine(adapted_sam, "cuda", encoder_runtime="onnxruntime")
    with pytest.raises(SettingsError, match="unknown encoder runtime 'tensorrt'"):
        SamEngine(adapted_sam, "cpu", encoder_runtime="tensorrt")


def test_a_failed_export_falls_back_to_pytorch_and_says_so(adapted_sam, real_case, monkeypatch, caplog):
    def failing_export(*args, **kwargs):
        raise RuntimeError("exporter broken")

    monkeypatch.setattr(engine_module, "OnnxImageEncoder", failing_export)
    engine = SamEngine(adapted_sam, "cpu", bf16=False)
    truth = region_mask(real_case.label, "WT")
    index = int(np.argmax(truth.sum(axis=(1, 2))))
    with caplog.at_level(logging.WARNING):
        mask = engine.segment(real_case.volume("flair"), 0, index, [SlicePrompt(box=bounding_box(truth[index]))])
    assert mask.sum() > 100
    assert "exporter broken" in caplog.text and engine.encoder_runtime == "torch"
    assert "ONNX" not in engine.describe()
