"""The voting network: size, hierarchy, missing modalities, and that the shipped one beats the rule baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from scipy import ndimage

from SAMBASegmentLib.errors import VolumeError, WeightsError
from SAMBASegmentLib.labels import ET_LABEL, NETC, SNFH, region_mask
from SAMBASegmentLib.metrics import dice, region_scores
from SAMBASegmentLib.postprocessing import remove_small_regions
from SAMBASegmentLib.voting import (VotingNetwork, VotingUNet3D, agreement_map, build_inputs, decode_regions,
                                    parameter_count, rule_baseline)
from SAMBASegmentLib.voting.fusion import (INPUT_CHANNELS, NORMAL_BRAIN_LEVEL, RELATIVE_INTENSITIES, VOTING_DIR,
                                           field_of_view, flip_averaged_probabilities, keep_lesions_most_modalities_see,
                                           relative_to_normal_brain)
from SAMBASegmentLib.volumes import MODALITIES, load_case
from SAMBASegmentLib.voting.network import DEFAULT_WIDTHS
from SAMBASegmentLib.weights import sha256_of

MISSING_MODALITY_CASE = "brats_2013_pat0001_1"  # ships without T1 and T2


def _hierarchy_holds(label: np.ndarray) -> bool:
    wt, tc, et = (region_mask(label, r) for r in ("WT", "TC", "ET"))
    return bool(np.all(wt >= tc) and np.all(tc >= et))


def _masks_from_truth(label: np.ndarray, modalities) -> dict[str, np.ndarray]:
    """Imperfect 'SAM masks' made from the label: the whole tumour eroded/dilated differently per modality."""
    whole = region_mask(label, "WT")
    changes = {"flair": 1, "t1": -2, "t1ce": -1, "t2": 2}
    return {m: (ndimage.binary_dilation if changes[m] > 0 else ndimage.binary_erosion)(whole, iterations=abs(changes[m]))
            for m in modalities}


def test_parameter_count_in_range():
    assert 150_000 <= parameter_count(VotingUNet3D(INPUT_CHANNELS)) <= 300_000
    shipped = VotingNetwork.load()
    manifest = json.loads((VOTING_DIR / "manifest.json").read_text())
    assert 150_000 <= parameter_count(shipped.models[0]) == manifest["parameters"] <= 300_000
    assert (VOTING_DIR / manifest["file"]).stat().st_size < 2_000_000


@pytest.mark.parametrize("seed", range(5))
def test_decoding_keeps_the_hierarchy_on_any_probabilities(seed):
    probabilities = np.random.default_rng(seed).random((3, 9, 10, 11))
    label = decode_regions(probabilities)
    assert set(np.unique(label)) <= {0, 1, 2, 3}
    assert _hierarchy_holds(label)
    # ET wherever all three agree, nothing where WT says no, whatever TC and ET say
    assert np.all((label == 3) == ((probabilities >= 0.5).all(axis=0)))
    assert np.all(label[probabilities[0] < 0.5] == 0)


def test_untrained_network_and_rule_keep_the_hierarchy_on_random_inputs():
    rng = np.random.default_rng(1)
    torch.manual_seed(1)
    network = VotingNetwork([VotingUNet3D(INPUT_CHANNELS)], patch=16, source="random weights")
    images = {m: rng.random((20, 24, 18)).astype(np.float32) for m in MODALITIES}
    masks = {m: rng.random((20, 24, 18)) > 0.6 for m in MODALITIES}
    for fusion in (network.fuse(images, masks, (1.0, 1.0, 1.0)), rule_baseline(images, masks, (1.0, 1.0, 1.0))):
        assert fusion.label.shape == (20, 24, 18)
        assert _hierarchy_holds(fusion.label)


def test_specks_are_removed_region_by_region_keeping_the_nesting():
    label = np.zeros((30, 30, 30), dtype=np.uint8)
    label[5:20, 5:20, 5:20] = SNFH  # a large tumour...
    label[8:16, 8:16, 8:16] = NETC  # ...with a core
    label[10:14, 10:14, 10:14] = ET_LABEL  # 64 voxels of ET: kept
    label[17, 17, 17] = ET_LABEL  # a 1-voxel ET speck in oedema, away from the core: a TC speck, so SNFH
    label[9, 15, 9] = ET_LABEL  # a 1-voxel ET speck inside the core: becomes NETC
    label[25:27, 25:27, 25:27] = ET_LABEL  # an 8-voxel lesion on its own: dropped whole
    cleaned = remove_small_regions(label, (1.0, 1.0, 1.0))
    assert _hierarchy_holds(cleaned)
    assert cleaned[17, 17, 17] == SNFH and cleaned[9, 15, 9] == NETC and not cleaned[25:27, 25:27, 25:27].any()
    assert (cleaned[10:14, 10:14, 10:14] == ET_LABEL).all() and (cleaned[5, 5, 5] == SNFH)


def test_lesions_fewer_than_half_the_modalities_see_are_dropped():
    label = np.zeros((20, 20, 20), dtype=np.uint8)
    label[2:8, 2:8, 2:8] = SNFH
    label[4:6, 4:6, 4:6] = ET_LABEL
    label[12:18, 12:18, 12:18] = NETC
    masks = {m: np.zeros(label.shape, dtype=bool) for m in ("flair", "t1", "t1ce", "t2")}
    masks["flair"][7, 7, 7] = masks["t2"][7, 7, 7] = True  # two of four agree on one voxel of the first lesion
    masks["t1ce"][12:18, 12:18, 12:18] = True  # the second lesion: one modality's mask alone
    kept = keep_lesions_most_modalities_see(label, agreement_map(masks))
    np.testing.assert_array_equal(kept[:10], label[:10])
    assert not kept[10:].any()
    two_given = keep_lesions_most_modalities_see(
        label, agreement_map({"flair": masks["flair"], "t1ce": masks["t1ce"], "t2": None}))
    np.testing.assert_array_equal(two_given, label)  # one of two modalities is half of them
    assert not keep_lesions_most_modalities_see(label, agreement_map({m: np.zeros(label.shape, bool) for m in masks})
                                                ).any()


def test_agreement_map_is_the_fraction_of_modalities():
    a = np.array([[1, 1, 0, 0]], dtype=bool)
    b = np.array([[1, 0, 1, 0]], dtype=bool)
    agreement = agreement_map({"flair": a, "t1": b, "t2": None})
    np.testing.assert_allclose(agreement, [[1.0, 0.5, 0.5, 0.0]])
    with pytest.raises(VolumeError, match="no modality mask"):
        agreement_map({"flair": None})


def test_inputs_flag_present_modalities_and_refuse_mixed_grids():
    images = {"flair": np.ones((4, 4, 4), np.float32), "t1ce": np.full((4, 4, 4), 0.5, np.float32)}
    masks = {"flair": np.ones((4, 4, 4), bool), "t1ce": np.zeros((4, 4, 4), bool)}
    inputs = build_inputs(images, masks)
    flags = inputs[2 * len(MODALITIES):, 0, 0, 0]
    assert flags.tolist() == [1.0 if m in ("flair", "t1ce") else 0.0 for m in MODALITIES]
    assert inputs[MODALITIES.index("t1ce"), 0, 0, 0] == 0.5
    with pytest.raises(VolumeError, match="one grid"):
        build_inputs({"flair": np.ones((4, 4, 4))}, {"flair": np.ones((4, 4, 5), bool)})


def test_relative_intensities_put_normal_brain_at_one_level_whatever_the_scanner_gain(data_dir: Path, tmp_path: Path):
    """A network whose manifest asks for relative intensities sees each modality scaled to the patient's normal
    brain (outside SAM's masks): the same case with a brighter T1ce (another gain or normalisation) gives the same
    probabilities; a network without it does not."""
    case = load_case(data_dir / MISSING_MODALITY_CASE)
    tumour = region_mask(case.label, "WT")
    t1ce = case.volume("t1ce").array
    scaled = relative_to_normal_brain(t1ce, tumour)
    assert np.median(scaled[(t1ce > 0) & ~tumour]) == pytest.approx(NORMAL_BRAIN_LEVEL, rel=1e-5)
    assert not scaled[t1ce == 0].any()
    np.testing.assert_allclose(relative_to_normal_brain(3.0 * t1ce, tumour), scaled, rtol=1e-5)

    torch.manual_seed(3)
    save_file(VotingUNet3D(INPUT_CHANNELS).state_dict(), str(tmp_path / "net.safetensors"))
    manifest = {"file": "net.safetensors", "sha256": sha256_of(tmp_path / "net.safetensors"),
                "widths": list(DEFAULT_WIDTHS), "patch": 48, "intensities": RELATIVE_INTENSITIES}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    relative = VotingNetwork.load(tmp_path)
    manifest["intensities"] = "as_normalised"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    absolute = VotingNetwork.load(tmp_path)
    centre = np.argwhere(tumour).mean(axis=0).astype(int)
    window = tuple(slice(c - 24, c + 24) for c in centre)  # one 48³ window: tumour and some normal brain
    images = {m: v.array[window] for m, v in case.volumes.items()}
    brighter = {**images, "t1ce": 1.6 * images["t1ce"]}
    masks = {m: mask[window] for m, mask in _masks_from_truth(case.label, case.volumes).items()}
    probabilities = {name: [network.probabilities(given, masks)[1] for given in (images, brighter)]
                     for name, network in (("relative", relative), ("as normalised", absolute))}
    np.testing.assert_allclose(*probabilities["relative"], atol=1e-5)
    assert np.abs(probabilities["as normalised"][0] - probabilities["as normalised"][1]).max() > 1e-3


def test_changed_weights_are_refused(tmp_path: Path):
    for name in ("manifest.json", json.loads((VOTING_DIR / "manifest.json").read_text())["file"]):
        (tmp_path / name).write_bytes((VOTING_DIR / name).read_bytes())
    weights = next(tmp_path.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(WeightsError, match="sha256"):
        VotingNetwork.load(tmp_path)


def test_forward_on_a_real_crop_with_a_missing_modality(data_dir: Path):
    """A real case that ships without T1 and T2: the shipped network runs on FLAIR + T1ce and finds the tumour."""
    case = load_case(data_dir / MISSING_MODALITY_CASE)
    assert {"t1", "t2"} <= set(case.missing)
    images = {m: v.array for m, v in case.volumes.items()}
    masks = _masks_from_truth(case.label, case.volumes)
    window = field_of_view(masks)
    fusion = VotingNetwork.load().fuse(images, masks, case.spacing)
    assert fusion.label.shape == case.label.shape
    assert not fusion.label[tuple(slice(0, w.start) for w in window)].any()  # nothing outside the field of view
    assert _hierarchy_holds(fusion.label)
    assert dice(fusion.label > 0, case.label > 0) > 0.8


def test_shipped_network_beats_the_rule_baseline_on_a_validation_case(validation_case, sam_masks):
    """Real zero-shot SAM masks of every modality from one box: the network wins on TC and ET."""
    assert set(sam_masks) == set(MODALITIES)
    images = {m: v.array for m, v in validation_case.volumes.items()}
    scores = {name: region_scores(fusion.label, validation_case.label, validation_case.spacing, ("ET", "TC", "WT"))
              for name, fusion in (("network", VotingNetwork.load().fuse(images, sam_masks, validation_case.spacing)),
                                   ("rule", rule_baseline(images, sam_masks, validation_case.spacing)))}
    for region in ("TC", "ET"):
        assert scores["network"][region]["dice"] > scores["rule"][region]["dice"], (region, scores)
    assert scores["network"]["WT"]["dice"] > 0.75


def test_flip_averaging_makes_the_output_flip_equivariant():
    """Averaged over the trained flips, a flipped input gives exactly the flipped output (an untrained network
    alone does not), so the left and right hemispheres are treated alike."""
    torch.manual_seed(2)
    model = VotingUNet3D(INPUT_CHANNELS)
    inputs = np.random.default_rng(2).random((INPUT_CHANNELS, 16, 20, 24)).astype(np.float32)
    mirrored = np.ascontiguousarray(np.flip(inputs, 3))
    averaged = flip_averaged_probabilities(model, inputs, patch=16)
    np.testing.assert_allclose(flip_averaged_probabilities(model, mirrored, patch=16), np.flip(averaged, 3), atol=1e-5)
    single = flip_averaged_probabilities(model, inputs, patch=16, flips=((),))
    single_mirrored = flip_averaged_probabilities(model, mirrored, patch=16, flips=((),))
    assert np.abs(single_mirrored - np.flip(single, 3)).max() > 1e-3


def test_whole_tumour_from_flair_alone(validation_case, sam_masks):
    """The automatic path's refinement: the shipped network redraws SAM's FLAIR whole tumour from FLAIR only."""
    flair = validation_case.volume("flair").array
    truth = region_mask(validation_case.label, "WT")
    network = VotingNetwork.load()
    redrawn = network.whole_tumour("flair", flair, sam_masks["flair"], validation_case.spacing)
    assert redrawn.shape == truth.shape and redrawn.dtype == bool
    assert dice(redrawn, truth) > 0.8, dice(redrawn, truth)
    components, count = ndimage.label(redrawn, ndimage.generate_binary_structure(3, 3))
    touched = set(np.unique(components[sam_masks["flair"] & redrawn])) - {0}
    assert touched == set(range(1, count + 1))  # it redraws SAM's lesions, it adds none
    with pytest.raises(VolumeError, match="unknown modality"):
        network.whole_tumour("dwi", flair, sam_masks["flair"], validation_case.spacing)


def test_thick_slices_are_fused_at_the_training_voxel_size(validation_case, sam_masks):
    """An older scanner's 5 mm slices (five slices averaged): the network works on a 1 mm grid and the label
    comes back on the thick grid, still matching the tumour."""
    depth = validation_case.shape[0] // 5 * 5
    thick_image = validation_case.volume("flair").array[:depth].reshape(depth // 5, 5, *validation_case.shape[1:]).mean(1)
    thick_mask, thick_truth = sam_masks["flair"][2:depth:5], region_mask(validation_case.label, "WT")[2:depth:5]
    spacing = (5.0 * validation_case.spacing[0], *validation_case.spacing[1:])
    redrawn = VotingNetwork.load().whole_tumour("flair", thick_image, thick_mask, spacing)
    assert redrawn.shape == thick_truth.shape
    assert dice(redrawn, thick_truth) > 0.75, (dice(redrawn, thick_truth), dice(thick_mask, thick_truth))
