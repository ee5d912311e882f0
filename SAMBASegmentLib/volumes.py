"""Volumes and geometry: find a case's modalities by name, read them, reconcile geometries, normalise.

Array order is SimpleITK's (k, j, i), which is also Slicer's ``arrayFromVolume`` order. Spacing is kept in the
same order so that an axis index means the same thing for the array and for its spacing.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import CaseFolderError, ModalityError, VolumeError
from .labels import LabelConvention, to_internal

log = logging.getLogger(__name__)

MODALITIES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
LABEL_KEY = "label"
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

# Tokens of a file name (split on "_", "-", "." and spaces, lower case) that name each modality.
# Token matching, not substring matching, keeps "t1ce" from also matching "t1".
_NAME_TOKENS: dict[str, frozenset[str]] = {
    "flair": frozenset({"flair", "t2f", "t2flair", "fl"}),
    "t1": frozenset({"t1", "t1n", "t1w", "t1pre", "t1native"}),
    "t1ce": frozenset({"t1ce", "t1c", "t1gd", "t1post", "t1ce1", "t1cgd"}),
    "t2": frozenset({"t2", "t2w"}),
    LABEL_KEY: frozenset({"seg", "segmentation", "label", "labels", "labelmap", "otmulticlass", "gt"}),
}

# View name → unit normal in patient space (LPS or RAS: only the absolute value is used).
VIEW_NORMALS: dict[str, tuple[float, float, float]] = {
    "sagittal": (1.0, 0.0, 0.0),
    "coronal": (0.0, 1.0, 0.0),
    "axial": (0.0, 0.0, 1.0),
}

_GEOMETRY_TOLERANCE = 1e-3
_NORMALISATION_PERCENTILES = (0.5, 99.5)


@dataclass
class ScalarVolume:
    """One normalised modality as the SAM engine sees it.

    ``array`` is float32 in [0, 1], order (k, j, i); ``spacing`` is in the same order, in mm;
    ``direction`` is the 3x3 index-to-patient direction matrix (columns: i, j, k), used to name views.
    ``key`` identifies the voxel content for the embedding cache: a new array needs a new key.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    key: str = field(default_factory=lambda: uuid.uuid4().hex)

    def view_axis(self, view: str) -> int:
        """Array axis (0 = k, 1 = j, 2 = i) whose index direction is closest to the view's normal."""
        if view not in VIEW_NORMALS:
            raise ValueError(f"unknown view {view!r}; expected one of {sorted(VIEW_NORMALS)}")
        alignment = np.abs(np.asarray(self.direction, dtype=float).T @ np.asarray(VIEW_NORMALS[view]))
        index_axis = int(np.argmax(alignment))  # 0 = i, 1 = j, 2 = k
        return 2 - index_axis

    def slice(self, axis: int, index: int) -> np.ndarray:
        return np.take(self.array, index, axis=axis)

    def in_plane_spacing(self, axis: int) -> tuple[float, float]:
        """(row, column) pixel spacing of a slice taken across ``axis``."""
        rest = [s for a, s in enumerate(self.spacing) if a != axis]
        return rest[0], rest[1]


@dataclass
class Case:
    """A loaded case: normalised modalities on one reference grid, and the label map if there is one."""

    name: str
    folder: Path
    files: dict[str, Path]
    reference: sitk.Image
    volumes: dict[str, ScalarVolume]
    label: np.ndarray | None = None
    label_convention: LabelConvention | None = None
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        size = self.reference.GetSize()
        return size[2], size[1], size[0]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return _spacing_kji(self.reference)

    def volume(self, modality: str) -> ScalarVolume:
        if modality not in self.volumes:
            available = ", ".join(self.volumes) or "none"
            raise ModalityError(f"{self.name}: modality {modality!r} is not in this case (available: {available})")
        return self.volumes[modality]


def role_of_name(name: str) -> str | None:
    """The modality (or ``label``) a file or node name announces, or None when it names none or several.

    Token matching: ``Brats18_x_t1ce.nii.gz`` → t1ce, ``BraTS-GLI-1-000-t2f`` → flair, ``Flair_subtrMeanDivStd``
    → flair, ``OTMultiClass`` → label. Shared by case folders and by Slicer node names.
    """
    name = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    tokens = {t for t in re.split(r"[_\-.\s]+", name) if t}
    matches = [key for key, names in _NAME_TOKENS.items() if tokens & names]
    return matches[0] if len(matches) == 1 else None


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.startswith(".")


