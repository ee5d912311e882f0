"""The three-view check: prompts from a mask's cross-sections, and the vote on a real validation tumour."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.metrics import dice
from SAMBASegmentLib.multiview import (SLIVER_FRACTION, cross_view_prompts, objects_of, three_view_problem,
                                      three_view_vote)
from SAMBASegmentLib.pipeline import checked_in_views, segment_box3d
from SAMBASegmentLib.propagation import PropagationSettings
from SAMBASegmentLib.simulation import box3d_prompt
from SAMBASegmentLib.volumes import ScalarVolume, load_case

# A validation case whose single-view propagation misses much of the tumour's border (never trained on).
CHECK_CASE = "Brats18_TCIA01_425_1"


def test_cross_view_prompts_box_each_component_of_each_cross_section():
    mask = np.zeros((20, 30, 40), dtype=bool)
    mask[5:10, 4:9, 10:14] = True  # two blobs side by side along i ...
    mask[5:10, 4:9, 25:30] = True
    mask[12:15, 20:24, 12:14] = True  # ... and one further along k and j
    settings = PropagationSettings(box_margin=2, min_pixels=1)
    coronal = cross_view_prompts(mask, 1, settings)  # slices across j: rows k, columns i
    assert sorted(coronal) == [*range(4, 9), *range(20, 24)]
    assert [p.box for p in coronal[6]] == [(3, 8, 11, 15), (3, 23, 11, 31)]
    assert [p.box for p in coronal[21]] == [(10, 10, 16, 15)]
    sagittal = cross_view_prompts(mask, 2, settings)  # slices across i: rows k, columns j
    assert sorted(sagittal) == [*range(10, 14), *range(25, 30)]
    assert [p.box for p in sagittal[12]] == [(3, 2, 11, 10), (10, 18, 16, 25)]  # both objects cross i = 12
    assert cross_view_prompts(np.zeros_like(mask), 1) == {}


def test_the_vote_keeps_pieces_of_the_first_views_objects_but_not_slivers_or_new_objects():
    mask = np.zeros((30, 30, 60), dtype=bool)
    mask[5:25, 5:25, 5:35] = True  # a tumour ...
    mask[10:13, 10:13, 50:53] = True  # ... and a small satellite lesion: 27 voxels, an object of its own
    voted = mask.copy()
    voted[:, :, 30:35] = False  # the vote trims the tumour's end (10,000 voxels left) ...
    voted[5:7, 5:7, 33:35] = True  # ... and leaves an 8-voxel sliver cut off from it
    voted[0:2, 0:2, 40:42] = True  # a blob where the first view had nothing
    kept = objects_of(voted, mask)
    assert 8 < SLIVER_FRACTION * 10_000
    np.testing.assert_array_equal(kept[:, :, :30], voted[:, :, :30])  # the tumour's main piece
    assert not kept[:, :, 32:35].any()  # the sliver
    assert not kept[0:2, 0:2, 40:42].any()  # the new blob
    assert kept[10:13, 10:13, 50:53].all()  # the satellite: the largest (only) piece of its own object


def test_views_must_be_one_or_three(engine, real_case):
    with pytest.raises(ValueError, match="views must be one of"):
        checked_in_views(engine, real_case.volume("flair"), np.zeros(real_case.shape, bool), 0, 2)


def test_thick_slices_keep_the_first_views_mask_with_a_warning(engine, real_case, caplog):
    flair = real_case.volume("flair")
    assert three_view_problem(flair.spacing) is None and three_view_problem((1.8, 1.0, 1.0)) is None
    thick = ScalarVolume(flair.array[::5], (flair.spacing[0] * 5, *flair.spacing[1:]), flair.direction)
    mask = np.zeros(thick.array.shape, dtype=bool)
    mask[14:18, 100:130, 90:120] = True
    calls = engine.encoder_calls
    with caplog.at_level(logging.WARNING, logger="SAMBASegmentLib.pipeline"):
        kept = checked_in_views(engine, thick, mask, 0, 3)
    np.testing.assert_array_equal(kept, mask)
    assert engine.encoder_calls == calls
    assert "three-view check skipped" in caplog.text and "5.0 times as deep as wide (5 x 1 x 1 mm)" in caplog.text


@pytest.fixture(scope="module")
def checked(engine, data_dir: Path):
    case = load_case(data_dir / CHECK_CASE)
    truth = region_mask(case.label, "WT")
    simulated = box3d_prompt(truth, 0)
    volume = case.volume("flair")
    single = segment_box3d(engine, volume, simulated.box, 0, simulated.seed_index, simulated.seed_box)[1].mask.copy()
    steps: list[tuple[int, int]] = []
    voted = three_view_vote(engine, volume, single, 0, progress=lambda done, total: steps.append((done, total)))
    engine.clear_cache(volume)
    return truth, single, voted, steps


def test_three_view_check_raises_whole_tumour_dice_on_a_validation_case(checked):
    truth, single, voted, steps = checked
    print(f"{CHECK_CASE} FLAIR box3d WT Dice: one view {dice(single, truth):.3f}, three views {dice(voted, truth):.3f}")
    assert dice(voted, truth) >= dice(single, truth) + 0.03
    assert steps[-1][0] == steps[-1][1] and [d for d, _ in steps] == sorted(d for d, _ in steps)


def test_three_view_check_adds_no_new_object(checked):
    _, single, voted, _ = checked
    components, count = ndimage.label(voted, ndimage.generate_binary_structure(3, 3))
    assert count >= 1
    assert all((single & (components == n)).any() for n in range(1, count + 1))


def test_three_view_check_cancelled_returns_the_mask_unchanged(engine, real_case):
    mask = np.zeros(real_case.shape, dtype=bool)
    mask[70:80, 100:120, 100:120] = True
    result = three_view_vote(engine, real_case.volume("flair"), mask, 0, cancel=lambda: True)
    np.testing.assert_array_equal(result, mask)
