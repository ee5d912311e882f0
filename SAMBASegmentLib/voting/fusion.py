"""Fusing the per-modality SAM masks into NETC / SNFH / ET: the network's inputs, its sliding-window
inference around the tumour, the modality-agreement map, and the simple rule it has to beat.

Input channels, in ``MODALITIES`` order: the four normalised images, the four binary SAM masks, and four
presence flags (1 where the modality was given). A missing modality is zeros with flag 0, never a crash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from ..errors import VolumeError, WeightsError
from ..labels import ET_LABEL, NETC, SNFH
from ..postprocessing import remove_small_regions
from ..volumes import MODALITIES, resample_array
from ..weights import WEIGHTS_DIR, verify_sha256
from .network import DEFAULT_NORMALISATION, VotingUNet3D, decode_regions, parameter_count

VOTING_DIR = WEIGHTS_DIR / "voting"
INPUT_CHANNELS = 3 * len(MODALITIES)
FIELD_OF_VIEW_MARGIN = 12  # voxels of context around the union of the SAM masks
MIN_LESION_AGREEMENT = 0.5  # a fused lesion must hold a voxel that at least half of the modalities given call tumour
TRAINED_SPACING = (1.0, 1.0, 1.0)  # mm, array order: BraTS voxels, what the shipped network was trained on
TRAINED_FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (2, 3))  # front-back and left-right, as in training
NORMAL_BRAIN_LEVEL = 0.5  # where a network trained with relative intensities sees each modality's normal brain
RELATIVE_INTENSITIES = "relative_to_normal_brain"  # the manifest's "intensities" for such a network


def relative_to_normal_brain(image: np.ndarray, tumour: np.ndarray, level: float = NORMAL_BRAIN_LEVEL) -> np.ndarray:
    """``image`` scaled so that the median of the brain (non-zero voxels) outside ``tumour`` is ``level``.

    Enhancement is brightness relative to the patient's own brain, and one bright vessel can set a volume's
    percentile normalisation. Used only by a network whose manifest asks for it; the one trained so far did not beat
    the shipped network (training/README.md). Background stays 0."""
    brain = image > 0
    reference = brain & ~np.asarray(tumour, dtype=bool)
    if not reference.any():
        reference = brain
    if not reference.any():
        return image.astype(np.float32)
    median = float(np.median(image[reference]))
    return (image * (level / median) if median > 0 else image).astype(np.float32)


def build_inputs(images: Mapping[str, np.ndarray | None], masks: Mapping[str, np.ndarray | None]) -> np.ndarray:
    """(12, k, j, i) float32 network input; a modality counts as present when both its image and mask are given."""
    shapes = {np.shape(a) for a in (*images.values(), *masks.values()) if a is not None}
    if len(shapes) != 1:
        raise VolumeError(f"the images and masks to fuse must share one grid; got shapes {sorted(shapes)}")
    shape = shapes.pop()
    inputs = np.zeros((INPUT_CHANNELS, *shape), dtype=np.float32)
    for channel, modality in enumerate(MODALITIES):
        image, mask = images.get(modality), masks.get(modality)
        if image is None or mask is None:
            continue
        inputs[channel] = image
        inputs[len(MODALITIES) + channel] = mask
        inputs[2 * len(MODALITIES) + channel] = 1.0
    return inputs


def agreement_map(masks: Mapping[str, np.ndarray | None]) -> np.ndarray:
    """Fraction of the given modalities whose SAM mask covers each voxel: 1 where all agree it is tumour."""
    given = [np.asarray(m, dtype=bool) for m in masks.values() if m is not None]
    if not given:
        raise VolumeError("no modality mask to compute an agreement map from")
    return np.mean(given, axis=0, dtype=np.float32)


def field_of_view(masks: Mapping[str, np.ndarray | None], margin: int = FIELD_OF_VIEW_MARGIN
                  ) -> tuple[slice, ...] | None:
    """The bounding box of the union of the masks plus ``margin`` voxels, or None when every mask is empty."""
    union = np.any([m for m in masks.values() if m is not None], axis=0)
    if not union.any():
        return None
    box = ndimage.find_objects(union.astype(np.uint8))[0]
    return tuple(slice(max(0, s.start - margin), min(size, s.stop + margin)) for s, size in zip(box, union.shape))


def _window_starts(size: int, patch: int) -> list[int]:
    if size <= patch:
        return [0]
    starts = list(range(0, size - patch, patch // 2))
    return starts + [size - patch]


def sliding_window_probabilities(model: VotingUNet3D, inputs: np.ndarray, patch: int) -> np.ndarray:
    """Region probabilities of a (C, k, j, i) crop: overlapping patches (as trained), logits averaged."""
    divisor = model.divisor
    padded_shape = [max(patch, -(-s // divisor) * divisor) for s in inputs.shape[1:]]
    padding = [(0, 0)] + [(0, p - s) for p, s in zip(padded_shape, inputs.shape[1:])]
    padded = torch.from_numpy(np.pad(inputs, padding))
    logits = torch.zeros((model.head.out_channels, *padded_shape))
    counts = torch.zeros(padded_shape)
    sizes = [min(patch, s) for s in padded_shape]
    model.eval()
    with torch.inference_mode():
        for k in _window_starts(padded_shape[0], patch):
            for j in _window_starts(padded_shape[1], patch):
                for i in _window_starts(padded_shape[2], patch):
                    window = (slice(k, k + sizes[0]), slice(j, j + sizes[1]), slice(i, i + sizes[2]))
                    logits[(slice(None), *window)] += model(padded[(slice(None), *window)][None])[0]
                    counts[window] += 1
    probabilities = torch.sigmoid(logits / counts)
    return probabilities[(slice(None), *(slice(0, s) for s in inputs.shape[1:]))].numpy()


def flip_averaged_probabilities(model: VotingUNet3D, inputs: np.ndarray, patch: int,
                                flips: tuple[tuple[int, ...], ...] = TRAINED_FLIPS) -> np.ndarray:
    """Test-time augmentation: the probabilities averaged over the flips the network was trained with, so no
    single orientation's quirks decide a voxel (measured on the validation cases: +0.005 mean Dice)."""
    total = np.zeros((model.head.out_channels, *inputs.shape[1:]), dtype=np.float32)
    for axes in flips:
        flipped = np.ascontiguousarray(np.flip(inputs, axes)) if axes else inputs
        probabilities = sliding_window_probabilities(model, flipped, patch)
        total += np.flip(probabilities, axes) if axes else probabilities
    return total / len(flips)


