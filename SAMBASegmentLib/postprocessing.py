"""Clean-up of a finished 3D mask before it is shown, written or scored."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .labels import ET_LABEL, NETC, SNFH

# BraTS ignores true lesions this small; predicted specks this small are SAM noise at slice edges, and each one
# would count as a whole false-positive lesion in the lesion-wise metrics.
MIN_COMPONENT_MM3 = 50.0
_CONNECTIVITY_26 = ndimage.generate_binary_structure(3, 3)


def remove_small_components(mask: np.ndarray, spacing: tuple[float, float, float],
                            min_volume_mm3: float = MIN_COMPONENT_MM3) -> np.ndarray:
    """A copy of ``mask`` without its 26-connected components of at most ``min_volume_mm3``."""
    components, count = ndimage.label(mask, _CONNECTIVITY_26)
    if count == 0:
        return mask.astype(bool)
    sizes = np.bincount(components.ravel()) * float(np.prod(spacing))
    keep = sizes > min_volume_mm3
    keep[0] = False
    return keep[components]


def remove_small_regions(label: np.ndarray, spacing: tuple[float, float, float],
                         min_volume_mm3: float = MIN_COMPONENT_MM3) -> np.ndarray:
    """An internal label map (1 NETC, 2 SNFH, 3 ET) without specks, region by region from the outside in:
    a speck of WT is dropped with what it holds, a speck of TC becomes SNFH, a speck of ET becomes NETC. Nesting
    (ET ⊆ TC ⊆ WT) is kept."""
    whole = remove_small_components(label > 0, spacing, min_volume_mm3)
    core = remove_small_components(whole & ((label == NETC) | (label == ET_LABEL)), spacing, min_volume_mm3)
    enhancing = remove_small_components(core & (label == ET_LABEL), spacing, min_volume_mm3)
    cleaned = np.zeros(label.shape, dtype=np.uint8)
    cleaned[whole] = SNFH
    cleaned[core] = NETC
    cleaned[enhancing] = ET_LABEL
    return cleaned
