"""Propagation through a real tumour, re-prompting, progress and cancel; simulated clinician prompts."""

from __future__ import annotations

import numpy as np
import pytest

from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.metrics import dice
from SAMBASegmentLib.pipeline import evaluate_case, segment_box3d, segment_prompted
from SAMBASegmentLib.prompts import Box3D, SlicePrompt, add_click
from SAMBASegmentLib.propagation import PropagationSession
from SAMBASegmentLib.simulation import box2d_prompts, box3d_prompt, corrective_click, point_prompts


@pytest.fixture(scope="module")
def box3d_run(engine, real_case):
    truth = region_mask(real_case.label, "WT")
    simulated = box3d_prompt(truth, 0)
    steps: list[tuple[int, int]] = []
    session, result = segment_box3d(engine, real_case.volume("flair"), simulated.box, 0, simulated.seed_index,
                                    simulated.seed_box, progress=lambda done, total: steps.append((done, total)))
    return truth, simulated, session, result, steps


def test_box3d_propagation_reaches_the_whole_tumour(box3d_run):
    truth, simulated, _, result, steps = box3d_run
    assert not result.cancelled
    assert dice(result.mask, truth) >= 0.88
    k_low, k_high = simulated.box.slice_range(0)
    assert not result.mask[:k_low].any() and not result.mask[k_high + 1:].any()
    assert steps[-1][0] == steps[-1][1] and [d for d, _ in steps] == sorted(d for d, _ in steps)


def test_reprompting_repropagates_away_from_the_seed_only(engine, real_case, box3d_run):
    truth, simulated, session, _, _ = box3d_run
    before = session.mask.copy()
    seed = simulated.seed_index
    index = seed + 10
    calls = engine.encoder_calls
    prompts = add_click(session.slice_prompts[index], *np.argwhere(truth[index])[0], positive=True)
    result = session.run(index, prompts)
    assert result.changed == (index, session.slice_range[1])
    assert np.array_equal(session.mask[: index], before[: index])  # the seed side is untouched
    assert session.slice_prompts[index] == prompts
    assert engine.encoder_calls == calls  # every slice was already embedded


def test_cancel_keeps_the_work_done(engine, real_case):
    truth = region_mask(real_case.label, "WT")
    simulated = box3d_prompt(truth, 0)
    session = PropagationSession(engine, real_case.volume("flair"), 0, simulated.box.slice_range(0))
    seen = []
    result = session.run(simulated.seed_index, [SlicePrompt(box=simulated.seed_box)],
                         progress=lambda done, total: seen.append(done), cancel=lambda: len(seen) >= 4)
    assert result.cancelled and result.slices_segmented == 4
    assert result.mask[simulated.seed_index].any()
    assert result.mask.any(axis=(1, 2)).sum() == 4


def test_a_slice_s_own_prompts_replace_what_the_box_propagated_there(engine, real_case, box3d_run):
    """Refine's per-modality segmentation: the box propagated, then a slice with a prompt of its own segmented with
    that prompt alone (here a small box drawn on brain far from the tumour: what propagation found there goes)."""
    truth, simulated, _, _, _ = box3d_run
    volume = real_case.volume("flair")
    propagated = segment_box3d(engine, volume, simulated.box, 0)[1].mask
    index = simulated.seed_index + 2
    brain = np.argwhere(volume.array[index] > 0)
    far = brain[np.argmax(np.linalg.norm(brain - np.argwhere(truth[index]).mean(axis=0), axis=1))]
    inward = np.sign(brain.mean(axis=0) - far).astype(int) * 15  # a 15-pixel box reaching into the brain
    corners = np.sort([far, far + inward], axis=0)
    own = {index: [SlicePrompt(box=(*map(int, corners[0]), *map(int, corners[1])))]}
    steps = []
    mask = segment_prompted(engine, volume, 0, [simulated.box], own,
                            progress=lambda step, done, total: steps.append((step, done, total)))
    others = np.arange(mask.shape[0]) != index
    assert np.array_equal(mask[others], propagated[others])
    assert np.array_equal(mask[index], engine.segment(volume, 0, index, own[index]))
    assert dice(propagated[index], truth[index]) >= 0.8 and not (mask[index] & truth[index]).any()
    assert steps[-1] == (1, 1, 1) and {step for step, _, _ in steps} == {0, 1}


def test_box_outside_the_volume_is_refused(engine, real_case):
    from SAMBASegmentLib.errors import PromptError

    with pytest.raises(PromptError, match="lies outside the volume"):
        segment_box3d(engine, real_case.volume("flair"), Box3D.from_ijk(300, 10, 10, 400, 50, 50))


def test_simulated_prompts_agree_with_the_label(real_case):
    truth = region_mask(real_case.label, "WT")
    boxes = box2d_prompts(truth, 0)
    assert sorted(boxes) == [k for k in range(truth.shape[0]) if truth[k].sum() >= 10]
    for k, (prompt,) in boxes.items():
        rows, cols = np.nonzero(truth[k])
        assert prompt.box == (max(rows.min() - 5, 0), max(cols.min() - 5, 0), rows.max() + 5, cols.max() + 5)
    for k, (prompt,) in point_prompts(truth, 0).items():
        assert truth[k][prompt.points[0]] and prompt.point_labels == (1,)
    simulated = box3d_prompt(truth, 0)
    present = np.nonzero(truth.any(axis=(1, 2)))[0]
    assert simulated.box.slice_range(0) == (present.min(), present.max())
    assert simulated.seed_index == int(np.argmax(truth.sum(axis=(1, 2))))


def test_corrective_click_follows_the_protocol():
    truth = np.zeros((10, 30, 30), bool)
    truth[2:8, 5:15, 5:15] = True
    prediction = truth.copy()
    prediction[2:8, 5:15, 10:15] = False  # a large miss
    prediction[4:6, 20:23, 20:23] = True  # a small false positive
    click = corrective_click(prediction, truth, (1.0, 1.0, 1.0))
    assert click.positive and truth[click.index] and not prediction[click.index]
    prediction = truth.copy()
    prediction[2:8, 20:28, 20:28] = True  # now the false positive is the largest error
    click = corrective_click(prediction, truth, (1.0, 1.0, 1.0))
    assert not click.positive and prediction[click.index] and not truth[click.index]
    assert corrective_click(truth, truth, (1.0, 1.0, 1.0)) is None


def test_corrective_clicks_reach_the_model(engine, real_case):
    """Each simulated click lands in the prediction: box2d with clicks differs from box2d alone, in at most one run
    of neighbouring slices per click (corrections.py carries a click's change to the slices beside it).
    (Zero-shot LiteMedSAM is box-trained: whether clicks *help* is the adapter's job.)"""
    without = evaluate_case(engine, real_case, "box2d", clicks=0)
    with_clicks = evaluate_case(engine, real_case, "box2d", clicks=2)
    changed_slices = np.nonzero((without.prediction != with_clicks.prediction).any(axis=(1, 2)))[0]
    runs = 1 + int(np.count_nonzero(np.diff(changed_slices) > 1)) if len(changed_slices) else 0
    assert 1 <= runs <= 2
