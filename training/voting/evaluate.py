"""The voting network against the rule baseline (and, for WT, the FLAIR SAM mask alone and as the network redraws
it from FLAIR only: the automatic path's whole tumour) on the validation
cases, from the cached per-modality SAM masks: exactly the masks ``samba evaluate --refine`` computes for the
``box3d`` and ``auto`` prompts with the default engine (the shipped adapter; ``--cache training/cache/voting_masks``:
zero-shot LiteMedSAM's, ``--no-adapter``), without re-running SAM for every network tried.

    python -m training.voting.evaluate --network training/runs/voting/export --json training/runs/voting/eval_val.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from SAMBASegmentLib.labels import SNFH
from SAMBASegmentLib.metrics import region_scores
from SAMBASegmentLib.voting import VotingNetwork, rule_baseline
from SAMBASegmentLib.voting.fusion import VOTING_DIR
from SAMBASegmentLib.volumes import load_case

from ..split import case_dirs
from .masks import ADAPTER_MASK_CACHE, load_case_masks, mask_key

REGIONS = ("ET", "TC", "WT")
FUSIONS = ("network", "rule")


def evaluate(network: VotingNetwork, side: str = "validation", variants: tuple[str, ...] = ("box3d", "auto"),
             cache: Path = ADAPTER_MASK_CACHE) -> dict:
    rows = []
    for folder in case_dirs(side):
        case = load_case(folder)
        stored = load_case_masks(folder.name, cache)
        images = {m: v.array for m, v in case.volumes.items()}
        for variant in variants:
            masks = {m: stored[mask_key(variant, m)] for m in case.volumes}
            flair_sam = np.where(masks["flair"], SNFH, 0).astype(np.uint8)
            flair_network = np.where(network.whole_tumour("flair", images["flair"], masks["flair"], case.spacing),
                                     SNFH, 0).astype(np.uint8)
            for method, label in (("network", network.fuse(images, masks, case.spacing).label),
                                  ("rule", rule_baseline(images, masks, case.spacing).label), ("flair_sam", flair_sam),
                                  ("flair_network", flair_network)):
                regions = REGIONS if method in FUSIONS else ("WT",)
                scores = region_scores(label, case.label, case.spacing, regions)
                rows.append({"case": case.name, "prompt": variant, "method": method, **scores})
                print(f"{case.name:26s} {variant:6s} {method:9s} " + " ".join(
                    f"{r} {scores[r]['dice']:.3f}" for r in regions), file=sys.stderr, flush=True)
    summary: dict = {}
    for variant in variants:
        for method in (*FUSIONS, "flair_sam", "flair_network"):
            chosen = [r for r in rows if r["prompt"] == variant and r["method"] == method]
            regions = REGIONS if method in FUSIONS else ("WT",)
            summary[f"{variant}/{method}"] = {
                region: {metric: float(np.mean([r[region][metric] for r in chosen])) for metric in chosen[0][region]}
                for region in regions}
            if method in FUSIONS:
                summary[f"{variant}/{method}"]["mean_dice"] = float(
                    np.mean([summary[f"{variant}/{method}"][r]["dice"] for r in REGIONS]))
    return {"network": network.describe(), "side": side, "masks": str(cache), "rows": rows, "summary": summary}


def format_table(summary: dict) -> str:
    lines = ["| prompt | method | ET Dice | TC Dice | WT Dice | mean | ET HD95 | TC HD95 | WT HD95 | "
             "ET lesion Dice | TC lesion Dice | WT lesion Dice |", "|" + "---|" * 12]
    for key, scores in summary.items():
        prompt, method = key.split("/")
        cells = [scores.get(r, {}).get("dice") for r in REGIONS] + [scores.get("mean_dice")]
        cells += [scores.get(r, {}).get("hd95") for r in REGIONS] + [scores.get(r, {}).get("lesion_dice") for r in REGIONS]
        lines.append(f"| {prompt} | {method} | " + " | ".join("" if c is None else f"{c:.3f}" if c < 10 else f"{c:.1f}"
                                                               for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", type=Path, default=VOTING_DIR, help="folder with manifest.json + weights")
    parser.add_argument("--side", default="validation", choices=("training", "validation"))
    parser.add_argument("--variants", nargs="+", default=["box3d", "auto"])
    parser.add_argument("--cache", type=Path, default=ADAPTER_MASK_CACHE,
                        help="cached SAM masks (default: the default engine's; training/cache/voting_masks: zero-shot)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report = evaluate(VotingNetwork.load(args.network), args.side, tuple(args.variants), args.cache)
    print(format_table(report["summary"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
