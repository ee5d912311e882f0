"""The fixed case split (training/split.json): validation cases are never trained on."""

from __future__ import annotations

import json
import os
from pathlib import Path

TRAINING_DIR = Path(__file__).resolve().parent
REPOSITORY_ROOT = TRAINING_DIR.parent
SPLIT_PATH = TRAINING_DIR / "split.json"
DEFAULT_DATA_DIR = Path(os.environ.get("SAMBA_DATA_DIR", REPOSITORY_ROOT.parent / "shared" / "data" / "brats"))


def load_split(path: Path = SPLIT_PATH) -> dict[str, list[str]]:
    """Training and validation case names; refuses a split where a case is on both sides."""
    split = json.loads(Path(path).read_text())
    overlap = set(split["training"]) & set(split["validation"])
    if overlap:
        raise ValueError(f"{path}: cases on both sides of the split: {sorted(overlap)}")
    return {"training": list(split["training"]), "validation": list(split["validation"])}


def case_dirs(side: str, data_dir: Path = DEFAULT_DATA_DIR) -> list[Path]:
    """Folders of one side of the split; a missing folder is an error, not a smaller data set."""
    folders = [Path(data_dir) / name for name in load_split()[side]]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise FileNotFoundError(f"case folders of the {side} split not found: {missing} "
                                "(set SAMBA_DATA_DIR to the folder holding the BraTS cases)")
    return folders
