"""Export a voting-network run as safetensors + manifest, and (with ``--evaluation``) ship it into the engine's
weights with a model card whose table is generated from the validation JSON (no figure typed by hand).

    python -m training.voting.ship --run training/runs/voting --to training/runs/voting/export
    python -m training.voting.ship --run training/runs/voting --evaluation training/runs/voting/eval_val.json \
        training/runs/voting/eval_val_zeroshot.json

``--members`` instead of ``--run``: exported networks of one recipe (different seeds) combined into one ensemble
whose probabilities the engine averages (each member's weights copied, its sha256 in the manifest):

    python -m training.voting.ship --members SAMBASegmentLib/weights/voting training/runs/voting_seed3/export \
        --to training/runs/voting_ensemble
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from SAMBASegmentLib.voting.fusion import (INPUT_CHANNELS, RELATIVE_INTENSITIES, TRAINED_SPACING, VOTING_DIR,
                                           manifest_members)
from SAMBASegmentLib.voting.network import DEFAULT_NORMALISATION, OUTPUT_REGIONS, VotingUNet3D, parameter_count
from SAMBASegmentLib.weights import sha256_of, verify_sha256

from ..ship import LICENCES
from ..split import SPLIT_PATH, load_split
from .evaluate import format_table
from .train import MAX_BORDER_SHIFT, MaskNoise, trained_weights

WEIGHTS_FILE = "voting_unet3d.safetensors"
ZERO_SHOT_ENGINE = "litemedsam (zero-shot)"  # the SAM of mask caches that do not record theirs
AS_NORMALISED = "as_normalised"  # the manifest's "intensities" for a network that sees the normalised images
MEMBER_KEYS = ("file", "sha256", "bytes", "steps", "training_settings")  # what differs between an ensemble's members
TRAINING_SETTINGS = ("steps", "batch", "lr", "seed", "drop", "mask_noise", "max_border_shift", "inward_share",
                     "same_direction", "cache", "relative_intensities", "init", "init_sha256", "schedule",
                     "average_every")


def export(run: Path, destination: Path) -> dict:
    settings = json.loads((run / "settings.json").read_text())
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    normalisation = settings.get("normalisation", DEFAULT_NORMALISATION)
    model = VotingUNet3D(INPUT_CHANNELS, tuple(settings["widths"]), normalisation=normalisation)
    model.load_state_dict(trained_weights(state, model))
    destination.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(destination / WEIGHTS_FILE))
    manifest = {
        "file": WEIGHTS_FILE, "sha256": sha256_of(destination / WEIGHTS_FILE),
        "bytes": (destination / WEIGHTS_FILE).stat().st_size,
        "architecture": f"3D U-Net, {normalisation} norm, LeakyReLU, max-pool down, transposed-conv up",
        "normalisation": normalisation,
        "widths": settings["widths"], "parameters": parameter_count(model), "patch": settings["patch"],
        "spacing_mm": list(TRAINED_SPACING),
        "inputs": "4 normalised images, 4 binary SAM masks, 4 presence flags (FLAIR, T1, T1ce, T2)",
        "intensities": RELATIVE_INTENSITIES if settings.get("relative_intensities") else AS_NORMALISED,
        "outputs": list(OUTPUT_REGIONS), "steps": int(state["step"]),
        "trained_on": f"{len(settings['cases'])} BraTS training cases, SAM masks from box3d/jittered/auto prompts",
        "training_cases": settings["cases"], "never_seen": load_split(SPLIT_PATH)["validation"],
        "mask_variants": settings["variants"],
        "training_masks": _sam_of(Path(settings["cache"])),
        "training_settings": {  # folders by name, not this machine's path
            k: Path(settings[k]).name if k in ("cache", "init") and settings[k] else settings[k]
            for k in TRAINING_SETTINGS if k in settings},
        "licence": "Apache-2.0 (code); weights for research use only (training data licences)",
        "data_licences": LICENCES,
    }
    (destination / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def combine(members: list[Path], destination: Path) -> dict:
    """One manifest for several exported networks of the same architecture, inputs and training cases: the engine
    averages their probabilities. Each member's weights are copied under its seed's name."""
    if destination.resolve() in {folder.resolve() for folder in members}:
        raise ValueError(f"{destination} holds a member; combine into another folder (copy the member elsewhere first)")
    defaults = {"normalisation": DEFAULT_NORMALISATION, "intensities": AS_NORMALISED}  # older manifests omit them
    manifests = [{**defaults, **json.loads((folder / "manifest.json").read_text())} for folder in members]
    for folder, manifest in zip(members, manifests):
        if "members" in manifest:
            raise ValueError(f"{folder} is already an ensemble; give its members' exports instead")
    shared = {k: v for k, v in manifests[0].items() if k not in MEMBER_KEYS}
    for folder, manifest in zip(members[1:], manifests[1:]):
        differing = sorted(k for k in {*shared, *manifest} - set(MEMBER_KEYS) if manifest.get(k) != shared.get(k))
        if differing:
            raise ValueError(f"{folder} differs from {members[0]} in {', '.join(differing)}: "
                             "not members of one ensemble")
    destination.mkdir(parents=True, exist_ok=True)
    entries = []
    for index, (folder, manifest) in enumerate(zip(members, manifests)):
        name = f"voting_unet3d_{index}_seed{manifest.get('training_settings', {}).get('seed', 'unknown')}.safetensors"
        shutil.copyfile(verify_sha256(folder / manifest["file"], manifest["sha256"]), destination / name)
        entries.append({**{k: manifest[k] for k in MEMBER_KEYS if k in manifest}, "file": name})
    manifest = {**shared, "members": entries}
    (destination / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _sam_of(cache: Path | None) -> str:
    """Which SAM produced a mask cache and in how many views, as the cache's settings record it (no cache, or one
    written before it recorded them: zero-shot axial masks)."""
    settings_file = cache / "settings.json" if cache else None
    settings = json.loads(settings_file.read_text()) if settings_file and settings_file.is_file() else {}
    views = ", each checked in three views" if settings.get("views", 1) == 3 else ", axial only"
    return settings.get("engine", ZERO_SHOT_ENGINE) + views


def _masks_of(evaluation: dict) -> str:
    """Which SAM produced the masks an evaluation fused."""
    cache = Path(evaluation.get("masks", "training/cache/voting_masks"))
    return f"SAM masks from {_sam_of(cache)} (`--cache {cache.name}`)"


def model_card(manifest: dict, evaluations: list[dict]) -> str:
    members = manifest_members(manifest)
    trained = members[0].get("training_settings", {})
    # networks shipped before the manifest said so were trained on zero-shot axial masks
    training_masks = manifest.get("training_masks") or _sam_of(None)
    mask_noise = trained.get("mask_noise", 0.0)
    inwards = trained.get("inward_share", MaskNoise.inward_share)
    together = ", every modality of a patch the same way" if trained.get("same_direction") else ""
    shift = trained.get("max_border_shift", MAX_BORDER_SHIFT)
    border_noise = (f"\nEach modality's SAM mask had its border moved by 1-{shift} voxels ({inwards:.0%} of the time "
                    f"inwards{together}) in {mask_noise:.0%} of the patches,\nso the network learns to place a border "
                    "from the image rather than copy SAM's." if mask_noise else "")
    tables = "\n\n".join(f"{_masks_of(e)}:\n\n{format_table(e['summary'])}" for e in evaluations)
    network = f"A {manifest['parameters']:,}-parameter 3D U-Net (widths {manifest['widths']})"
    if len(members) > 1:
        seeds = " and ".join(str(m.get("training_settings", {}).get("seed")) for m in members)
        network = (f"An ensemble of {len(members)} 3D U-Nets of {manifest['parameters']:,} parameters (widths "
                   f"{manifest['widths']}), trained alike from seeds {seeds}, whose probabilities are averaged,")
    weights = "; ".join(f"`{m['file']}` ({m['bytes'] / 1e6:.2f} MB, safetensors, sha256 `{m['sha256']}`)"
                        for m in members)
    return f"""# Voting network (NETC / SNFH / ET from per-modality SAM masks)

