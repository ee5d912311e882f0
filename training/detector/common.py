"""Paths and the case roles of the detector work, all derived from the fixed split (training/split.json).

Ultralytics picks its best checkpoint on a validation set, so that set must not be the split's validation cases:
three training-side cases are held out as the *tune* set (checkpoint choice, thresholds); the split's validation
cases are only ever used to report figures.
"""

from __future__ import annotations

from pathlib import Path

from training.split import DEFAULT_DATA_DIR, REPOSITORY_ROOT, load_split

RUNS_DIR = REPOSITORY_ROOT / "training" / "runs" / "detector"
DATASET_DIR = RUNS_DIR / "dataset"
# Held out from the training side: one 2013, one TCIA GBM, one LGG case.
TUNE_CASES: tuple[str, ...] = ("Brats18_2013_3_1", "Brats18_TCIA01_378_1", "Brats18_TCIA13_623_1")
VIEWS: dict[str, int] = {"axial": 0, "coronal": 1, "sagittal": 2}


def case_roles() -> dict[str, list[str]]:
    """train / tune (both from the split's training side) and val (the split's validation cases)."""
    split = load_split()
    missing = set(TUNE_CASES) - set(split["training"])
    if missing:
        raise ValueError(f"tune cases must come from the training side of the split: {sorted(missing)}")
    return {"train": [c for c in split["training"] if c not in TUNE_CASES], "tune": list(TUNE_CASES),
            "val": list(split["validation"])}


def case_folder(name: str, data_dir: Path = DEFAULT_DATA_DIR) -> Path:
    folder = Path(data_dir) / name
    if not folder.is_dir():
        raise FileNotFoundError(f"case folder not found: {folder} (set SAMBA_DATA_DIR to the BraTS cases)")
    return folder
