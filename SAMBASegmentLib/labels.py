"""Label conventions and tumour regions.

Internally every label map uses the BraTS 2023 convention: 0 background, 1 NETC, 2 SNFH, 3 ET.
Regions: WT = {1, 2, 3}, TC = {1, 3}, ET = {3}.
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from .errors import LabelError


class LabelConvention(str, Enum):
    BRATS2023 = "brats2023"  # 1 NETC, 2 SNFH, 3 ET (GLI, SSA/Africa)
    BRATS2021 = "brats2021"  # 1 NCR, 2 ED, 4 ET (2017-2021)
    LEGACY5 = "legacy5"  # 2012-2015: 1 necrosis, 2 edema, 3 non-enhancing, 4 enhancing


NETC, SNFH, ET_LABEL = 1, 2, 3
CLASS_NAMES: dict[int, str] = {NETC: "NETC", SNFH: "SNFH", ET_LABEL: "ET"}
# Colours of the BraTS figures (and Slicer's GenericAnatomyColors-like choices): RGB in [0, 1].
CLASS_COLOURS: dict[str, tuple[float, float, float]] = {
    "NETC": (1.0, 0.0, 0.0),
    "SNFH": (0.0, 0.8, 0.0),
    "ET": (1.0, 1.0, 0.0),
}
REGIONS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
# SAM's binary result is the whole tumour; orange keeps it apart from the three class colours.
WHOLE_TUMOUR_COLOUR: tuple[float, float, float] = (1.0, 0.55, 0.0)

_MAPPINGS: dict[LabelConvention, dict[int, int]] = {
    LabelConvention.BRATS2023: {1: 1, 2: 2, 3: 3},
    LabelConvention.BRATS2021: {1: 1, 2: 2, 4: 3},
    LabelConvention.LEGACY5: {1: 1, 2: 2, 3: 1, 4: 3},  # non-enhancing belongs to the core
}


def detect_convention(values: set[int]) -> LabelConvention:
    """Guess the convention from the label values present (3 and 4 together can only be the legacy one)."""
    if 3 in values and 4 in values:
        return LabelConvention.LEGACY5
    if 4 in values:
        return LabelConvention.BRATS2021
    return LabelConvention.BRATS2023


def to_internal(
    label: np.ndarray, convention: LabelConvention | str | None = None, source: str = "label map"
) -> tuple[np.ndarray, LabelConvention]:
    """Convert a label map to the internal (2023) convention; the convention is detected unless given."""
    values = {int(v) for v in np.unique(label)} - {0}
    convention = LabelConvention(convention) if convention else detect_convention(values)
    mapping = _MAPPINGS[convention]
    unknown = values - set(mapping)
    if unknown:
        raise LabelError(
            f"{source}: values {sorted(unknown)} do not exist in the {convention.value} convention "
            f"(expected {sorted(mapping)})"
        )
    out = np.zeros(label.shape, dtype=np.uint8)
    for source_value, internal_value in mapping.items():
        out[label == source_value] = internal_value
    return out, convention


def from_internal(label: np.ndarray, convention: LabelConvention | str = LabelConvention.BRATS2023) -> np.ndarray:
    """Write-out form: 2023 by default; 2021 maps ET back to 4. The legacy convention is read-only."""
    convention = LabelConvention(convention)
    if convention == LabelConvention.BRATS2023:
        return label.astype(np.uint8)
    if convention == LabelConvention.BRATS2021:
        out = label.astype(np.uint8)
        out[label == ET_LABEL] = 4
        return out
    raise LabelError("labels are written in the brats2023 or brats2021 convention, not the legacy one")


def region_mask(label: np.ndarray, region: str) -> np.ndarray:
    """Boolean mask of WT, TC or ET from an internal label map."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; expected one of {list(REGIONS)}")
    return np.isin(label, REGIONS[region])