{network} that reads the four normalised
modalities, each modality's binary SAM mask and a presence flag per modality, and predicts the nested BraTS
regions WT ⊇ TC ⊇ ET, decoded top-down so the hierarchy always holds (`SAMBASegmentLib/voting`).
Weights: {weights}.

## Training
{members[0]['steps']} steps of {manifest['patch']}³ patches around the tumour (Dice + BCE, AdamW, cosine decay) on the SAM masks that the
engine produced for {len(manifest['training_cases'])} training cases with the clinician's `box3d` box, two jittered
copies of it and the detector's automatic prompts (`python -m training.voting.masks`, then
`python -m training.voting.train`, the recipe in `training/README.md`). Modalities were dropped at random in
training (`--drop` {trained.get('drop')}: the chances of dropping one, two, three),
so a missing modality is an expected input and one modality's image and mask alone give a whole tumour (the
automatic path's).{border_noise}
Validation cases (never trained on):
{', '.join(manifest['never_seen'])}.

## Validation (the {len(manifest['never_seen'])} cases above)
`python -m training.voting.evaluate --network SAMBASegmentLib/weights/voting [--cache ...]` (legacy Dice, HD95 in mm,
BraTS 2023 lesion-wise Dice). `rule` = WT from the FLAIR and T2 masks (voxels where at least half of them,
i.e. either, say tumour), TC = T1ce mask inside WT, ET = TC voxels above T1ce's Otsu threshold in TC.
`flair_sam` = the FLAIR SAM mask alone (WT only); `flair_network` = the network's whole tumour from the FLAIR image
and mask alone (what `samba evaluate|segment --prompt auto` report). The engine applies the shipped SAM adapter and
checks each mask in three views by default, so `samba evaluate --refine` fuses the adapter's three-view masks;
`--views 1` fuses axial masks and `--no-adapter` zero-shot ones (the network was trained on masks from
{training_masks}).

