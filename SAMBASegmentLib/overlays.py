"""Pictures for people who would rather look than read: the worst slices of an evaluation, as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .prompts import in_plane_axes


def worst_slices(prediction: np.ndarray, truth: np.ndarray, axis: int, count: int) -> list[int]:
    """Slices with the most wrongly labelled voxels."""
    errors = (prediction ^ truth).sum(axis=in_plane_axes(axis))
    return [int(i) for i in np.argsort(errors)[::-1][:count] if errors[i] > 0]


def save_worst_slices(image: np.ndarray, prediction: np.ndarray, truth: np.ndarray, path: Path | str,
                      title: str, axis: int = 0, count: int = 3) -> Path | None:
    """One PNG: the ``count`` worst slices, ground truth in green, prediction in red (outlines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    indices = worst_slices(prediction, truth, axis, count)
    if not indices:
        return None
    figure, axes = plt.subplots(1, len(indices), figsize=(4 * len(indices), 4.4), squeeze=False)
    for ax, index in zip(axes[0], indices):
        ax.imshow(np.take(image, index, axis=axis), cmap="gray", vmin=0, vmax=1)
        for mask, colour in ((np.take(truth, index, axis=axis), "lime"), (np.take(prediction, index, axis=axis), "red")):
            if mask.any():
                ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=1.0)
        ax.set_title(f"slice {index}", fontsize=9)
        ax.axis("off")
    figure.suptitle(f"{title}   green: ground truth, red: SAM", fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