def find_case_files(folder: Path | str, overrides: dict[str, Path | str] | None = None) -> dict[str, Path]:
    """Map each modality (and ``label``) to its file in ``folder`` by name; ``overrides`` win.

    Raises ModalityError when no modality is recognised or when two files claim the same one.
    """
    folder = Path(folder)
    if not folder.exists():
        raise CaseFolderError(f"case folder not found: {folder}")
    if not folder.is_dir():
        raise CaseFolderError(f"not a folder: {folder}")
    found: dict[str, Path] = {}
    for path in sorted(p for p in folder.iterdir() if _is_image_file(p)):
        key = role_of_name(path.name)
        if key is None:
            continue
        if key in found:
            raise ModalityError(
                f"{folder}: both {found[key].name} and {path.name} look like {key}; "
                f"name the right one explicitly (--{key.replace('_', '-')} FILE)"
            )
        found[key] = path
    for key, path in (overrides or {}).items():
        if key not in _NAME_TOKENS:
            raise ModalityError(f"unknown modality override {key!r}; expected one of {sorted(_NAME_TOKENS)}")
        path = Path(path)
        if not path.is_absolute() and not path.exists():
            path = folder / path
        if not path.is_file():
            raise CaseFolderError(f"{key} file not found: {path}")
        found[key] = path
    if not any(m in found for m in MODALITIES):
        listing = ", ".join(sorted(p.name for p in folder.iterdir())) or "empty folder"
        raise ModalityError(
            f"{folder}: no FLAIR, T1, T1ce or T2 volume recognised by name ({listing}); "
            "name them explicitly (--flair FILE ...)"
        )
    return found


def read_image(path: Path | str) -> sitk.Image:
    """Read a 3D image, refusing 4D and unreadable files with a message that names the file."""
    path = Path(path)
    if not path.is_file():
        raise CaseFolderError(f"file not found: {path}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reason"
        raise CaseFolderError(f"cannot read {path}: {first_line}") from exc
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(f"{path.name}: {image.GetNumberOfComponentsPerPixel()} components per voxel; expected a scalar volume")
    if image.GetDimension() == 4:
        size = image.GetSize()
        if size[3] != 1:
            raise VolumeError(f"{path.name} is 4D ({size[3]} time points or channels); give one 3D volume per modality")
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise VolumeError(f"{path.name} has {image.GetDimension()} dimensions; expected a 3D volume")
    return image


def nifti_nan_count(path: Path) -> int:
    """NaN/inf voxels stored in a float NIfTI file.

    ITK's NIfTI reader silently turns NaN into 0; the clinician should still hear that her file had holes.
    """
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return 0
    import nibabel

    image = nibabel.load(str(path))
    if not np.issubdtype(image.get_data_dtype(), np.floating):
        return 0
    return int((~np.isfinite(np.asanyarray(image.dataobj))).sum())


def _spacing_kji(image: sitk.Image) -> tuple[float, float, float]:
    sx, sy, sz = image.GetSpacing()
    return float(sz), float(sy), float(sx)


def same_geometry(a: sitk.Image, b: sitk.Image, tolerance: float = _GEOMETRY_TOLERANCE) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tolerance)
    )


def resample_onto(image: sitk.Image, reference: sitk.Image, is_label: bool = False) -> sitk.Image:
    """Resample ``image`` onto ``reference``'s grid (linear for intensities, nearest for labels)."""
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, 0.0, image.GetPixelID())


def _edge_aligned(image: sitk.Image, spacing: tuple[float, ...]) -> sitk.Image:
    """Axis-aligned, first voxel's outer edge at 0: grids of any voxel size then cover one extent."""
    image.SetSpacing([float(s) for s in reversed(spacing)])
    image.SetOrigin([float(s) / 2 for s in reversed(spacing)])
    return image


def resample_array(array: np.ndarray, spacing: tuple[float, float, float], target_spacing: tuple[float, float, float],
                   target_shape: tuple[int, int, int] | None = None, is_label: bool = False) -> np.ndarray:
    """A (k, j, i) array resampled to another voxel size over the same extent (SimpleITK: linear for intensities,
    nearest for labels); ``target_shape`` (default: the extent divided by the new spacing) makes round trips exact
    in shape."""
    if target_shape is None:
        target_shape = tuple(max(1, round(n * s / t)) for n, s, t in zip(array.shape, spacing, target_spacing))
    source = _edge_aligned(sitk.GetImageFromArray(array), spacing)
    reference = _edge_aligned(sitk.Image([int(n) for n in reversed(target_shape)], source.GetPixelID()), target_spacing)
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    return sitk.GetArrayFromImage(sitk.Resample(source, reference, sitk.Transform(), interpolator, 0.0))