{tables}

## Inference
Sliding {manifest['patch']}³ windows (half overlap, logits averaged) over the bounding box of the union of the SAM
masks plus 12 voxels, probabilities averaged over the four front-back/left-right flips it was trained with; a
whole-tumour component is kept only if at least half of the modalities' SAM masks agree on one of its voxels (the
network refines SAM's lesions, it does not add new ones, and a piece that one modality's mask leaked into is what an
annotator would erase; since 2026-12-06, before which any mask touching it sufficed: on the zero-shot axial masks of
the validation cases legacy Dice unchanged, lesion-wise WT Dice box3d 0.787 → 0.886, auto 0.679 → 0.767;
`training/README.md`); specks of ≤ 50 mm³ are removed region by region, keeping the nesting.

## Limits
- Six validation cases: differences of a few hundredths are within case-to-case noise; cases with a tiny
  enhancing part (Brats18_TCIA10_637_1: 1,585 ET voxels) pull the ET mean down.
- Trained on 1 mm isotropic, skull-stripped adult glioma (BraTS 2013/2018) with masks from {training_masks};
  volumes whose voxels differ by more than 20 % are fused on a 1 mm grid (SimpleITK, linear / nearest) and
  the label brought back. `samba` checks each mask in three views before fusing it (`SAMBASegmentLib/multiview.py`,
  `--views 1` to skip), and the tables above say which masks each figure fused.
- The automatic-prompt masks of the training cases come from a detector trained on those same cases, so they
  are better than on new cases.

## Licences
Code: Apache-2.0. Training data: {manifest['data_licences']}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", type=Path, default=Path("training/runs/voting"))
    source.add_argument("--members", type=Path, nargs="+", help="exported networks to ship as one ensemble")
    parser.add_argument("--to", type=Path, default=VOTING_DIR)
    parser.add_argument("--evaluation", type=Path, nargs="+",
                        help="validation JSONs of training.voting.evaluate (one per mask cache): writes the card")
    args = parser.parse_args(argv)
    manifest = combine(args.members, args.to) if args.members else export(args.run, args.to)
    if args.evaluation:
        (args.to / "MODEL_CARD.md").write_text(model_card(manifest, [json.loads(p.read_text()) for p in args.evaluation]))
    for member in manifest_members(manifest):
        print(f"{args.to}: {member['file']} sha256 {member['sha256'][:16]}…")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
