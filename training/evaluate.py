"""Zero-shot versus adapters on the validation cases, with the engine's own evaluation (``evaluate_case``).

This is what ``samba evaluate`` computes, for several models in one pass: adapters that leave the image encoder
unchanged (all decoder-side ones: every encoder LoRA B matrix zero) share one embedding cache per case, so each
slice is encoded once for all models and prompt modes. Adapters that change the encoder get an engine of their
own. A ``multiclass`` adapter is scored per class (NETC/SNFH/ET, regions TC/ET) with a box on every tumour slice.

    python -m training.evaluate --adapter lora=training/runs/lora/adapter --modality flair --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.metrics import region_scores
from SAMBASegmentLib.pipeline import evaluate_case
from SAMBASegmentLib.sam import SamEngine, load_sam
from SAMBASegmentLib.sam.multiclass import segment_classes
from SAMBASegmentLib.simulation import box2d_prompts
from SAMBASegmentLib.volumes import Case, load_case

from .split import DEFAULT_DATA_DIR, case_dirs

PROMPT_CONFIGS = {"box2d": ("box2d", 0), "box3d": ("box3d", 0), "points": ("points", 0), "points+3": ("points", 3),
                  "box3d+3": ("box3d", 3)}
DECODER_SIDE = ("prompt_encoder", "mask_decoder")
SCORED_REGIONS = ("WT", "TC", "ET", "NETC", "SNFH")


def _same_encoder(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.image_encoder.state_dict(), b.image_encoder.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class ModelBank:
    """Decoder-side weights of every model, swapped into one engine; encoder-changing models get their own."""

    def __init__(self, adapters: dict[str, Path]):
        self.shared = SamEngine.create(adapter=None, device="cpu")
        self.states: dict[str, dict] = {"zero-shot": self._decoder_side(self.shared.sam.model)}
        self.own: dict[str, SamEngine] = {}
        for name, path in adapters.items():
            loaded = load_sam(adapter=path, device="cpu")
            if _same_encoder(loaded.model, self.shared.sam.model):
                self.states[name] = self._decoder_side(loaded.model)
            else:
                self.own[name] = SamEngine(loaded, "cpu", self.shared.bf16)

    @staticmethod
    def _decoder_side(model: torch.nn.Module) -> dict:
        return {part: {k: v.clone() for k, v in getattr(model, part).state_dict().items()} for part in DECODER_SIDE}

    @property
    def names(self) -> list[str]:
        return list(self.states) + list(self.own)

    def engine(self, name: str) -> SamEngine:
        if name in self.own:
            return self.own[name]
        for part in DECODER_SIDE:
            getattr(self.shared.sam.model, part).load_state_dict(self.states[name][part])
        return self.shared

    def clear(self) -> None:
        for engine in [self.shared, *self.own.values()]:
            engine.clear_cache()


def multiclass_scores(engine: SamEngine, case: Case, modality: str) -> dict:
    """Per-class figures of a multiclass adapter: a box (tight + 5 px) of the whole tumour on every tumour slice."""
    volume = case.volume(modality)
    prediction = np.zeros(case.label.shape, dtype=np.uint8)
    for index, prompts in box2d_prompts(region_mask(case.label, "WT"), 0).items():
        prediction[index] = segment_classes(engine, volume, 0, index, prompts[0].box)
    scores = region_scores(prediction, case.label, case.spacing, regions=("WT", "TC", "ET"))
    for value, name in ((1, "NETC"), (2, "SNFH")):
        truth, predicted = case.label == value, prediction == value
        total = truth.sum() + predicted.sum()
        scores[name] = {"dice": float(2 * (truth & predicted).sum() / total) if total else 1.0}
    return scores


def summarise(rows: list[dict]) -> dict:
    """Means over cases per model, modality and prompt configuration: Dice of every scored region, WT HD95."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(f"{row['model']}|{row['modality']}|{row['config']}", []).append(row)
    summary = {}
    for key, group in groups.items():
        entry: dict = {"cases": len(group)}
        for region in SCORED_REGIONS:
            if region in group[0]:
                entry[f"{region}_dice"] = float(np.mean([r[region]["dice"] for r in group]))
        entry["WT_hd95"] = float(np.mean([r["WT"]["hd95"] for r in group]))
        summary[key] = entry
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH", help="adapter to compare")
    parser.add_argument("--multiclass", metavar="PATH", help="a multiclass adapter, scored per class")
    parser.add_argument("--modality", action="append", help="modalities (default flair)")
    parser.add_argument("--prompts", nargs="+", default=["box2d", "box3d", "points", "points+3"], choices=PROMPT_CONFIGS)
    parser.add_argument("--cases", nargs="+", help="a subset of the validation cases (default: all of them)")
    parser.add_argument("--no-zero-shot", action="store_true",
                        help="score the adapters only (zero-shot LiteMedSAM's figures are in the model card)")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)
    adapters = {pair.split("=", 1)[0]: Path(pair.split("=", 1)[1]) for pair in args.adapter}
    if args.multiclass:
        adapters["multiclass"] = Path(args.multiclass)
    bank = ModelBank(adapters)
    rows: list[dict] = []
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    folders = case_dirs("validation", Path(args.data_dir))
    unknown = set(args.cases or []) - {f.name for f in folders}
    if unknown:
        parser.error(f"not validation cases: {sorted(unknown)}")
    for folder in [f for f in folders if not args.cases or f.name in args.cases]:
        case = load_case(folder)
        for modality in args.modality or ["flair"]:
            if modality not in case.volumes:
                print(f"{case.name}: no {modality}, skipped", file=sys.stderr)
                continue
            for name in [n for n in bank.names if not (args.no_zero_shot and n == "zero-shot")]:
                start = time.perf_counter()
                if name == "multiclass":
                    rows.append({"case": case.name, "model": name, "modality": modality, "config": "box2d-classes",
                                 **multiclass_scores(bank.engine(name), case, modality)})
                else:
                    for config in args.prompts:
                        prompt, clicks = PROMPT_CONFIGS[config]
                        result = evaluate_case(bank.engine(name), case, prompt, modality, clicks)
                        rows.append({"model": name, "config": config, **result.as_json()})
                print(f"{case.name} {modality} {name}: {time.perf_counter() - start:.0f} s "
                      + " ".join(f"{r['config']}={r['WT']['dice']:.3f}" for r in rows if r["case"] == case.name
                                 and r["model"] == name and r["modality"] == modality), flush=True)
            bank.clear()
        out.write_text(json.dumps({"rows": rows, "summary": summarise(rows)}, indent=1))
    summary = summarise(rows)
    out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    for key, value in summary.items():
        print(f"{key:40s} " + " ".join(f"{k} {v:.4f}" for k, v in value.items() if k != "cases") + f" ({value['cases']} cases)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
