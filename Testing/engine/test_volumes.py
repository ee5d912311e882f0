"""Case loading: modality detection by name, geometry reconciliation, normalisation, and bad input."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SAMBASegmentLib.errors import CaseFolderError, ModalityError, VolumeError
from SAMBASegmentLib.labels import LabelConvention
from SAMBASegmentLib.volumes import (
    find_case_files, load_case, normalise_intensities, resample_array, resample_onto, same_geometry, write_volume,
)


def _expected_files(folder: Path) -> dict[str, str]:
    name = folder.name
    if name.startswith("Brats18_"):
        return {m: f"{name}_{m}.nii.gz" for m in ("flair", "t1", "t1ce", "t2")} | {"label": f"{name}_seg.nii.gz"}
    if name == "brats_tcia_pat222_2":
        return {"flair": "Flair.nii.gz", "t1": "T1.nii.gz", "t1ce": "T1c.nii.gz", "t2": "T2.nii.gz",
                "label": "segmentation.nii.gz"}
    return {"flair": "Flair_subtrMeanDivStd.nii.gz", "t1ce": "T1c_subtrMeanDivStd.nii.gz", "label": "OTMultiClass.nii.gz"}


def test_every_shared_case_is_recognised(case_dirs):
    assert len(case_dirs) == 24
    for folder in case_dirs:
        found = {key: path.name for key, path in find_case_files(folder).items()}
        assert found == _expected_files(folder), folder.name


def test_brats2023_and_mixed_case_names(tmp_path, data_dir):
    source = data_dir / "Brats18_2013_3_1"
    names = {"flair": "BraTS-GLI-00001-000-T2F.nii.gz", "t1": "BraTS-GLI-00001-000-t1n.nii.gz",
             "t1ce": "BraTS-GLI-00001-000-t1c.nii.gz", "t2": "BraTS-GLI-00001-000-t2w.nii.gz",
             "seg": "BraTS-GLI-00001-000-seg.nii.gz"}
    for modality, name in names.items():
        (tmp_path / name).symlink_to(source / f"Brats18_2013_3_1_{modality}.nii.gz")
    found = find_case_files(tmp_path)
    assert {k: p.name for k, p in found.items()} == {
        "flair": names["flair"], "t1": names["t1"], "t1ce": names["t1ce"], "t2": names["t2"], "label": names["seg"]}


def test_override_wins_and_ambiguity_is_explained(tmp_path, data_dir):
    source = data_dir / "Brats18_2013_3_1"
    (tmp_path / "a_flair.nii.gz").symlink_to(source / "Brats18_2013_3_1_flair.nii.gz")
    (tmp_path / "b_flair.nii.gz").symlink_to(source / "Brats18_2013_3_1_t2.nii.gz")
    with pytest.raises(ModalityError, match="both a_flair.nii.gz and b_flair.nii.gz look like flair"):
        find_case_files(tmp_path)
    (tmp_path / "b_flair.nii.gz").unlink()
    (tmp_path / "scan_weird.nii.gz").symlink_to(source / "Brats18_2013_3_1_t2.nii.gz")
    found = find_case_files(tmp_path, overrides={"t2": "scan_weird.nii.gz"})
    assert found["t2"].name == "scan_weird.nii.gz" and found["flair"].name == "a_flair.nii.gz"


def test_two_modality_zscored_case_loads_with_missing_reported(data_dir):
    case = load_case(data_dir / "brats_2013_pat0001_1")
    assert set(case.volumes) == {"flair", "t1ce"}
    assert case.missing == ["t1", "t2"]
    assert any("missing modalities: t1, t2" in w for w in case.warnings)
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(case.files["flair"])))
    assert raw.min() < 0  # z-scored with a negative constant background
    flair = case.volume("flair").array
    background = raw == raw.min()
    assert flair.min() == 0.0 and flair.max() == 1.0
    assert np.all(flair[background] == 0.0)
    assert np.mean(flair[~background] > 0) > 0.95
    assert case.label_convention == LabelConvention.LEGACY5


def test_normalisation_is_robust_and_leaves_input_alone(real_case):
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(real_case.files["t1"]))).astype(np.float32)
    before = raw.copy()
    raw_with_outlier = raw.copy()
    raw_with_outlier[0, 0, 0] = raw.max() * 100  # one hot voxel must not squash the image
    normalised = normalise_intensities(raw_with_outlier)
    assert np.array_equal(raw, before)
    brain = raw > 0
    assert normalised.dtype == np.float32 and 0.0 <= normalised.min() and normalised.max() <= 1.0
    assert 0.2 < float(np.median(normalised[brain])) < 0.8


def test_resampling_round_trip(real_case):
    image = sitk.ReadImage(str(real_case.files["flair"]), sitk.sitkFloat32)
    coarse = sitk.Resample(image, [s // 2 for s in image.GetSize()], sitk.Transform(), sitk.sitkLinear,
                           image.GetOrigin(), [2.0 * s for s in image.GetSpacing()], image.GetDirection())
    back = resample_onto(coarse, image)
    assert same_geometry(back, image)
    original, restored = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(back)
    brain = original > 0
    correlation = np.corrcoef(original[brain], restored[brain])[0, 1]
    assert correlation > 0.9
    label = sitk.ReadImage(str(real_case.files["label"]))
    label_back = resample_onto(resample_onto(label, coarse, is_label=True), label, is_label=True)
    assert set(np.unique(sitk.GetArrayFromImage(label_back))) <= {0, 1, 2, 4}


def test_other_geometry_is_resampled_onto_the_reference(tmp_path, real_case):
    for modality in ("flair", "t1"):
        shutil.copy(real_case.files[modality], tmp_path / real_case.files[modality].name)
    t2 = sitk.ReadImage(str(real_case.files["t2"]))
    shifted = sitk.Resample(t2, [120, 120, 78], sitk.Transform(), sitk.sitkLinear, t2.GetOrigin(), (2.0, 2.0, 2.0),
                            t2.GetDirection())
    sitk.WriteImage(shifted, str(tmp_path / "case_t2.nii.gz"))
    case = load_case(tmp_path)
    assert case.volume("t2").array.shape == case.shape == (155, 240, 240)
    assert any("t2 geometry differs" in w for w in case.warnings)


def test_written_label_keeps_source_geometry(tmp_path, real_case):
    label = (real_case.label > 0).astype(np.uint8)
    for suffix in (".nii.gz", ".nrrd"):
        written = sitk.ReadImage(str(write_volume(label, real_case.reference, tmp_path / f"out{suffix}")))
        assert same_geometry(written, real_case.reference)
        assert np.array_equal(sitk.GetArrayFromImage(written), label)


# --- bad input ----------------------------------------------------------------------------------------------

def test_missing_folder_and_file(tmp_path):
    with pytest.raises(CaseFolderError, match="case folder not found"):
        load_case(tmp_path / "nowhere")
    (tmp_path / "x_flair.nii.gz").write_bytes(b"")
    with pytest.raises(CaseFolderError, match="t2 file not found"):
        load_case(tmp_path, overrides={"t2": tmp_path / "absent_t2.nii.gz"})


def test_unreadable_file(tmp_path):
    (tmp_path / "x_flair.nii.gz").write_bytes(gzip.compress(b"this is not a NIfTI file" * 20))
    with pytest.raises(CaseFolderError, match="cannot read .*x_flair.nii.gz"):
        load_case(tmp_path)


def test_no_recognisable_modality(tmp_path, real_case):
    shutil.copy(real_case.files["flair"], tmp_path / "scan001.nii.gz")
    with pytest.raises(ModalityError, match="no FLAIR, T1, T1ce or T2 volume recognised"):
        load_case(tmp_path)


def test_4d_file(tmp_path):
    volume = sitk.GetImageFromArray(np.ones((3, 8, 8, 8), dtype=np.float32), isVector=False)
    sitk.WriteImage(volume, str(tmp_path / "x_flair.nii.gz"))
    with pytest.raises(VolumeError, match="is 4D"):
        load_case(tmp_path)


def test_all_zero_volume(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8, 8), dtype=np.float32)), str(tmp_path / "x_flair.nii.gz"))
    with pytest.raises(VolumeError, match="every voxel is zero"):
        load_case(tmp_path)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_nan_voxels_are_cleaned_with_a_warning(tmp_path, real_case, suffix):
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(real_case.files["flair"]))).astype(np.float32)
    array[70, 100:110, 100:110] = np.nan
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(real_case.reference)
    sitk.WriteImage(image, str(tmp_path / f"x_flair{suffix}"))
    case = load_case(tmp_path)
    assert np.isfinite(case.volume("flair").array).all()
    assert np.all(case.volume("flair").array[70, 100:110, 100:110] == 0)
    assert any("100 NaN/infinite voxels set to 0" in w for w in case.warnings)


def test_input_files_are_never_modified(real_case, data_dir):
    files = list(real_case.files.values())
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    case = load_case(data_dir / real_case.name)
    case.volume("flair").array[:] = 0.5  # even scribbling on the loaded copy
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files} == before


def test_resampling_to_another_voxel_size_keeps_the_extent():
    """5 mm slices to 1 mm and back: each thick slice becomes five thin ones, and the round trip is exact."""
    label = np.zeros((10, 12, 12), dtype=np.uint8)
    label[4:6, 3:8, 3:8] = 1
    thin = resample_array(label, (5.0, 1.0, 1.0), (1.0, 1.0, 1.0), is_label=True)
    assert thin.shape == (50, 12, 12)
    assert np.nonzero(thin.any(axis=(1, 2)))[0].tolist() == list(range(20, 30))
    np.testing.assert_array_equal(resample_array(thin, (1.0, 1.0, 1.0), (5.0, 1.0, 1.0), label.shape, is_label=True), label)
    ramp = np.broadcast_to(np.arange(10, dtype=np.float32)[:, None, None], (10, 4, 4)).copy()
    smooth = resample_array(ramp, (5.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    assert smooth.dtype == np.float32 and np.all(np.diff(smooth[2:-3, 0, 0]) > 0)  # linear between slice centres