def manifest_members(manifest: dict) -> list[dict]:
    """The weight entries (``file``, ``sha256``, ...) of a voting manifest: its ``members`` for an ensemble, else the
    manifest itself (one network)."""
    return manifest.get("members", [manifest])


@dataclass
class Fusion:
    """The fused result: internal label map (1 NETC, 2 SNFH, 3 ET) and the modality-agreement map."""

    label: np.ndarray
    agreement: np.ndarray


class VotingNetwork:
    """The shipped (or a given) voting network, ready to fuse one case's masks: one trained network, or several
    trained alike from different seeds (``members`` in the manifest) whose probabilities are averaged."""

    def __init__(self, models: Sequence[VotingUNet3D], patch: int, source: str,
                 spacing: tuple[float, float, float] = TRAINED_SPACING, relative_intensities: bool = False) -> None:
        if not models:
            raise WeightsError("a voting network needs at least one trained model")
        self.models = tuple(model.eval() for model in models)
        self.patch, self.source, self.spacing = patch, source, tuple(spacing)
        self.relative_intensities = relative_intensities

    @classmethod
    def load(cls, folder: Path | str = VOTING_DIR) -> "VotingNetwork":
        """Weights from a folder with ``manifest.json``: one ``file`` or a list of ``members`` (each a ``file``
        and its ``sha256``) sharing the manifest's architecture; every sha256 is checked before its file is read."""
        from safetensors.torch import load_file

        manifest_path = Path(folder) / "manifest.json"
        if not manifest_path.is_file():
            raise WeightsError(f"no voting network manifest at {manifest_path}")
        manifest = json.loads(manifest_path.read_text())
        models, files = [], []
        for member in manifest_members(manifest):
            weights = verify_sha256(Path(folder) / member["file"], member["sha256"])
            model = VotingUNet3D(INPUT_CHANNELS, tuple(manifest["widths"]),
                                 normalisation=manifest.get("normalisation", DEFAULT_NORMALISATION))
            model.load_state_dict(load_file(str(weights)), strict=True)
            models.append(model)
            files.append(weights.name)
        source = f"{' + '.join(files)} ({manifest.get('trained_on', 'unknown data')})"
        return cls(models, int(manifest["patch"]), source, tuple(manifest.get("spacing_mm", TRAINED_SPACING)),
                   relative_intensities=manifest.get("intensities") == RELATIVE_INTENSITIES)

    def describe(self) -> str:
        size = f"{parameter_count(self.models[0]):,} parameters"
        if len(self.models) > 1:
            size = f"{len(self.models)} networks averaged, {size} each"
        return f"voting 3D U-Net {self.source}, {size}"

    def fuse(self, images: Mapping[str, np.ndarray | None], masks: Mapping[str, np.ndarray | None],
             spacing: tuple[float, float, float]) -> Fusion:
        """``spacing``: mm, array order. Volumes whose voxels differ from the training ones by more than 20 % (thick
        slices of older scanners) are fused on a grid of the training voxel size and the label brought back."""
        agreement = agreement_map(masks)
        if np.allclose(spacing, self.spacing, rtol=0.2):
            return Fusion(self._label(images, masks, spacing, agreement), agreement)

        def resampled(array: np.ndarray | None, is_mask: bool) -> np.ndarray | None:
            if array is None:
                return None
            typed = np.asarray(array, dtype=np.uint8 if is_mask else np.float32)
            result = resample_array(typed, spacing, self.spacing, is_label=is_mask)
            return result > 0 if is_mask else result

        masks_on_grid = {m: resampled(a, True) for m, a in masks.items()}
        label = self._label({m: resampled(a, False) for m, a in images.items()}, masks_on_grid, self.spacing,
                            agreement_map(masks_on_grid))
        return Fusion(resample_array(label, self.spacing, spacing, agreement.shape, is_label=True), agreement)

    def probabilities(self, images: Mapping[str, np.ndarray | None], masks: Mapping[str, np.ndarray | None]
                      ) -> tuple[tuple[slice, ...], np.ndarray] | None:
        """WT / TC / ET probabilities over the field of view of the masks (None when every mask is empty), from
        the images as this network was trained to see them."""
        window = field_of_view(masks)
        if window is None:
            return None
        if self.relative_intensities:
            seen_by_sam = np.any([m for m in masks.values() if m is not None], axis=0)
            images = {m: None if a is None else relative_to_normal_brain(a, seen_by_sam) for m, a in images.items()}
        inputs = build_inputs({m: None if a is None else a[window] for m, a in images.items()},
                              {m: None if a is None else a[window] for m, a in masks.items()})
        return window, np.mean([flip_averaged_probabilities(net, inputs, self.patch) for net in self.models], axis=0)

    def _label(self, images: Mapping[str, np.ndarray | None], masks: Mapping[str, np.ndarray | None],
               spacing: tuple[float, float, float], agreement: np.ndarray) -> np.ndarray:
        """The label map on the masks' grid; ``agreement``: their modality-agreement map."""
        label = np.zeros(agreement.shape, dtype=np.uint8)
        found = self.probabilities(images, masks)
        if found is not None:
            window, probabilities = found
            label[window] = decode_regions(probabilities)
        return remove_small_regions(keep_lesions_most_modalities_see(label, agreement), spacing)

    def whole_tumour(self, modality: str, image: np.ndarray, mask: np.ndarray,
                     spacing: tuple[float, float, float]) -> np.ndarray:
        """The whole tumour from one modality's image and SAM mask (the others absent, as the network was trained
        to expect): what the automatic path reports, since the network corrects SAM's borders from the image."""
        if modality not in MODALITIES:
            raise VolumeError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
        return self.fuse({modality: image}, {modality: mask}, spacing).label > 0


