"""Ship a trained adapter as the engine's default: weights, manifest (sha256, base, data, split, settings, metrics)
and a model card whose table is generated from the validation JSON files (no figure is typed by hand).

    python -m training.ship --run training/runs/lora --evaluation training/runs/evaluate_flair.json [...]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from SAMBASegmentLib.sam.model import DEFAULT_ADAPTER_DIR
from SAMBASegmentLib.weights import manifest_entry, sha256_of

from .evaluate import summarise
from .split import SPLIT_PATH, load_split

SHIPPED_FILES = ("adapter_config.json", "adapter_model.safetensors")
# The prompts of the product's workflows (a box propagated through the volume, clicks): an adapter below zero-shot
# on any of them ships opt-in. ``box2d`` (a box on every slice) is reported in the card but not a workflow.
WORKFLOW_PROMPTS = ("box3d", "points", "points+3")
LICENCES = (
    "BRATS 2012–2015 cases: CC BY-NC-SA 3.0. BraTS 2018 cases: research use, citing Menze et al. 2015 "
    "(IEEE TMI 34(10):1993–2024), Bakas et al. 2017 (Sci Data 4:170117) and Bakas et al. 2018 (arXiv:1811.02629). "
    "Weights trained on them are for research use only (non-commercial, share-alike)."
)

ENCODER_NOTE = {
    False: "It was trained on cached image embeddings, so its encoder LoRA matrices are zero: the merged encoder "
           "is LiteMedSAM's exactly, and embeddings cached by the engine stay valid with or without the adapter.",
    True: "Its last {} steps trained the encoder LoRA on raw slices, so the merged encoder differs from LiteMedSAM's.",
}


def _describe_adapter(config: dict) -> str:
    """The adapter in words, from its peft configuration (what was LoRA-adapted, what was trained in full)."""
    targets = config["target_modules"]
    lora = ["the image encoder's attention (qkv)" if "image_encoder" in targets else "",
            "every linear layer of the decoder's two-way transformer" if "mask_decoder" in targets else ""]
    full = ", ".join(f"`{m}`" for m in config["modules_to_save"])
    return (f"LoRA rank {config['r']} (alpha {config['lora_alpha']}) on " + " and ".join(x for x in lora if x)
            + f"; trained in full (`modules_to_save`): {full}.")


def _training_seconds(run: Path) -> float:
    """Wall time of the logged steps (first to last log line, plus the first window)."""
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return float(sum(line["seconds_per_step"] * (line["step"] - previous["step"] if previous else line["step"])
                     for previous, line in zip([None] + lines[:-1], lines)))


def _table(summaries: dict) -> str:
    """Markdown: one row per (modality, prompt), one column per model, WT Dice (mean over validation cases)."""
    binary = [key for key in summaries if not key.endswith("classes")]
    models = sorted({key.split("|")[0] for key in binary}, key=lambda m: (m != "zero-shot", m))
    rows = sorted({tuple(key.split("|")[1:]) for key in binary})
    lines = ["| modality | prompt | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for modality, config in rows:
        cells = [f"{summaries[k]['WT_dice']:.3f}" if (k := f"{m}|{modality}|{config}") in summaries else "–" for m in models]
        lines.append(f"| {modality} | {config} | " + " | ".join(cells) + " |")
    worse = [f"{modality} {config} ({summaries[f'{m}|{modality}|{config}']['WT_dice'] - summaries[f'zero-shot|{modality}|{config}']['WT_dice']:+.3f} for {m})"
             for m in models if m != "zero-shot" for modality, config in rows
             if f"{m}|{modality}|{config}" in summaries and f"zero-shot|{modality}|{config}" in summaries
             and summaries[f"{m}|{modality}|{config}"]["WT_dice"] < summaries[f"zero-shot|{modality}|{config}"]["WT_dice"]]
    if worse:
        lines.append("\n**Below zero-shot**: " + "; ".join(worse) + ".")
    for key, value in summaries.items():
        if key.endswith("classes"):
            figures = ", ".join(f"{name.split('_')[0]} {value[name]:.3f}" for name in value if name.endswith("_dice"))
            lines.append(f"\nMulti-class adapter ({key.split('|')[1]}, WT box on every tumour slice): Dice {figures}.")
    return "\n".join(lines)


def ship(run: Path, evaluations: list[Path], destination: Path = DEFAULT_ADAPTER_DIR) -> Path:
    adapter = run / "adapter"
    training = json.loads((adapter / "training.json").read_text())
    rows = {(r["model"], r["case"], r["modality"], r["config"]): r  # zero-shot appears in every file: count it once
            for path in evaluations for r in json.loads(path.read_text())["rows"]}
    summaries = summarise(list(rows.values()))
    destination.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED_FILES:
        shutil.copyfile(adapter / name, destination / name)
    config = json.loads((adapter / "adapter_config.json").read_text())
    cache_meta = training["cache_meta"]
    seconds = _training_seconds(run)
    below_on_workflow = [key for key, value in summaries.items() if not key.startswith("zero-shot|")
                         and key.split("|")[-1] in WORKFLOW_PROMPTS and "WT_dice" in value
                         and value["WT_dice"] < summaries.get("zero-shot|" + key.split("|", 1)[1], {}).get("WT_dice", 0.0)]
    manifest = {
        "file": "adapter_model.safetensors",
        "sha256": sha256_of(destination / "adapter_model.safetensors"),
        # What a clinician does must not get worse because an adapter shipped: such an adapter is opt-in.
        "applied_by_default": not below_on_workflow,
        "base_model": {"name": "litemedsam", **manifest_entry("litemedsam")},
        "peft": {k: config[k] for k in ("peft_type", "peft_version", "r", "lora_alpha", "target_modules", "modules_to_save")},
        "mode": training["mode"],
        "data": {"source": "../shared/data/brats (24 BraTS 2013/2018 cases, not redistributed)",
                 "training_cases": cache_meta["training_cases"], "settings": cache_meta["settings"],
                 "exemplars": cache_meta["exemplars"], "labelled_slices_available": cache_meta["labelled_slices_available"],
                 "embeddings": cache_meta.get("encoder"), "licences": LICENCES},
        "split": {"file": "training/split.json", "sha256": sha256_of(SPLIT_PATH), "validation": load_split()["validation"]},
        "settings": training["settings"],
        "training_seconds": round(seconds),
        "metrics": {"what": "mean whole-tumour Dice (and HD95 mm) over the validation cases, samba evaluate protocol",
                    **summaries},
    }
    (destination / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    card = (Path(__file__).parent / "MODEL_CARD.template.md").read_text()
    card = card.format(table=_table(summaries), steps=training["steps"], minutes=round(seconds / 60),
                       slices=training["settings"]["cache_slices"], exemplars=cache_meta["exemplars"],
                       cases=len(cache_meta["training_cases"]), licences=LICENCES,
                       adapter_description=_describe_adapter(config), negatives=training["settings"]["negatives"],
                       lr=training["settings"]["lr"], head_lr=training["settings"]["head_lr"],
                       empty=cache_meta["settings"]["builder"]["empty_fraction"], encoder=ENCODER_NOTE[
                           training["settings"]["encoder_steps"] > 0].format(training["settings"]["encoder_steps"]),
                       fraction=cache_meta["settings"]["builder"]["exemplar_fraction"],
                       validation=", ".join(load_split()["validation"]), sha256=manifest["sha256"],
                       box_shrink=training["settings"].get("box_shrink", 0))
    (destination / "MODEL_CARD.md").write_text(card)
    return destination


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="training/runs/lora")
    parser.add_argument("--evaluation", nargs="+", required=True, type=Path, help="training.evaluate JSON files")
    args = parser.parse_args(argv)
    print(f"shipped: {ship(Path(args.run), args.evaluation)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
