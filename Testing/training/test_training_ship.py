"""Shipping an adapter (training/ship.py): a soup's manifest names both parents, and the opt-in rule holds."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from SAMBASegmentLib.weights import sha256_of
from SAMBASegmentLib.sam.model import DEFAULT_ADAPTER_DIR
from training.ship import ship
from training.soup import CONFIG, WEIGHTS, average_adapters
from training.split import load_split


def _parent(folder, seed: int | None, **data_changes):
    """A shipped-style adapter folder: the shipped adapter (moved at random unless ``seed`` is None) and its manifest."""
    folder.mkdir()
    shutil.copy(DEFAULT_ADAPTER_DIR / CONFIG, folder / CONFIG)
    weights = load_file(DEFAULT_ADAPTER_DIR / WEIGHTS)
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
        weights = {k: v + 0.05 * v.abs().mean() * torch.randn(v.shape, generator=generator) for k, v in weights.items()}
    save_file(weights, folder / WEIGHTS)
    manifest = json.loads((DEFAULT_ADAPTER_DIR / "manifest.json").read_text())
    manifest["data"].update(data_changes)
    manifest["sha256"] = sha256_of(folder / WEIGHTS)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _evaluation(path, adapter_box3d: float):
    """A training.evaluate file: zero-shot and the adapter on every validation case (box3d and points)."""
    rows = [{"model": model, "case": case, "modality": "flair", "config": config, "WT": {"dice": dice, "hd95": 5.0}}
            for case in load_split()["validation"]
            for model, config, dice in (("zero-shot", "box3d", 0.82), ("lora", "box3d", adapter_box3d),
                                        ("zero-shot", "points", 0.0), ("lora", "points", 0.80))]
    path.write_text(json.dumps({"rows": rows}))
    return path


def _samba_evaluation(path):
    path.write_text(json.dumps({"modality": "flair", "prompt": "points", "clicks": 3, "views": 3, "refine": None,
                                "summary": {"cases": 6, "seconds_per_case": 160.0,
                                            "WT": {"dice": 0.85, "lesion_dice": 0.84, "hd95": 9.2}}}))
    return path


def test_a_soup_ships_with_both_parents_named(tmp_path):
    first, second = _parent(tmp_path / "first", seed=None), _parent(tmp_path / "second", seed=3)
    soup = average_adapters(first, second, tmp_path / "soup")
    shipped = ship(soup, [_evaluation(tmp_path / "eval.json", adapter_box3d=0.83)], tmp_path / "shipped",
                   samba_evaluations=[_samba_evaluation(tmp_path / "samba.json")])
    manifest = json.loads((shipped / "manifest.json").read_text())
    assert manifest["sha256"] == sha256_of(soup / WEIGHTS) == sha256_of(shipped / WEIGHTS)
    assert [p["sha256"] for p in manifest["parents"]] == [sha256_of(first / WEIGHTS), sha256_of(second / WEIGHTS)]
    parent_rank = json.loads((first / CONFIG).read_text())["r"]
    assert manifest["peft"]["r"] == 2 * parent_rank and manifest["applied_by_default"] is True
    assert manifest["metrics"]["samba evaluate|flair|points|clicks 3|views 3"]["WT_dice"] == 0.85
    card = (shipped / "MODEL_CARD.md").read_text()
    assert "**Parent 1**" in card and "**Parent 2**" in card and "| flair | points | 3 | 3 | 0.850 |" in card
    assert "{" not in card.replace("{}", "")  # every template field was filled


def test_an_adapter_below_zero_shot_on_a_workflow_prompt_ships_opt_in(tmp_path):
    first, second = _parent(tmp_path / "first", seed=None), _parent(tmp_path / "second", seed=4)
    soup = average_adapters(first, second, tmp_path / "soup")
    shipped = ship(soup, [_evaluation(tmp_path / "eval.json", adapter_box3d=0.81)], tmp_path / "shipped")
    assert json.loads((shipped / "manifest.json").read_text())["applied_by_default"] is False


def test_a_parent_trained_on_a_validation_case_is_refused(tmp_path):
    validation_case = load_split()["validation"][0]
    training_cases = json.loads((DEFAULT_ADAPTER_DIR / "manifest.json").read_text())["data"]["training_cases"]
    first = _parent(tmp_path / "first", seed=None)
    second = _parent(tmp_path / "second", seed=5, training_cases=training_cases + [validation_case])
    soup = average_adapters(first, second, tmp_path / "soup")
    with pytest.raises(ValueError, match=validation_case):
        ship(soup, [_evaluation(tmp_path / "eval.json", adapter_box3d=0.83)], tmp_path / "shipped")
    assert not (tmp_path / "shipped").exists()  # nothing half-shipped
