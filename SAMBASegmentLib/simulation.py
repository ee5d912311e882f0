"""A simulated clinician: prompts derived from a ground-truth mask, for evaluation and training.

- ``box2d``: a box (tight + 5 px) on every slice with at least 10 tumour voxels;
- ``box3d``: one box on the slice of largest tumour area, plus the tumour's slice range (the real workflow);
- ``points``: one positive click per tumour slice at the maximum of the distance transform;
- corrective clicks (CVPR 2025 interactive protocol): at the centre of the largest error component, positive
  when it lies in missed tumour, negative otherwise;
- a painted leak: a disc of healthy brain beside the tumour added to a mask on several slices, the error a negative
  click must remove (what an annotator's stray brush stroke or SAM's leak into a neighbour looks like).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .prompts import Box3D, SlicePrompt, bounding_box, expand_box, in_plane_axes, interior_point

BOX_MARGIN = 5
MIN_SLICE_VOXELS = 10


def _areas(truth: np.ndarray, axis: int) -> np.ndarray:
    return truth.sum(axis=in_plane_axes(axis))


def tumour_slices(truth: np.ndarray, axis: int, min_voxels: int = MIN_SLICE_VOXELS) -> list[int]:
    return [int(i) for i in np.nonzero(_areas(truth, axis) >= min_voxels)[0]]


def box2d_prompts(truth: np.ndarray, axis: int, margin: int = BOX_MARGIN) -> dict[int, list[SlicePrompt]]:
    prompts = {}
    for index in tumour_slices(truth, axis):
        plane = np.take(truth, index, axis=axis)
        prompts[index] = [SlicePrompt(box=expand_box(bounding_box(plane), margin, plane.shape))]
    return prompts


def point_prompts(truth: np.ndarray, axis: int) -> dict[int, list[SlicePrompt]]:
    prompts = {}
    for index in tumour_slices(truth, axis):
        row, col = interior_point(np.take(truth, index, axis=axis))
        prompts[index] = [SlicePrompt(points=((row, col),), point_labels=(1,))]
    return prompts


@dataclass(frozen=True)
class Box3DPrompt:
    """What a clinician gives in the box3d workflow: the 3D box and the slice she drew it on."""

    box: Box3D
    seed_index: int
    seed_box: tuple[int, int, int, int]


def box3d_prompt(truth: np.ndarray, axis: int, margin: int = BOX_MARGIN) -> Box3DPrompt:
    """Box drawn on the slice of largest tumour area; the slice range spans the tumour."""
    areas = _areas(truth, axis)
    seed = int(np.argmax(areas))
    plane = np.take(truth, seed, axis=axis)
    seed_box = expand_box(bounding_box(plane), margin, plane.shape)
    present = np.nonzero(areas)[0]
    lo, hi = [0, 0, 0], [0, 0, 0]
    row_axis, col_axis = in_plane_axes(axis)
    lo[axis], hi[axis] = int(present.min()), int(present.max())
    lo[row_axis], lo[col_axis], hi[row_axis], hi[col_axis] = seed_box
    return Box3DPrompt(Box3D(tuple(lo), tuple(hi)), seed, seed_box)


@dataclass(frozen=True)
class Click:
    """``index``: the clicked voxel, (k, j, i) in a volume or (row, col) on a slice."""

    index: tuple[int, ...]
    positive: bool


def corrective_click(prediction: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> Click | None:
    """The next click of the CVPR 2025 protocol, or None when the prediction is already perfect.

    Works on volumes (26-connected errors) and on slices (8-connected): evaluation and training click alike.
    """
    errors = prediction.astype(bool) ^ truth.astype(bool)
    if not errors.any():
        return None
    components, _ = ndimage.label(errors, ndimage.generate_binary_structure(errors.ndim, errors.ndim))
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    label = int(np.argmax(sizes))
    region = ndimage.find_objects((components == label).astype(np.int32))[0]  # crop: the distance transform of a box, not a head
    offset = interior_point(components[region] == label, spacing)
    index = tuple(int(o + r.start) for o, r in zip(offset, region))
    return Click(index, bool(truth[index]))


def painted_leak(truth: np.ndarray, segmented: np.ndarray, image: np.ndarray, radius: int = 6
                 ) -> tuple[tuple[int, int], np.ndarray]:
    """A disc centred in healthy brain beside the tumour, for slices stacked along axis 0 (``truth``, ``segmented``
    and ``image`` all cropped to those slices): its centre (row, col) and its 2D mask. The centre is the brain pixel
    closest to the tumour and the segmentation of all slices while at least 3 px from both and 10 px inside the
    brain, so the disc is an error beside the tumour rather than a blob in empty space; it may overlap the mask's
    edge, and only its part outside the mask is the leak."""
    away = ndimage.distance_transform_edt(~np.any(truth | segmented, axis=0))
    brain = np.all(image > 0, axis=0)
    candidates = np.argwhere((away >= 3) & (ndimage.distance_transform_edt(brain) >= 10))
    if not len(candidates):
        raise ValueError("no healthy brain 3 px beside the tumour and 10 px inside the brain on these slices")
    row, col = (int(v) for v in candidates[np.argmin(away[tuple(candidates.T)])])
    rows, cols = np.ogrid[: truth.shape[1], : truth.shape[2]]
    return (row, col), (rows - row) ** 2 + (cols - col) ** 2 <= radius**2
