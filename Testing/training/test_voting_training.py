"""Voting-network training: cached masks round-trip, patches keep inputs and labels aligned, steps lower the loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.volumes import MODALITIES, load_case
from SAMBASegmentLib.voting.fusion import INPUT_CHANNELS
from SAMBASegmentLib.voting.network import VotingUNet3D
from training.voting.masks import VARIANTS, load_case_masks, mask_key, save_case_masks
from training.voting.train import PATCH, load_training_case, sample_patch, voting_loss

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
