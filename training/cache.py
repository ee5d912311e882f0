"""Embedding cache: every training slice encoded once by the frozen image encoder, stored fp16 on disk.

The encoder is ~95 % of SAM's cost; with its output cached, a decoder-side training step costs a fraction of a
second on a CPU. Embeddings come from the engine itself (``SamEngine.embedding``: same framing, normalisation
and bf16 autocast as at inference). Building is resumable: slices are encoded in order and the count of
finished ones is saved after every chunk.

    python -m training.cache --out training/cache/default [--slices-per-case 60] [--synthetic 120] [--degrade-fraction 0.3]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from SAMBASegmentLib.volumes import ScalarVolume

from .dataset import BuilderSettings, SliceRecord, slices_of_case
from .split import DEFAULT_DATA_DIR, SPLIT_PATH, case_dirs, load_split
from .synthesis import SynthesisSettings, save_sheet, synthesize_many

log = logging.getLogger(__name__)
FRAME = 256  # images and labels are stored top-left in a FRAME x FRAME buffer (BraTS slices are 240 x 240 / 240 x 155)
EMBEDDING_SHAPE = (256, 64, 64)


@dataclass(frozen=True)
class CacheSettings:
    builder: BuilderSettings = field(default_factory=BuilderSettings)
    synthesis: SynthesisSettings = field(default_factory=SynthesisSettings)
    synthetic: int = 120
    seed: int = 0


def collect_records(folders: list[Path], settings: CacheSettings) -> tuple[list[SliceRecord], list[SliceRecord], int]:
    """Real slices of every training case plus synthetic ones; returns (records, exemplars, labelled slices)."""
    rng = np.random.default_rng(settings.seed)
    records, exemplars, recipients, available = [], [], [], 0
    for folder in folders:
        found = slices_of_case(folder, settings.builder, rng)
        records += found.records
        exemplars += found.exemplars
        recipients += found.recipients
        available += found.tumour_slices_available
        log.info("%s: %d slices, %d exemplars", folder.name, len(found.records), len(found.exemplars))
    synthetic = synthesize_many(exemplars, recipients, settings.synthetic, settings.synthesis, rng)
    return records + synthetic, exemplars, available


def _describe(record: SliceRecord) -> dict:
    return {"case": record.case, "modality": record.modality, "axis": record.axis, "index": record.index,
            "shape": list(record.image.shape), "spacing": list(record.spacing), "source": record.source,
            "tumour_pixels": int(record.tumour.sum())}


class EmbeddingCache:
    """Read side of a cache folder: slice records and their embeddings (memory-mapped)."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.entries: list[dict] = self.meta["records"]
        self._images = np.load(self.folder / "images.npy", mmap_mode="r")
        self._labels = np.load(self.folder / "labels.npy", mmap_mode="r")
        self._embeddings = np.load(self.folder / "embeddings.npy", mmap_mode="r")

    @property
    def encoded(self) -> int:
        return json.loads((self.folder / "progress.json").read_text())["encoded"]

    @property
    def complete(self) -> bool:
        return self.encoded == len(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def record(self, index: int) -> SliceRecord:
        entry = self.entries[index]
        rows, cols = entry["shape"]
        return SliceRecord(entry["case"], entry["modality"], entry["axis"], entry["index"],
                           np.asarray(self._images[index, :rows, :cols], dtype=np.float32),
                           np.asarray(self._labels[index, :rows, :cols]), tuple(entry["spacing"]), entry["source"])

    def embeddings(self, indices: list[int]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self._embeddings[i] for i in indices]).astype(np.float32))


def encode_record(engine, record: SliceRecord) -> torch.Tensor:
    """The engine's embedding of one slice (a one-slice volume: same frame as the slice of the real volume)."""
    volume = ScalarVolume(record.image[None], (1.0, *record.spacing))
    embedding = engine.embedding(volume, 0, 0)
    engine.clear_cache()
    return embedding[0]


