"""A weight average ("model soup") of two LoRA adapters of the same base, written as one exact peft adapter.

Two runs from the same base trade strengths (a longer run clicks better, the shipped one propagates boxes better);
averaging their merged weights often keeps most of both. For LoRA the average is exact as another LoRA: with
the same scaling alpha/r, (1-w)·B1·A1 + w·B2·A2 = [(1-w)·B1, w·B2] · [A1; A2], rank r1 + r2; the modules trained in
full (``modules_to_save``) are averaged directly. The engine loads the result like any adapter.

    python -m training.soup FIRST_ADAPTER SECOND_ADAPTER --out training/runs/soup/adapter [--weight 0.5]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
MUST_MATCH = ("peft_type", "target_modules", "modules_to_save", "use_dora", "use_rslora", "bias")


def _config(folder: Path) -> dict:
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise ValueError(f"{folder}: not a peft adapter folder ({CONFIG} missing)")
    return json.loads(path.read_text())


def average_adapters(first: Path, second: Path, out: Path, weight: float = 0.5) -> Path:
    """Write ``(1 - weight)·first + weight·second`` (in merged weights) as a peft adapter folder ``out``."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must lie in [0, 1], got {weight}")
    config_a, config_b = _config(first), _config(second)
    differing = [key for key in MUST_MATCH if config_a.get(key) != config_b.get(key)]
    scale_a, scale_b = config_a["lora_alpha"] / config_a["r"], config_b["lora_alpha"] / config_b["r"]
    if scale_a != scale_b:
        differing.append("lora_alpha / r")
    differing += [key for key in ("alpha_pattern", "rank_pattern") if config_a.get(key) or config_b.get(key)]
    if differing:  # per-layer ranks or scalings would make the concatenated LoRA inexact
        raise ValueError(f"adapters {first} and {second} cannot be averaged exactly: {', '.join(differing)}")
    weights_a, weights_b = load_file(Path(first) / WEIGHTS), load_file(Path(second) / WEIGHTS)
    if set(weights_a) != set(weights_b):
        raise ValueError(f"adapters {first} and {second} adapt different layers")
    averaged: dict[str, torch.Tensor] = {}
    for key, a in weights_a.items():
        b = weights_b[key]
        if key.endswith("lora_A.weight"):
            averaged[key] = torch.cat([a, b], dim=0)
        elif key.endswith("lora_B.weight"):
            averaged[key] = torch.cat([(1 - weight) * a, weight * b], dim=1)
        else:
            averaged[key] = (1 - weight) * a + weight * b
    rank = config_a["r"] + config_b["r"]
    config = {**config_a, "r": rank, "lora_alpha": scale_a * rank}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in averaged.items()}, out / WEIGHTS)
    (out / CONFIG).write_text(json.dumps(config, indent=2))
    (out / "soup.json").write_text(json.dumps({"first": str(first), "second": str(second), "weight": weight}, indent=1))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--weight", type=float, default=0.5, help="share of the second adapter (0.5: the mean)")
    args = parser.parse_args(argv)
    print(f"adapter written: {average_adapters(args.first, args.second, args.out, args.weight)}")


if __name__ == "__main__":
    main()