def keep_lesions_most_modalities_see(label: np.ndarray, agreement: np.ndarray) -> np.ndarray:
    """The network refines the lesions SAM segmented, it does not add new ones: a connected component of the
    whole tumour is kept only if at least half of the modalities' SAM masks agree on one of its voxels
    (``agreement`` from ``agreement_map`` ≥ ``MIN_LESION_AGREEMENT``), else dropped with everything inside it.
    A piece beside the tumour that one modality's mask leaked into is what an annotator would erase (on the
    validation cases: no legacy Dice lost, lesion-wise WT 0.79 → 0.89 for box3d, training/README.md)."""
    seen = agreement >= MIN_LESION_AGREEMENT
    components, count = ndimage.label(label > 0, ndimage.generate_binary_structure(3, 3))
    if count == 0:
        return label
    kept = np.zeros(count + 1, dtype=bool)
    kept[np.unique(components[seen & (components > 0)])] = True
    kept[0] = False
    return np.where(kept[components], label, 0).astype(np.uint8)


def rule_baseline(images: Mapping[str, np.ndarray | None], masks: Mapping[str, np.ndarray | None],
                  spacing: tuple[float, float, float]) -> Fusion:
    """The rule the network must beat: WT where at least half of the FLAIR and T2 masks say tumour (their union),
    TC = the T1ce mask inside WT, ET = TC voxels brighter on T1ce than TC's Otsu threshold; specks removed as
    from the network's output."""
    agreement = agreement_map(masks)
    wt_votes = [np.asarray(masks[m], dtype=bool) for m in ("flair", "t2") if masks.get(m) is not None]
    whole = np.mean(wt_votes, axis=0) >= 0.5 if wt_votes else agreement >= 0.5
    label = np.zeros(whole.shape, dtype=np.uint8)
    label[whole] = SNFH
    t1ce, t1ce_mask = images.get("t1ce"), masks.get("t1ce")
    if t1ce is not None and t1ce_mask is not None:
        core = whole & np.asarray(t1ce_mask, dtype=bool)
        label[core] = NETC
        if core.sum() > 1:
            values = sitk.GetImageFromArray(t1ce[core].astype(np.float32)[None, None])
            otsu = sitk.OtsuThresholdImageFilter()
            otsu.SetInsideValue(0)
            otsu.SetOutsideValue(1)
            otsu.Execute(values)
            label[core & (t1ce > otsu.GetThreshold())] = ET_LABEL
    return Fusion(remove_small_regions(label, spacing), agreement)
