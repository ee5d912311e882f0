"""Ship a trained adapter as the engine's default: weights, manifest (sha256, base, data, split, settings, metrics)
and a model card whose tables are generated from the validation JSON files (no figure is typed by hand).

    python -m training.ship --run training/runs/lora --evaluation training/runs/evaluate_flair.json [...]
    python -m training.ship --soup training/runs/soup/adapter --evaluation ... [--samba-evaluation samba.json ...]

A soup (``training/soup.py``) carries no training record of its own: its manifest names both parents with their
data, settings and sha256, read from each parent's ``training.json`` (a train_sam run) or ``manifest.json`` (an
adapter shipped before).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
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
    True: "Its encoder LoRA was trained on raw slices (see Training), so the merged encoder differs from LiteMedSAM's.",
}


def _training_seconds(run: Path) -> float:
    """Wall time of the logged steps (first to last log line, plus the first window)."""
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return float(sum(line["seconds_per_step"] * (line["step"] - previous["step"] if previous else line["step"])
                     for previous, line in zip([None] + lines[:-1], lines)))


def _shipping_commit(sha256: str) -> str | None:
    """The latest git commit whose shipped adapter had weights ``sha256``: where a parent shipped before lives on."""
    root = Path(__file__).parent.parent
    manifest = (DEFAULT_ADAPTER_DIR / "manifest.json").relative_to(root).as_posix()
    git = ["git", "-C", str(root)]
    commits = subprocess.run([*git, "log", "--format=%H", "--", manifest], capture_output=True, text=True).stdout.split()
    for commit in commits:
        shown = subprocess.run([*git, "show", f"{commit}:{manifest}"], capture_output=True, text=True)
        if shown.returncode == 0 and json.loads(shown.stdout).get("sha256") == sha256:
            return commit
    return None


def training_record(adapter: Path) -> dict:
    """How one trained adapter came to be: mode, steps, settings, data, wall time and the sha256 of its weights.

    From ``training.json`` (written by train_sam beside the adapter, log in the run folder) or, for an adapter
    shipped before, from its ``manifest.json``.
    """
    adapter = Path(adapter)
    if (adapter / "training.json").is_file():
        training = json.loads((adapter / "training.json").read_text())
        record = {"mode": training["mode"], "steps": training["steps"], "settings": training["settings"],
                  "data": training["cache_meta"], "training_seconds": round(_training_seconds(adapter.parent)),
                  "origin": str(adapter)}
    elif (adapter / "manifest.json").is_file():
        manifest = json.loads((adapter / "manifest.json").read_text())
        if "parents" in manifest:
            raise ValueError(f"{adapter} is itself a soup: average its parents directly")
        data = manifest["data"]
        record = {"mode": manifest["mode"], "steps": manifest["settings"]["steps"], "settings": manifest["settings"],
                  "data": {"settings": data["settings"], "exemplars": data["exemplars"],
                           "labelled_slices_available": data["labelled_slices_available"],
                           "training_cases": data["training_cases"], "encoder": data["embeddings"]},
                  "training_seconds": manifest["training_seconds"],
                  "commit": _shipping_commit(manifest["sha256"])}
        record["origin"] = f"shipped in `{DEFAULT_ADAPTER_DIR.name}` at commit {record['commit'] or '(none here)'}"
        if manifest["sha256"] != sha256_of(adapter / "adapter_model.safetensors"):
            raise ValueError(f"{adapter}: the weights are not the ones its manifest.json describes (sha256 differs)")
    else:
        raise ValueError(f"{adapter}: neither training.json (a train_sam run) nor manifest.json (a shipped adapter)")
    record["sha256"] = sha256_of(adapter / "adapter_model.safetensors")
    leaked = sorted(set(record["data"]["training_cases"]) & set(load_split()["validation"]))
    if leaked:
        raise ValueError(f"{adapter} was trained on validation cases {leaked}: its figures would not be validation")
    return record


def _describe_adapter(config: dict, parents: int) -> str:
    """The adapter in words, from its peft configuration (what was LoRA-adapted, what was trained in full)."""
    targets = config["target_modules"]
    lora = ["the image encoder's attention (qkv)" if "image_encoder" in targets else "",
            "every linear layer of the decoder's two-way transformer" if "mask_decoder" in targets else ""]
    full = ", ".join(f"`{m}`" for m in config["modules_to_save"])
    rank = f"LoRA rank {config['r']:g} (alpha {config['lora_alpha']:g}"
    rank += f"; the {parents} parents' LoRA matrices side by side)" if parents > 1 else ")"
    return rank + " on " + " and ".join(x for x in lora if x) + f"; trained in full (`modules_to_save`): {full}."


def _training_text(record: dict) -> str:
    """The card's account of one training run: its data, prompts and optimisation (the recipe of train_sam)."""
    settings, data = record["settings"], record["data"]
    builder = data["settings"]["builder"]
    return f"""- {settings['cache_slices']} slices (FLAIR/T2/T1ce/T1; axial, coronal, sagittal; {builder['empty_fraction']:.0%} \
tumour-free brain slices, drawn for {settings['negatives']:.0%} of box prompts) framed by the engine's `SliceFrame`, \
embeddings from the engine's encoder (bf16 autocast), of which {data['settings']['synthetic']} are synthetic: Cheap Lunch \
exemplar synthesis from {data['exemplars']} exemplar slices ({builder['exemplar_fraction']:.1%} of the labelled \
slices), tumours cut, scaled, rotated, flipped, intensity-changed and blurred, pasted onto tumour-free slices of other \
cases.
- Prompts simulated from the labels: boxes tight, each side moved out by up to 20 px or in by up to \
{settings.get('box_shrink', 0)} px (half the batches, sometimes plus corrective clicks); 1–4 clicks (first at the \
distance-transform maximum or any tumour pixel, then at the centre of the current model's largest error component, \
positive in missed tumour, negative in leaks).
- Loss CE + 0.8·Dice, AdamW (LoRA {settings['lr']:g}, fully trained modules {settings['head_lr']:g}), linear warm-up \
then exponential decay, BatchNorm frozen, seed {settings['seed']}. {record['steps']} steps of batch \
{settings['batch_size']}, the last {settings['encoder_steps']} of them on raw slices through the encoder LoRA, about \
{round(record['training_seconds'] / 60)} minutes on the CPU (`{settings['run_dir']}`; weights sha256 \
`{record['sha256'][:16]}…`)."""


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


