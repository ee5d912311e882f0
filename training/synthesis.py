"""Exemplar-guided synthesis (Cheap Lunch): paste transformed tumours of a few labelled slices onto
tumour-free brain slices of other cases, with their labels.

A few exemplars (0.5–3 % of the labelled slices) multiply into many training slices with new surroundings.
Image and label go through one geometric transform (label by nearest neighbour), so they stay aligned; only the
image gets the intensity change and blur. A soft alpha at the tumour's rim avoids a pasting edge SAM could learn.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from .dataset import SliceRecord


@dataclass(frozen=True)
class SynthesisSettings:
    scale: tuple[float, float] = (0.75, 1.25)
    max_rotation_degrees: float = 30.0
    flip: bool = True
    gain: tuple[float, float] = (0.85, 1.15)
    bias: tuple[float, float] = (-0.05, 0.05)
    blur_sigma: tuple[float, float] = (0.0, 1.0)
    margin: int = 3
    rim_sigma: float = 1.5
    placement_tries: int = 50


@dataclass(frozen=True)
class Placement:
    """The geometry of one synthesis: kept so tests can check what was done."""

    scale: float
    rotation_degrees: float
    flipped: bool
    top_left: tuple[int, int]


def _transform(patch: np.ndarray, matrix: np.ndarray, offset: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    return ndimage.affine_transform(patch, matrix, offset=offset, output_shape=shape, order=order, mode="constant", cval=0.0)


def transform_patch(image: np.ndarray, label: np.ndarray, alpha: np.ndarray, scale: float, degrees: float,
                    flip: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale, rotate (about the centre) and optionally flip left-right image, label and alpha identically."""
    theta = np.deg2rad(degrees)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    forward = rotation * scale @ np.diag([1.0, -1.0 if flip else 1.0])
    corners = np.array([[0, 0], [0, image.shape[1] - 1], [image.shape[0] - 1, 0], [image.shape[0] - 1, image.shape[1] - 1]])
    centre_in = (np.array(image.shape) - 1) / 2.0
    mapped = (corners - centre_in) @ forward.T
    shape = tuple(int(np.ceil(v)) + 1 for v in mapped.max(0) - mapped.min(0))
    centre_out = (np.array(shape) - 1) / 2.0
    inverse = np.linalg.inv(forward)  # affine_transform maps output coordinates to input coordinates
    offset = centre_in - inverse @ centre_out
    return (_transform(image, inverse, offset, shape, 1), _transform(label, inverse, offset, shape, 0),
            np.clip(_transform(alpha, inverse, offset, shape, 1), 0.0, 1.0))


def _brain_level(record: SliceRecord) -> float:
    healthy = record.image[record.brain & (record.label == 0)]
    return float(np.median(healthy)) if healthy.size else 1.0


def synthesize(exemplar: SliceRecord, recipient: SliceRecord, settings: SynthesisSettings, rng: np.random.Generator,
               intensity: bool = True) -> tuple[SliceRecord, Placement] | None:
    """One synthetic slice, or None when the transformed tumour fits nowhere inside the recipient's brain."""
    tumour = exemplar.label > 0
    rows, cols = np.nonzero(tumour)
    r0, c0 = max(0, rows.min() - settings.margin), max(0, cols.min() - settings.margin)
    r1, c1 = rows.max() + settings.margin + 1, cols.max() + settings.margin + 1
    image, label = exemplar.image[r0:r1, c0:c1], np.where(tumour, exemplar.label, 0)[r0:r1, c0:c1]
    alpha = np.maximum(ndimage.gaussian_filter(ndimage.binary_dilation(label > 0).astype(np.float32), settings.rim_sigma),
                       (label > 0).astype(np.float32))
    alpha[alpha < 0.01] = 0.0  # no faint Gaussian tail: the recipient is untouched beyond the rim
    scale = float(rng.uniform(*settings.scale))
    degrees = float(rng.uniform(-settings.max_rotation_degrees, settings.max_rotation_degrees))
    flipped = bool(settings.flip and rng.random() < 0.5)
    image, label, alpha = transform_patch(image, label, alpha, scale, degrees, flipped)
    if intensity:  # brain-to-brain level matching first: cases are normalised differently (z-scored or not)
        image = image * _brain_level(recipient) / _brain_level(exemplar)
        image = np.clip(image * rng.uniform(*settings.gain) + rng.uniform(*settings.bias), 0.0, 1.0)
        sigma = float(rng.uniform(*settings.blur_sigma))
        if sigma > 0:
            image = ndimage.gaussian_filter(image, sigma)
    brain = ndimage.binary_erosion(recipient.brain, iterations=2)
    height, width = label.shape
    if height >= brain.shape[0] or width >= brain.shape[1]:
        return None
    for _ in range(settings.placement_tries):
        top, left = int(rng.integers(0, brain.shape[0] - height)), int(rng.integers(0, brain.shape[1] - width))
        window = (slice(top, top + height), slice(left, left + width))
        if not np.all(brain[window][label > 0]):
            continue
        out_image, out_label = recipient.image.copy(), np.zeros_like(recipient.label)
        out_image[window] = recipient.image[window] * (1.0 - alpha) + image * alpha
        out_label[window] = label
        record = replace(recipient, case=f"{exemplar.case}>{recipient.case}", index=recipient.index,
                         image=out_image.astype(np.float32), label=out_label.astype(np.uint8), source="synthetic")
        return record, Placement(scale, degrees, flipped, (top, left))
    return None


def synthesize_many(exemplars: list[SliceRecord], recipients: list[SliceRecord], count: int,
                    settings: SynthesisSettings, rng: np.random.Generator) -> list[SliceRecord]:
    """``count`` synthetic slices: exemplars cycled, each onto a recipient of another case, same modality and view."""
    samples: list[SliceRecord] = []
    if not exemplars:
        return samples
    attempts = 0
    while len(samples) < count and attempts < 20 * count:
        attempts += 1
        exemplar = exemplars[int(rng.integers(len(exemplars)))]
        candidates = [r for r in recipients if r.case != exemplar.case and r.modality == exemplar.modality
                      and r.axis == exemplar.axis and r.image.shape == exemplar.image.shape]
        if not candidates:
            continue
        result = synthesize(exemplar, candidates[int(rng.integers(len(candidates)))], settings, rng)
        if result is not None:
            samples.append(result[0])
    return samples


def save_sheet(samples: list[SliceRecord], path: Path, columns: int = 6) -> Path:
    """A PNG grid of slices (synthetic or degraded) with the label outlined (red NETC, green SNFH, yellow ET)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from SAMBASegmentLib.labels import CLASS_COLOURS, CLASS_NAMES

    rows = max(1, int(np.ceil(len(samples) / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, sample in zip(axes.ravel(), samples):
        ax.imshow(sample.image, cmap="gray", vmin=0, vmax=1)
        for value, name in CLASS_NAMES.items():
            if (sample.label == value).any():
                ax.contour(sample.label == value, levels=[0.5], colors=[CLASS_COLOURS[name]], linewidths=0.6)
        ax.set_title(f"{sample.modality} ax{sample.axis}\n{sample.case}", fontsize=5)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
