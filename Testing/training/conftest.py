"""Fixtures of the training tests: the real cases (missing data fails, never skips) and a tiny embedding cache.

``data_dir`` (with its fail-loudly rule) comes from Testing/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Two training-side cases: a four-modality BraTS 2018 case and the two-modality z-scored 2013 case.
CACHE_CASES = ("Brats18_2013_11_1", "brats_2013_pat0006_1")


@pytest.fixture(scope="session")
def tiny_cache(data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real cache: a few slices of two training cases plus synthetic ones, encoded by the engine."""
    from training.cache import CacheSettings, build_cache
    from training.dataset import BuilderSettings

    settings = CacheSettings(BuilderSettings(slices_per_case=5, exemplar_fraction=0.02), synthetic=2, seed=0)
    return build_cache(tmp_path_factory.mktemp("cache"), settings, [data_dir / name for name in CACHE_CASES])