def _samba_table(paths: list[Path]) -> tuple[str, dict]:
    """Markdown and manifest entries for ``samba evaluate`` JSON files: the figures with the engine's defaults."""
    lines = ["| modality | prompt | clicks | views | WT Dice | lesion-wise | HD95 mm |", "|---|---|---|---|---|---|---|"]
    entries = {}
    for path in paths:
        run = json.loads(Path(path).read_text())
        if run.get("refine") or run["summary"]["cases"] != len(load_split()["validation"]):
            raise ValueError(f"{path}: not a whole-tumour samba evaluate run on the validation cases")
        wt = run["summary"]["WT"]
        lines.append(f"| {run['modality']} | {run['prompt']} | {run['clicks']} | {run['views']} | {wt['dice']:.3f} | "
                     f"{wt['lesion_dice']:.3f} | {wt['hd95']:.1f} |")  # time: `samba bench`, on a quiet machine
        entries[f"samba evaluate|{run['modality']}|{run['prompt']}|clicks {run['clicks']}|views {run['views']}"] = {
            "cases": run["summary"]["cases"], "WT_dice": wt["dice"], "WT_lesion_dice": wt["lesion_dice"],
            "WT_hd95": wt["hd95"]}
    return "\n".join(lines), entries


def ship(adapter: Path, evaluations: list[Path], destination: Path = DEFAULT_ADAPTER_DIR,
         samba_evaluations: list[Path] = ()) -> Path:
    """Copy ``adapter`` (a train_sam run's adapter folder, or a soup's) to ``destination`` with manifest and card."""
    adapter = Path(adapter)
    soup = json.loads((adapter / "soup.json").read_text()) if (adapter / "soup.json").is_file() else None
    # Read every parent before copying: a soup's parent may be the adapter shipped in ``destination`` now.
    records = [training_record(Path(soup[k])) for k in ("first", "second")] if soup else [training_record(adapter)]
    if len({tuple(sorted(r["data"]["training_cases"])) for r in records}) > 1:
        raise ValueError("the soup's parents were trained on different cases: no single split describes it")
    rows = {(r["model"], r["case"], r["modality"], r["config"]): r  # zero-shot appears in every file: count it once
            for path in evaluations for r in json.loads(path.read_text())["rows"]}
    summaries = summarise(list(rows.values()))
    samba_table, samba_entries = _samba_table(list(samba_evaluations))
    destination.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED_FILES:
        shutil.copyfile(adapter / name, destination / name)
    config = json.loads((adapter / "adapter_config.json").read_text())
    below_on_workflow = [key for key, value in summaries.items() if not key.startswith("zero-shot|")
                         and key.split("|")[-1] in WORKFLOW_PROMPTS and "WT_dice" in value
                         and value["WT_dice"] < summaries.get("zero-shot|" + key.split("|", 1)[1], {}).get("WT_dice", 0.0)]
    data = records[0]["data"]
    manifest = {
        "file": "adapter_model.safetensors",
        "sha256": sha256_of(destination / "adapter_model.safetensors"),
        # What a clinician does must not get worse because an adapter shipped: such an adapter is opt-in.
        "applied_by_default": not below_on_workflow,
        "base_model": {"name": "litemedsam", **manifest_entry("litemedsam")},
        "peft": {k: config[k] for k in ("peft_type", "peft_version", "r", "lora_alpha", "target_modules", "modules_to_save")},
        "mode": records[0]["mode"] if not soup else f"soup of {' and '.join(r['mode'] for r in records)}",
        "data": {"source": "../shared/data/brats (24 BraTS 2013/2018 cases, not redistributed)",
                 "training_cases": data["training_cases"], "licences": LICENCES},
        "split": {"file": "training/split.json", "sha256": sha256_of(SPLIT_PATH), "validation": load_split()["validation"]},
        "training_seconds": sum(r["training_seconds"] for r in records),
        "metrics": {"what": "mean whole-tumour Dice (and HD95 mm) over the validation cases, samba evaluate protocol",
                    **summaries, **samba_entries},
    }
    if soup:
        manifest["soup"] = {"weight_of_second": soup["weight"], "how": "training/soup.py: merged weights "
                            "(1 - w)·first + w·second, written exactly as one LoRA of rank r1 + r2"}
        manifest["parents"] = records
    else:
        manifest["data"].update(settings=data["settings"], exemplars=data["exemplars"],
                                labelled_slices_available=data["labelled_slices_available"], embeddings=data["encoder"])
        manifest["settings"], manifest["steps"] = records[0]["settings"], records[0]["steps"]
    (destination / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if soup:
        training = (f"\nThe weight average (`training/soup.py`, weight {soup['weight']:g} on the second) of two "
                    "adapters:\n\n" + "\n\n".join(
                        f"**Parent {i}** ({r['origin']}):\n{_training_text(r)}" for i, r in enumerate(records, 1)))
        restore = [f"`git checkout {r['commit']} -- {soup[k]}`, " for r, k in zip(records, ("first", "second"))
                   if r.get("commit")]
        reproduce = ("".join(restore) + f"`python -m training.soup {soup['first']} {soup['second']} --out {adapter}`, then "
                     f"`.venv/bin/python -m training.ship --soup {adapter} --evaluation <training.evaluate JSON> "
                     "--samba-evaluation <samba evaluate JSON ...>`")
    else:
        training = _training_text(records[0])
        reproduce = ("`training/run_default.sh` (cache, the three modes, the validation table), then "
                     f"`.venv/bin/python -m training.ship --run {adapter.parent} --evaluation <training.evaluate JSON>`")
    card = (Path(__file__).parent / "MODEL_CARD.template.md").read_text()
    card = card.format(table=_table(summaries), licences=LICENCES, training=training, reproduce=reproduce,
                       adapter_description=_describe_adapter(config, len(records)),
                       encoder=ENCODER_NOTE[any(r["settings"]["encoder_steps"] > 0 for r in records)],
                       cases=len(data["training_cases"]), validation=", ".join(load_split()["validation"]),
                       sha256=manifest["sha256"], samba_table=samba_table if samba_entries else
                       "(not measured for this adapter: pass `--samba-evaluation`)")
    (destination / "MODEL_CARD.md").write_text(card)
    return destination


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="a train_sam run folder (its adapter/ is shipped)")
    source.add_argument("--soup", type=Path, help="an adapter folder written by training.soup")
    parser.add_argument("--evaluation", nargs="+", required=True, type=Path, help="training.evaluate JSON files")
    parser.add_argument("--samba-evaluation", nargs="*", default=[], type=Path,
                        help="samba evaluate --json files of this adapter on the validation cases (the defaults' figures)")
    args = parser.parse_args(argv)
    adapter = args.soup if args.soup else args.run / "adapter"
    print(f"shipped: {ship(adapter, args.evaluation, samba_evaluations=args.samba_evaluation)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
