"""Shared by every test folder: where the real BraTS cases are.

The tests need ../shared/data/brats (or $SAMBA_DATA_DIR). Missing data is a failure, never a skip: CI must not
pass by testing nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SAMBASegmentLib.volumes import LABEL_KEY, find_case_files

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


SLAB_SLICES = 15  # the tumour's largest slice and 7 either side: a real case end to end at a fraction of the calls


def write_slab(case_dir: Path, target: Path) -> Path:
    """A copy of a case cut to ``SLAB_SLICES`` axial slices centred on the tumour's largest slice, every file on the
    same cut grid (SimpleITK keeps each voxel's physical position), under the original names: a real case that the
    whole pipeline loads like any other, at a fraction of the encoder calls of the full tumour."""
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(find_case_files(case_dir)[LABEL_KEY])))
    centre = int(np.argmax((label > 0).sum(axis=(1, 2))))
    first = max(0, centre - SLAB_SLICES // 2)
    target.mkdir(parents=True)
    for path in sorted(case_dir.glob("*.nii.gz")):
        image = sitk.ReadImage(str(path))
        sitk.WriteImage(image[:, :, first:first + SLAB_SLICES], str(target / path.name))
    return target


@pytest.fixture(scope="session")
def slab_case(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``slab_case(name)``: the folder of that case's axial slab (``write_slab``), written once a session."""
    written: dict[str, Path] = {}

    def folder(name: str) -> Path:
        if name not in written:
            written[name] = write_slab(data_dir / name, tmp_path_factory.mktemp("slabs") / name)
        return written[name]

    return folder