def foreground_mask(array: np.ndarray) -> np.ndarray:
    """Voxels that belong to the head: non-zero, or above a constant background (z-scored inputs)."""
    minimum = float(array.min())
    background_fraction = float(np.mean(array == minimum))
    if minimum != 0.0 and background_fraction > 0.05:
        return array != minimum
    return array != 0


def normalise_intensities(array: np.ndarray) -> np.ndarray:
    """Robust percentiles of the foreground mapped to [0, 1]; background 0. Returns a new float32 array."""
    foreground = foreground_mask(array)
    if not foreground.any():
        raise VolumeError("volume has no non-background voxels")
    low, high = np.percentile(array[foreground], _NORMALISATION_PERCENTILES)
    if high <= low:
        high = low + 1.0
    out = np.clip((array.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    out[~foreground] = 0.0
    return out.astype(np.float32)


def _direction_matrix(image: sitk.Image) -> np.ndarray:
    return np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)


def scalar_volume_from_image(image: sitk.Image, name: str = "volume") -> tuple[ScalarVolume, list[str]]:
    """Normalise a SimpleITK image on a copy; NaN/inf voxels become 0 with a warning. Returns (volume, warnings)."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)  # a copy: the input is never modified
    warnings: list[str] = []
    bad = ~np.isfinite(array)
    if bad.any():
        message = f"{name}: {int(bad.sum())} NaN/infinite voxels set to 0"
        log.warning(message)
        warnings.append(message)
        array[bad] = 0.0
    if not np.any(array):
        raise VolumeError(f"{name}: every voxel is zero; the file holds no image")
    return ScalarVolume(normalise_intensities(array), _spacing_kji(image), _direction_matrix(image)), warnings


def load_case(
    folder: Path | str,
    overrides: dict[str, Path | str] | None = None,
    label_convention: LabelConvention | None = None,
    load_label: bool = True,
) -> Case:
    """Load a case folder: modalities on the reference grid (FLAIR first), normalised, and its label map."""
    folder = Path(folder)
    files = find_case_files(folder, overrides)
    present = [m for m in MODALITIES if m in files]
    missing = [m for m in MODALITIES if m not in files]
    warnings = [f"{folder.name}: missing modalities: {', '.join(missing)}"] if missing else []
    for message in warnings:
        log.warning(message)
    reference = read_image(files[present[0]])
    volumes: dict[str, ScalarVolume] = {}
    for modality in present:
        image = reference if modality == present[0] else read_image(files[modality])
        if not same_geometry(image, reference):
            message = f"{folder.name}: {modality} geometry differs from {present[0]}; resampled onto it"
            log.warning(message)
            warnings.append(message)
            image = resample_onto(image, reference)
        name = f"{folder.name}/{files[modality].name}"
        hidden_nans = nifti_nan_count(files[modality])
        if hidden_nans:
            warnings.append(f"{name}: {hidden_nans} NaN/infinite voxels set to 0")
            log.warning(warnings[-1])
        volumes[modality], volume_warnings = scalar_volume_from_image(image, name)
        warnings.extend(volume_warnings)
    label = None
    convention = None
    if load_label and LABEL_KEY in files:
        label_image = read_image(files[LABEL_KEY])
        if not same_geometry(label_image, reference):
            warnings.append(f"{folder.name}: label geometry differs from {present[0]}; resampled onto it")
            label_image = resample_onto(label_image, reference, is_label=True)
        raw = sitk.GetArrayFromImage(label_image)
        label, convention = to_internal(raw, label_convention, source=files[LABEL_KEY].name)
    return Case(folder.name, folder, files, reference, volumes, label, convention, missing, warnings)


def array_to_image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """Wrap a (k, j, i) array as an image with the reference's spacing, origin and direction."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def write_volume(array: np.ndarray, reference: sitk.Image, path: Path | str) -> Path:
    """Write with the source geometry; the format follows the extension (.nii.gz, .nii, .nrrd, .seg.nrrd)."""
    path = Path(path)
    if not path.name.lower().endswith(IMAGE_SUFFIXES):
        raise VolumeError(f"{path.name}: unknown output format; use .nii.gz, .nii or .nrrd")
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(array_to_image(array, reference), str(path), useCompression=True)
    return path