def build_cache(out: Path, settings: CacheSettings, folders: list[Path], chunk: int = 16) -> EmbeddingCache:
    """Write (or finish) a cache folder of the slices of ``folders`` (training cases only)."""
    from SAMBASegmentLib.sam import SamEngine

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    progress_path = out / "progress.json"
    if not progress_path.is_file():
        validation = set(load_split()["validation"])
        if any(f.name in validation for f in folders):
            raise ValueError("validation cases are never trained on (training/split.json)")
        records, exemplars, available = collect_records(folders, settings)
        images = np.lib.format.open_memmap(out / "images.npy", "w+", np.float16, (len(records), FRAME, FRAME))
        labels = np.lib.format.open_memmap(out / "labels.npy", "w+", np.uint8, (len(records), FRAME, FRAME))
        for n, record in enumerate(records):
            rows, cols = record.image.shape
            images[n, :rows, :cols], labels[n, :rows, :cols] = record.image, record.label
        images.flush(), labels.flush()
        np.lib.format.open_memmap(out / "embeddings.npy", "w+", np.float16, (len(records), *EMBEDDING_SHAPE)).flush()
        save_sheet([r for r in records if r.source == "synthetic"][:36], out / "synthesis_sheet.png")
        degraded = [r for r in records if r.source == "degraded"]
        if degraded:
            save_sheet(degraded[::max(1, len(degraded) // 36)][:36], out / "degraded_sheet.png")
        meta = {"settings": asdict(settings), "split": str(SPLIT_PATH.name), "training_cases": [f.name for f in folders],
                "exemplars": len(exemplars), "labelled_slices_available": available,
                "records": [_describe(r) for r in records]}
        (out / "meta.json").write_text(json.dumps(meta, indent=1))
        progress_path.write_text(json.dumps({"encoded": 0}))
    cache = EmbeddingCache(out)
    done = cache.encoded
    if done == len(cache):
        return cache
    engine = SamEngine.create(adapter=None, device="cpu")
    cache.meta["encoder"] = engine.describe()
    (out / "meta.json").write_text(json.dumps(cache.meta, indent=1))
    embeddings = np.load(out / "embeddings.npy", mmap_mode="r+")
    start = time.perf_counter()
    for begin in range(done, len(cache), chunk):
        end = min(begin + chunk, len(cache))
        for n in range(begin, end):
            embeddings[n] = encode_record(engine, cache.record(n)).numpy().astype(np.float16)
        embeddings.flush()
        progress_path.write_text(json.dumps({"encoded": end}))
        rate = (time.perf_counter() - start) / (end - done)
        log.info("encoded %d/%d slices (%.2f s/slice, %.0f s left)", end, len(cache), rate, rate * (len(cache) - end))
    return EmbeddingCache(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="training/cache/default")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--slices-per-case", type=int, default=BuilderSettings.slices_per_case)
    parser.add_argument("--exemplar-fraction", type=float, default=BuilderSettings.exemplar_fraction,
                        help="share of labelled slices used as synthesis exemplars (Cheap Lunch: 0.005, 0.01, 0.03)")
    parser.add_argument("--synthetic", type=int, default=CacheSettings.synthetic, help="synthetic slices to add")
    parser.add_argument("--degrade-fraction", type=float, default=BuilderSettings.degrade_fraction,
                        help="share of real slices degraded as older scanners give them (the detector's export: 0.3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.manual_seed(args.seed)
    settings = CacheSettings(BuilderSettings(slices_per_case=args.slices_per_case, exemplar_fraction=args.exemplar_fraction,
                                             degrade_fraction=args.degrade_fraction),
                             SynthesisSettings(), args.synthetic, args.seed)
    cache = build_cache(Path(args.out), settings, case_dirs("training", Path(args.data_dir)))
    print(f"{cache.folder}: {len(cache)} slices, {cache.encoded} encoded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
