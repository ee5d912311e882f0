"""Lower-quality slices as older scanners give them, for training only (the detector's export, SAM's cache).

The product must hold up on thick slices, bias fields and noise; models see a share of their training slices
degraded so that they do. The evaluation's degraded copies of whole cases live in ``training.detector.evaluate``.
"""

from __future__ import annotations

import numpy as np


def degrade(array: np.ndarray, axis: int, index: int, rng: np.random.Generator) -> np.ndarray:
    """A lower-quality version of one slice: thick-slice partial volume (mean of 3 or 5 neighbours), a smooth
    multiplicative bias field and Gaussian noise, each applied at random; clipped to [0, 1]."""
    moved = np.moveaxis(array, axis, 0)
    plane = moved[index].copy()
    if rng.random() < 0.5:
        radius = int(rng.integers(1, 3))
        plane = moved[max(0, index - radius):index + radius + 1].mean(axis=0)
    brain = plane > 0
    if rng.random() < 0.6:
        rows, cols = np.meshgrid(np.linspace(-1, 1, plane.shape[0]), np.linspace(-1, 1, plane.shape[1]),
                                 indexing="ij")
        a, b, c = rng.uniform(-0.25, 0.25, size=3)
        plane = plane * np.exp(a * rows + b * cols + c * rows * cols)
    if rng.random() < 0.6:
        plane = plane + brain * rng.normal(0.0, rng.uniform(0.01, 0.06), size=plane.shape)
    return np.clip(plane, 0.0, 1.0).astype(np.float32)
