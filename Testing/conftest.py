"""Shared by every test folder: where the real BraTS cases are.

The tests need ../shared/data/brats (or $SAMBA_DATA_DIR). Missing data is a failure, never a skip: CI must not
pass by testing nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SAMBA_DATA_DIR", REPOSITORY_ROOT.parent / "shared" / "data" / "brats"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir() or not any(DATA_DIR.iterdir()):
        pytest.fail(f"real BraTS cases not found at {DATA_DIR}: put ../shared beside the repository "
                    "or set SAMBA_DATA_DIR", pytrace=False)
    return DATA_DIR


@pytest.fixture(scope="session")
def case_dirs(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.iterdir() if p.is_dir())
