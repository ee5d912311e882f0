"""Clean-up of a finished 3D mask before it is shown, written or scored."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

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
