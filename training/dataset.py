"""Dataset builder: 2D slices per modality and view of the training cases, with their labels.

Slices are taken from the engine's own normalised volumes (``load_case``), so training sees exactly what the
engine sees; the SAM framing is applied later by the engine's ``SliceFrame``. Most slices hold tumour; a few
tumour-free brain slices are kept as negatives (propagation hands SAM such slices past the tumour's end). While
a case is loaded, labelled exemplars (for synthesis) and tumour-free recipient slices are drawn from it too.
A share of the training slices (``degrade_fraction``, none by default) can be degraded as older scanners give
them; those decisions come from a generator of their own, so the slices drawn are the same with or without.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.volumes import Case, load_case

from .degradation import degrade

VIEWS = {"axial": 0, "coronal": 1, "sagittal": 2}


@dataclass(frozen=True)
class SliceRecord:
    """One 2D training slice: image as the engine normalises it, internal label (0, NETC, SNFH, ET)."""

    case: str
    modality: str
    axis: int
    index: int
    image: np.ndarray = field(repr=False)
    label: np.ndarray = field(repr=False)
    spacing: tuple[float, float]
    source: str = "real"

    @property
    def tumour(self) -> np.ndarray:
        return region_mask(self.label, "WT")

    @property
    def brain(self) -> np.ndarray:
        return self.image > 0


@dataclass(frozen=True)
class BuilderSettings:
    """How many slices of which kind. Weights favour FLAIR/T2 (whole tumour is visible there) and axial views."""

    slices_per_case: int = 60
    modality_weights: dict[str, float] = field(
        default_factory=lambda: {"flair": 0.45, "t2": 0.25, "t1ce": 0.15, "t1": 0.15})
    view_weights: dict[str, float] = field(default_factory=lambda: {"axial": 0.6, "coronal": 0.2, "sagittal": 0.2})
    empty_fraction: float = 0.08
    min_tumour_pixels: int = 10
    min_brain_fraction: float = 0.5  # of the case's largest brain cross-section: no slivers at the top of the head
    exemplar_fraction: float = 0.01
    recipients_per_view: int = 3
    degrade_fraction: float = 0.0  # share of training slices replaced by a degraded version (thick, bias, noise)


@dataclass
class CaseSlices:
    """What one case contributes: training slices, synthesis exemplars, tumour-free recipient slices."""

    records: list[SliceRecord]
    exemplars: list[SliceRecord]
    recipients: list[SliceRecord]
    tumour_slices_available: int


def _record(case: Case, modality: str, axis: int, index: int,
            degrade_rng: np.random.Generator | None = None) -> SliceRecord:
    """One slice of the case; degraded (``source`` "degraded") when given the generator that degrades it."""
    volume = case.volume(modality)
    rest = [s for a, s in enumerate(case.spacing) if a != axis]
    if degrade_rng is None:
        image, source = volume.slice(axis, index).astype(np.float32), "real"
    else:
        image, source = degrade(volume.array, axis, index, degrade_rng), "degraded"
    return SliceRecord(case.name, modality, axis, int(index), image,
                       np.take(case.label, index, axis=axis).astype(np.uint8), (rest[0], rest[1]), source)


def _allocation(settings: BuilderSettings, modalities: list[str]) -> dict[tuple[str, str], int]:
    """Slices per (modality, view); weights of missing modalities go to the present ones."""
    weights = {m: settings.modality_weights.get(m, 0.0) for m in modalities}
    total = sum(weights.values()) or 1.0
    return {(m, v): int(round(settings.slices_per_case * weights[m] / total * w))
            for m in modalities for v, w in settings.view_weights.items()}


def slices_of_case(folder: Path, settings: BuilderSettings, rng: np.random.Generator) -> CaseSlices:
    """Draw one case's slices. Deterministic for a given generator state."""
    case = load_case(folder)
    if case.label is None:
        raise ValueError(f"{case.name}: a training case needs a label map")
    tumour = region_mask(case.label, "WT")
    modalities = [m for m in settings.modality_weights if m in case.volumes]
    degrade_rng = np.random.default_rng(zlib.crc32(case.name.encode()))
    records, exemplars, recipients, available = [], [], [], 0
    for (modality, view), count in _allocation(settings, modalities).items():
        axis = VIEWS[view]
        other = tuple(a for a in range(3) if a != axis)
        areas = tumour.sum(axis=other)
        brain = (case.volume(modality).array > 0).sum(axis=other)
        with_tumour = np.nonzero(areas >= settings.min_tumour_pixels)[0]
        without = np.nonzero((areas == 0) & (brain >= settings.min_brain_fraction * brain.max()))[0]
        available += with_tumour.size
        n_empty = min(without.size, int(round(count * settings.empty_fraction)))
        n_tumour = min(with_tumour.size, count - n_empty)
        chosen = list(rng.choice(with_tumour, n_tumour, replace=False)) + list(rng.choice(without, n_empty, replace=False))
        records += [_record(case, modality, axis, i,
                            degrade_rng if degrade_rng.random() < settings.degrade_fraction else None)
                    for i in sorted(int(c) for c in chosen)]
        n_exemplars = int(rng.binomial(with_tumour.size, settings.exemplar_fraction)) if with_tumour.size else 0
        exemplars += [_record(case, modality, axis, int(i)) for i in rng.choice(with_tumour, n_exemplars, replace=False)]
        n_recipients = min(without.size, settings.recipients_per_view)
        recipients += [_record(case, modality, axis, int(i)) for i in rng.choice(without, n_recipients, replace=False)]
    return CaseSlices(records, exemplars, recipients, available)
