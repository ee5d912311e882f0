"""The dataset builder and the simulated clinician agree with the labels of real cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from SAMBASegmentLib.volumes import load_case
from training.cache import CacheSettings, build_cache
from training.dataset import BuilderSettings, slices_of_case
from training.prompting import MAX_BOX_JITTER, corrective_click, first_click, jittered_box
from training.split import SPLIT_PATH, load_split

CASE = "Brats18_2013_11_1"


@pytest.fixture(scope="module")
def built(data_dir):
    return load_case(data_dir / CASE), slices_of_case(data_dir / CASE, BuilderSettings(), np.random.default_rng(3))


def test_split_is_by_case_and_keeps_the_duplicate_pair_together():
    split = load_split()
    assert not set(split["training"]) & set(split["validation"])
    assert {"Brats18_2013_20_1", "brats_2013_pat0006_1"} <= set(split["training"])
    assert json.loads(SPLIT_PATH.read_text())["validation"] == split["validation"]


def test_validation_cases_are_refused(data_dir, tmp_path):
    with pytest.raises(ValueError, match="validation"):
        build_cache(tmp_path, CacheSettings(), [data_dir / load_split()["validation"][0]])


def test_records_are_the_engine_slices_with_their_labels(built):
    case, found = built
    assert len(found.records) >= 50
    assert {r.modality for r in found.records} == {"flair", "t1", "t1ce", "t2"}
    assert {r.axis for r in found.records} == {0, 1, 2}
    empty = [r for r in found.records if not r.tumour.any()]
    assert 0 < len(empty) < 0.2 * len(found.records)
    for record in found.records + found.exemplars + found.recipients:
        np.testing.assert_array_equal(record.image, case.volume(record.modality).slice(record.axis, record.index))
        np.testing.assert_array_equal(record.label, np.take(case.label, record.index, axis=record.axis))
    assert all(r.tumour.sum() >= 10 for r in found.records if r.tumour.any())
    assert all(not r.tumour.any() for r in found.recipients) and all(r.tumour.any() for r in found.exemplars)


def test_degraded_slices_are_the_same_slices_with_their_labels(built, data_dir):
    """Degrading a share of the slices (older scanners) changes images only: same slices, same labels."""
    case, found = built
    degraded = slices_of_case(data_dir / CASE, BuilderSettings(degrade_fraction=0.5), np.random.default_rng(3))
    assert [(r.modality, r.axis, r.index) for r in degraded.records] == [(r.modality, r.axis, r.index) for r in found.records]
    sources = [r.source for r in degraded.records]
    assert 0.3 * len(sources) < sources.count("degraded") < 0.7 * len(sources)
    for plain, record in zip(found.records, degraded.records):
        np.testing.assert_array_equal(record.label, plain.label)
        if record.source == "real":
            np.testing.assert_array_equal(record.image, plain.image)
        else:
            assert 0.0 <= record.image.min() and record.image.max() <= 1.0
            assert not np.array_equal(record.image, plain.image)
            assert np.corrcoef(record.image.ravel(), plain.image.ravel())[0, 1] > 0.9


def test_boxes_contain_the_tumour_with_at_most_20_px_jitter(built):
    rng = np.random.default_rng(0)
    for record in [r for r in built[1].records if r.tumour.any()]:
        rows, cols = np.nonzero(record.tumour)
        r0, c0, r1, c1 = jittered_box(record.tumour, rng)
        assert r0 <= rows.min() and c0 <= cols.min() and r1 >= rows.max() and c1 >= cols.max()
        assert rows.min() - r0 <= MAX_BOX_JITTER and r1 - rows.max() <= MAX_BOX_JITTER
        assert cols.min() - c0 <= MAX_BOX_JITTER and c1 - cols.max() <= MAX_BOX_JITTER


def test_clicks_agree_with_the_label(built):
    rng = np.random.default_rng(0)
    for record in [r for r in built[1].records if r.tumour.any()][:20]:
        tumour = record.tumour
        click = first_click(tumour, rng)
        assert click.positive and tumour[click.row, click.col]
        missed = tumour.copy()
        missed[: int(np.median(np.nonzero(tumour)[0]))] = False  # the prediction misses the tumour's upper part
        fix = corrective_click(missed, tumour)
        assert fix is not None and fix.positive and tumour[fix.row, fix.col] and not missed[fix.row, fix.col]
        leak = tumour | np.roll(tumour, 30, axis=1)  # the prediction leaks beside the tumour
        fix = corrective_click(leak, tumour)
        assert fix is not None and not fix.positive and leak[fix.row, fix.col] and not tumour[fix.row, fix.col]
        assert corrective_click(tumour, tumour) is None


def test_cached_embedding_is_the_engine_embedding_of_the_volume_slice(tiny_cache, data_dir):
    """The cache holds what the engine computes at inference for that slice of the real volume (fp16 storage)."""
    from SAMBASegmentLib.sam import SamEngine

    entry = next(e for e in tiny_cache.entries if e["source"] == "real" and e["axis"] != 0)
    n = tiny_cache.entries.index(entry)
    volume = load_case(data_dir / entry["case"]).volume(entry["modality"])
    expected = SamEngine.create(adapter=None, device="cpu").embedding(volume, entry["axis"], entry["index"])
    cached = tiny_cache.embeddings([n])
    assert cached.shape == expected.shape == (1, 256, 64, 64)
    torch.testing.assert_close(cached, expected, atol=5e-2, rtol=1e-2)  # bf16 encoder, fp16 storage


def test_shrunk_boxes_stay_within_their_limits_and_valid():
    mask = np.zeros((60, 60), dtype=bool)
    mask[20:30, 25:28] = True  # three columns wide: shrinking can cross the middle
    rng = np.random.default_rng(0)
    for _ in range(200):
        r0, c0, r1, c1 = jittered_box(mask, rng, max_jitter=4, max_shrink=6)
        assert r0 <= r1 and c0 <= c1
        assert 20 - 4 <= r0 and r1 <= 29 + 4 and 25 - 4 <= c0 and c1 <= 27 + 4
    inside = [jittered_box(mask, rng, max_jitter=0, max_shrink=3) for _ in range(50)]
    assert all(20 <= b[0] and b[2] <= 29 for b in inside) and any(b[0] > 20 for b in inside)
