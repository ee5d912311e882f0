"""Voting-network training: cached masks round-trip, patches keep inputs and labels aligned, steps lower the loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from SAMBASegmentLib.errors import WeightsError
from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.volumes import MODALITIES, load_case
from SAMBASegmentLib.voting import VotingNetwork
from SAMBASegmentLib.voting.fusion import INPUT_CHANNELS, NORMAL_BRAIN_LEVEL
from SAMBASegmentLib.voting.network import VotingUNet3D
from training.split import case_dirs
from training.voting.masks import VARIANTS, load_case_masks, mask_key, save_case_masks
from training.voting.ship import combine, export, model_card
from training.voting.train import (BATCH_NORM_BATCHES, MAX_BORDER_SHIFT, PATCH, WARMUP_STEPS, MaskNoise,
                                   load_training_case, recalibrate_batch_norm, sample_patch, shifted_border,
                                   voting_loss)
from training.voting.train import main as train_main

CASE = "brats_2013_pat0006_1"  # training side; FLAIR and T1ce only, so dropped modalities are exercised too


def _cache_exact_masks(case, folder: Path) -> dict[str, np.ndarray]:
    """'SAM masks' equal to the whole tumour, for every variant and present modality."""
    whole = region_mask(case.label, "WT")
    masks = {mask_key(v, m): whole for v in VARIANTS for m in case.volumes}
    save_case_masks(masks, folder / f"{case.name}.npz")
    return masks


def test_patches_keep_images_masks_and_labels_aligned(data_dir: Path, tmp_path: Path):
    case = load_case(data_dir / CASE)
    stored = _cache_exact_masks(case, tmp_path)
    loaded = load_case_masks(case.name, tmp_path)
    assert loaded.keys() == stored.keys() and all(np.array_equal(loaded[k], stored[k]) for k in stored)

    volumes = load_training_case(data_dir / CASE, tmp_path)
    assert volumes.present.tolist() == [m in case.volumes for m in MODALITIES]
    rng = np.random.default_rng(0)
    flair = MODALITIES.index("flair")
    for _ in range(8):
        inputs, regions = sample_patch(volumes, rng)
        assert inputs.shape == (INPUT_CHANNELS, PATCH, PATCH, PATCH) and regions.shape == (3, PATCH, PATCH, PATCH)
        assert np.all(regions[0] >= regions[1]) and np.all(regions[1] >= regions[2])  # WT ⊇ TC ⊇ ET
        flags = inputs[2 * len(MODALITIES):, 0, 0, 0]
        for channel, present in enumerate(flags):
            mask = inputs[len(MODALITIES) + channel]
            if present:  # the mask channel is the whole tumour, flipped with the labels
                np.testing.assert_array_equal(mask, regions[0])
            else:
                assert not mask.any() and not inputs[channel].any()
        if flags[flair]:  # tumour is bright on FLAIR in this case, after any flip
            image = inputs[flair]
            assert regions[0].sum() < 100 or image[regions[0] > 0].mean() > image[(regions[0] == 0) & (image > 0)].mean()


def test_relative_intensities_scale_each_image_to_its_normal_brain(data_dir: Path, tmp_path: Path):
    """--relative-intensities trains on what the engine feeds such a network: each image scaled so that its brain
    outside the SAM masks has a median of NORMAL_BRAIN_LEVEL."""
    case = load_case(data_dir / CASE)
    _cache_exact_masks(case, tmp_path)
    as_normalised = load_training_case(data_dir / CASE, tmp_path)
    relative = load_training_case(data_dir / CASE, tmp_path, relative_intensities=True)
    whole = region_mask(case.label, "WT")
    for modality, volume in case.volumes.items():
        channel = MODALITIES.index(modality)
        brain = as_normalised.images[channel].astype(np.float32) > 0.05
        ratio = relative.images[channel][brain].astype(np.float32) / as_normalised.images[channel][brain]
        expected = NORMAL_BRAIN_LEVEL / np.median(volume.array[(volume.array > 0) & ~whole])
        np.testing.assert_allclose(ratio, expected, rtol=2e-3)
    np.testing.assert_array_equal(relative.masks, as_normalised.masks)
    np.testing.assert_array_equal(relative.regions, as_normalised.regions)


def test_mask_noise_moves_each_masks_border_by_a_few_voxels_only(data_dir: Path, tmp_path: Path):
    case = load_case(data_dir / CASE)
    _cache_exact_masks(case, tmp_path)
    volumes = load_training_case(data_dir / CASE, tmp_path)
    rng = np.random.default_rng(2)
    grown = shrunk = 0
    for _ in range(12):
        inputs, regions = sample_patch(volumes, rng, drop_probabilities=(0.0,), mask_noise=MaskNoise(1.0))
        whole = regions[0] > 0
        if whole.sum() < 2000:
            continue
        widest = ndimage.binary_dilation(whole, iterations=MAX_BORDER_SHIFT)
        narrowest = ndimage.binary_erosion(whole, iterations=MAX_BORDER_SHIFT)
        for channel in np.nonzero(inputs[2 * len(MODALITIES):, 0, 0, 0])[0]:
            mask = inputs[len(MODALITIES) + channel] > 0
            assert not np.array_equal(mask, whole)  # every mask was perturbed ...
            assert np.all(mask <= widest) and np.all(narrowest <= mask)  # ... by at most MAX_BORDER_SHIFT voxels
            grown += int(mask.sum() > whole.sum())
            shrunk += int(mask.sum() < whole.sum())
    assert grown > 0 and shrunk > 0


def test_inward_noise_shrinks_every_mask_of_a_patch_together_and_never_from_the_patch_edge(data_dir: Path,
                                                                                            tmp_path: Path):
    """SAM stops short of faint oedema in every modality at once: the noise that teaches the network to grow a
    border back must shrink all of a patch's masks, by up to ``max_shift`` voxels, and only at the tumour's border."""
    case = load_case(data_dir / CASE)
    _cache_exact_masks(case, tmp_path)
    volumes = load_training_case(data_dir / CASE, tmp_path)
    rng = np.random.default_rng(3)
    noise = MaskNoise(chance=1.0, max_shift=7, inward_share=0.9, same_direction=True)
    directions, deepest = [], 0
    for _ in range(16):
        inputs, regions = sample_patch(volumes, rng, drop_probabilities=(0.0,), mask_noise=noise)
        whole = regions[0] > 0
        if whole.sum() < 2000:
            continue
        moved = []
        for channel in np.nonzero(inputs[2 * len(MODALITIES):, 0, 0, 0])[0]:
            mask = inputs[len(MODALITIES) + channel] > 0
            assert np.all(ndimage.binary_erosion(whole, iterations=7, border_value=1) <= mask)
            assert np.all(mask <= ndimage.binary_dilation(whole, iterations=7))
            moved.append(int(np.sign(mask.sum() - whole.sum())))
            if moved[-1] < 0:
                deepest = max(deepest, int(np.max(ndimage.distance_transform_edt(whole & ~mask))))
        assert len(set(moved)) == 1 and moved[0] != 0  # every modality moved, and the same way
        directions.append(moved[0])
    assert directions.count(-1) > directions.count(1) and deepest > MAX_BORDER_SHIFT

    full = np.ones((8, 8, 8), dtype=np.float32)  # a patch inside the tumour: nothing to erode
    np.testing.assert_array_equal(shifted_border(full, rng, 7, inward_share=1.0), full)


def test_a_few_steps_lower_the_loss(data_dir: Path, tmp_path: Path):
    case = load_case(data_dir / CASE)
    _cache_exact_masks(case, tmp_path)
    volumes = load_training_case(data_dir / CASE, tmp_path)
    rng = np.random.default_rng(1)
    batch = [sample_patch(volumes, rng) for _ in range(2)]
    inputs = torch.from_numpy(np.stack([b[0] for b in batch]))[..., 8:40, 8:40, 8:40]
    target = torch.from_numpy(np.stack([b[1] for b in batch]))[..., 8:40, 8:40, 8:40]
    torch.manual_seed(0)
    model = VotingUNet3D(INPUT_CHANNELS)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = voting_loss(model(inputs), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0], losses


def _real_batches(data_dir: Path, tmp_path: Path, count: int, side: int = 32) -> list[torch.Tensor]:
    case = load_case(data_dir / CASE)
    _cache_exact_masks(case, tmp_path)
    volumes = load_training_case(data_dir / CASE, tmp_path)
    rng = np.random.default_rng(3)
    return [torch.from_numpy(np.stack([sample_patch(volumes, rng)[0][..., :side, :side, :side] for _ in range(2)]))
            for _ in range(count)]


def test_batch_norm_keeps_the_mean_statistics_of_the_recalibration_batches(data_dir: Path, tmp_path: Path):
    """After recalibration a batch-normalised network normalises with the plain mean of the batches' statistics
    (not training's running average, which follows the last few batches), and training's momentum is back."""
    first, second = _real_batches(data_dir, tmp_path, 2)
    torch.manual_seed(0)
    model = VotingUNet3D(INPUT_CHANNELS, normalisation="batch")
    first_conv, first_norm = model.encoders[0][0], model.encoders[0][1]
    with torch.no_grad():
        means = [first_conv(batch).mean(dim=(0, 2, 3, 4)) for batch in (first, second)]
    batches = iter((first, second))
    assert recalibrate_batch_norm(model, lambda: next(batches), 2) == 10  # two per double convolution, five of them
    torch.testing.assert_close(first_norm.running_mean, (means[0] + means[1]) / 2, rtol=1e-4, atol=1e-5)
    assert first_norm.momentum == 0.1 and int(first_norm.num_batches_tracked) == 2

    instance = VotingUNet3D(INPUT_CHANNELS)
    before = {k: v.clone() for k, v in instance.state_dict().items()}
    assert recalibrate_batch_norm(instance, lambda: first, 2) == 0
    assert all(torch.equal(before[k], v) for k, v in instance.state_dict().items())


def test_a_batch_normalised_run_ships_and_loads_with_its_statistics(data_dir: Path, tmp_path: Path):
    """train → ship → engine: the manifest names the normalisation, the engine builds the same network and it gives
    exactly the trained network's outputs (statistics included); an unknown normalisation is refused."""
    first_case = load_case(case_dirs("training", data_dir)[0])
    _cache_exact_masks(first_case, tmp_path)
    run = tmp_path / "run"
    assert train_main(["--out", str(run), "--cache", str(tmp_path), "--cases", "1", "--steps", "2", "--patch", "16",
                       "--save-every", "1", "--normalisation", "batch", "--seed", "2"]) == 0
    manifest = export(run, tmp_path / "export")
    assert manifest["normalisation"] == "batch" and "batch norm" in manifest["architecture"]
    assert manifest["training_settings"]["cache"] == tmp_path.name  # the mask cache's name, not a path on this machine
    assert manifest["training_masks"] == "litemedsam (zero-shot), axial only"  # a cache that does not say its engine
    engine = "litemedsam + adapter sam_adapter on CPU (bf16 autocast)"
    (tmp_path / "settings.json").write_text(json.dumps({"engine": engine, "views": 1}))
    manifest = export(run, tmp_path / "export")
    assert manifest["training_masks"] == f"{engine}, axial only"
    assert f"trained on masks from\n{engine}, axial only" in model_card(manifest, [])  # the card says which SAM it learned
    trained = VotingUNet3D(INPUT_CHANNELS, normalisation="batch")
    trained.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=True)["model"])
    assert int(trained.encoders[0][1].num_batches_tracked) == BATCH_NORM_BATCHES
    loaded = VotingNetwork.load(tmp_path / "export").models[0]
    assert loaded.normalisation == "batch"
    batch = _real_batches(data_dir, tmp_path, 1, side=16)[0]
    with torch.inference_mode():
        torch.testing.assert_close(loaded(batch), trained.eval()(batch), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown normalisation 'group'"):
        VotingUNet3D(INPUT_CHANNELS, normalisation="group")


def _exported_weights(folder: Path) -> dict[str, torch.Tensor]:
    return VotingNetwork.load(folder).models[0].state_dict()


def test_weight_averaging_starts_from_a_network_and_ships_the_running_average(data_dir: Path, tmp_path: Path):
    """--init starts from an exported network's weights (nothing else: a zero learning rate leaves them as they
    are); --average-every ships the mean of the weights visited after warm-up, and a resumed run goes on averaging."""
    first_case = load_case(case_dirs("training", data_dir)[0])
    _cache_exact_masks(first_case, tmp_path)
    common = ["--cache", str(tmp_path), "--cases", "1", "--patch", "16", "--save-every", "1"]
    assert train_main(["--out", str(tmp_path / "start"), "--steps", "2", *common]) == 0
    start = export(tmp_path / "start", tmp_path / "start_export")

    unchanged = tmp_path / "unchanged"
    assert train_main(["--out", str(unchanged), "--init", str(tmp_path / "start_export"), "--lr", "0", "--steps", "1",
                       *common]) == 0
    export(unchanged, tmp_path / "unchanged_export")
    initial = _exported_weights(tmp_path / "start_export")
    assert all(torch.equal(initial[k], v) for k, v in _exported_weights(tmp_path / "unchanged_export").items())

    run = tmp_path / "averaged"
    averaging = ["--out", str(run), "--init", str(tmp_path / "start_export"), "--schedule", "constant",
                 "--average-every", "1", "--lr", "1e-3", *common]
    visited = []
    for steps in (WARMUP_STEPS + 1, WARMUP_STEPS + 2):  # the second call resumes the first
        assert train_main([*averaging, "--steps", str(steps)]) == 0
        visited.append(torch.load(run / "checkpoint.pt", weights_only=True)["model"])
    manifest = export(run, tmp_path / "averaged_export")
    assert manifest["training_settings"]["init_sha256"] == start["sha256"]
    assert manifest["training_settings"]["average_every"] == 1
    shipped = _exported_weights(tmp_path / "averaged_export")
    for name, weight in shipped.items():
        if weight.is_floating_point():
            torch.testing.assert_close(weight, (visited[0][name] + visited[1][name]) / 2)
    assert not torch.equal(shipped["head.weight"], visited[1]["head.weight"])  # the average, not the last weights

    with pytest.raises(SystemExit, match="widths"):
        train_main(["--out", str(tmp_path / "wider"), "--init", str(tmp_path / "start_export"), "--widths", "8", "16",
                    "--steps", "1", *common])


def test_an_ensemble_ships_every_member_and_the_engine_averages_their_probabilities(data_dir: Path, tmp_path: Path):
    """Networks of one recipe trained from different seeds ship as one folder (each member's weights and sha256);
    the engine's probabilities are the mean of the members' own; members that differ in anything but their
    training are refused, as is an ensemble where one network is expected."""
    first_case = load_case(case_dirs("training", data_dir)[0])
    _cache_exact_masks(first_case, tmp_path)
    common = ["--cache", str(tmp_path), "--cases", "1", "--steps", "2", "--patch", "16", "--save-every", "1"]
    exports = []
    for seed, widths in ((1, "12 24 48"), (2, "12 24 48"), (3, "8 16")):
        assert train_main(["--out", str(tmp_path / f"seed{seed}"), "--seed", str(seed), "--widths", *widths.split(),
                           *common]) == 0
        export(tmp_path / f"seed{seed}", tmp_path / f"export{seed}")
        exports.append(tmp_path / f"export{seed}")

    manifest = combine(exports[:2], tmp_path / "ensemble")
    assert [m["training_settings"]["seed"] for m in manifest["members"]] == [1, 2]
    ensemble = VotingNetwork.load(tmp_path / "ensemble")
    members = [VotingNetwork.load(folder) for folder in exports[:2]]
    assert len(ensemble.models) == 2 and "2 networks averaged" in ensemble.describe()
    card = model_card(manifest, [{"summary": {}, "masks": str(tmp_path)}])
    assert "seeds 1 and 2" in card and all(m["sha256"] in card for m in manifest["members"])

    images = {m: v.array for m, v in first_case.volumes.items()}
    masks = {m: region_mask(first_case.label, "WT") for m in first_case.volumes}
    centre = np.argwhere(masks["flair"]).mean(axis=0).astype(int)
    window = tuple(slice(c - 12, c + 12) for c in centre)
    images, masks = ({m: a[window] for m, a in given.items()} for given in (images, masks))
    each = [network.probabilities(images, masks)[1] for network in members]
    averaged = ensemble.probabilities(images, masks)[1]
    np.testing.assert_allclose(averaged, (each[0] + each[1]) / 2, atol=1e-6)
    assert np.abs(each[0] - each[1]).max() > 1e-3  # the seeds differ, so the average is not one member's output

    with pytest.raises(ValueError, match="widths"):
        combine([exports[0], exports[2]], tmp_path / "mixed")
    with pytest.raises(ValueError, match="already an ensemble"):
        combine([tmp_path / "ensemble", exports[2]], tmp_path / "nested")
    with pytest.raises(ValueError, match="holds a member"):
        combine(exports[:2], exports[0])
    with pytest.raises(SystemExit, match="ensemble of 2 networks"):
        train_main(["--out", str(tmp_path / "from_ensemble"), "--init", str(tmp_path / "ensemble"), *common])

    member_file = tmp_path / "ensemble" / manifest["members"][1]["file"]
    member_file.write_bytes(member_file.read_bytes()[:-1] + b"\0")
    with pytest.raises(WeightsError, match="sha256"):
        VotingNetwork.load(tmp_path / "ensemble")
