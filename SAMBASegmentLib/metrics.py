"""Segmentation metrics: Dice, HD95 in mm, and the BraTS 2023 lesion-wise Dice / HD95.

Conventions follow the BraTS 2023 evaluation: both masks empty → Dice 1, HD95 0; exactly one empty → Dice 0,
HD95 374 mm (the value BraTS gives an unmatched lesion).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .labels import REGIONS, region_mask

EMPTY_HD95_MM = 374.0
LESION_DILATION_VOXELS = 3
LESION_MIN_VOLUME_MM3 = 50.0
_CONNECTIVITY_26 = ndimage.generate_binary_structure(3, 3)
_DILATION_STRUCTURE = ndimage.generate_binary_structure(3, 2)


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    prediction, truth = prediction.astype(bool), truth.astype(bool)
    total = int(prediction.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(prediction, truth).sum()) / total


def _surface(mask: np.ndarray) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _directed_surface_distances(source: np.ndarray, target: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distance (mm) from each surface voxel of ``source`` to the nearest surface voxel of ``target``."""
    target_surface = _surface(target)
    distance_to_target = ndimage.distance_transform_edt(~target_surface, sampling=spacing)
    return distance_to_target[_surface(source)]


def hd95(prediction: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (max of the two directed 95th percentiles)."""
    prediction, truth = prediction.astype(bool), truth.astype(bool)
    if not prediction.any() and not truth.any():
        return 0.0
    if not prediction.any() or not truth.any():
        return EMPTY_HD95_MM
    # Both masks lie inside their joint bounding box, so every nearest surface voxel does too: crop (1 voxel of
    # padding keeps the erosion's border right) and the distance transforms shrink from a head to a tumour.
    region = ndimage.find_objects((prediction | truth).astype(np.int8))[0]
    padded = tuple(slice(max(r.start - 1, 0), r.stop + 1) for r in region)
    prediction, truth = np.pad(prediction[padded], 1), np.pad(truth[padded], 1)
    forward = _directed_surface_distances(prediction, truth, spacing)
    backward = _directed_surface_distances(truth, prediction, spacing)
    return float(max(np.percentile(forward, 95), np.percentile(backward, 95)))


@dataclass
class LesionWiseScore:
    dice: float
    hd95: float
    true_lesions: int
    false_positive_lesions: int


def lesion_wise(prediction: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> LesionWiseScore:
    """BraTS 2023 lesion-wise Dice and HD95.

    GT lesions are 26-connected components; lesions whose dilated (3 voxels) footprints touch are merged;
    each GT lesion is scored against every predicted component that meets its dilated footprint; GT lesions
    of at most 50 mm³ are dropped; every predicted component that meets no GT lesion counts as Dice 0,
    HD95 374.
    """
    prediction, truth = prediction.astype(bool), truth.astype(bool)
    if not truth.any():
        return LesionWiseScore(1.0 if not prediction.any() else 0.0, 0.0 if not prediction.any() else EMPTY_HD95_MM, 0,
                               int(ndimage.label(prediction, _CONNECTIVITY_26)[1]))
    voxel_volume = float(np.prod(spacing))
    predicted_components, _ = ndimage.label(prediction, _CONNECTIVITY_26)
    dilated = ndimage.binary_dilation(truth, _DILATION_STRUCTURE, iterations=LESION_DILATION_VOXELS)
    dilated_components, lesion_count = ndimage.label(dilated, _CONNECTIVITY_26)
    merged_lesions = dilated_components * truth  # each GT voxel takes the id of its dilated footprint
    matched: set[int] = set()
    scores: list[tuple[float, float]] = []
    for lesion_id in range(1, lesion_count + 1):
        lesion = merged_lesions == lesion_id
        touching = set(np.unique(predicted_components[dilated_components == lesion_id]).tolist()) - {0}
        matched |= touching
        if lesion.sum() * voxel_volume <= LESION_MIN_VOLUME_MM3:
            continue
        matched_prediction = np.isin(predicted_components, list(touching)) if touching else np.zeros_like(truth)
        scores.append((dice(matched_prediction, lesion), hd95(matched_prediction, lesion, spacing)))
    false_positives = len(set(np.unique(predicted_components).tolist()) - {0} - matched)
    count = len(scores) + false_positives
    if count == 0:
        return LesionWiseScore(1.0, 0.0, 0, 0)
    dice_sum = sum(s[0] for s in scores)
    hd_sum = sum(s[1] for s in scores) + EMPTY_HD95_MM * false_positives
    return LesionWiseScore(dice_sum / count, hd_sum / count, len(scores), false_positives)


def region_scores(
    prediction_label: np.ndarray, truth_label: np.ndarray, spacing: tuple[float, ...], regions: tuple[str, ...] = tuple(REGIONS)
) -> dict[str, dict[str, float]]:
    """Legacy and lesion-wise Dice / HD95 per region, from two internal label maps."""
    result: dict[str, dict[str, float]] = {}
    for region in regions:
        predicted, true = region_mask(prediction_label, region), region_mask(truth_label, region)
        lesions = lesion_wise(predicted, true, spacing)
        result[region] = {
            "dice": dice(predicted, true),
            "hd95": hd95(predicted, true, spacing),
            "lesion_dice": lesions.dice,
            "lesion_hd95": lesions.hd95,
        }
    return result
