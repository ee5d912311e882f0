"""Propagation: from a prompted slice, segment the neighbours one by one, each prompted from the previous mask.

A ``PropagationSession`` keeps the 3D mask and the prompts every slice was segmented with. Prompting a slice
again re-segments it and re-propagates away from the first (seed) slice only, so the rest of the work — and
any slice the user prompted by hand — is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import PromptError
from .prompts import SlicePrompt, component_boxes
from .sam.engine import SamEngine
from .volumes import ScalarVolume

ProgressCallback = Callable[[int, int], None]
CancelCheck = Callable[[], bool]


@dataclass(frozen=True)
class PropagationSettings:
    """``box_margin``: pixels added around the previous slice's mask; ``min_pixels``: below this the mask has
    vanished (and propagation stops); components smaller than that are not carried to the next slice."""

    box_margin: int = 5
    min_pixels: int = 10


@dataclass
class PropagationResult:
    """``changed``: the inclusive slice range this run may have rewritten (the rest of ``mask`` is as before);
    ``slices_segmented``: slices SAM ran on (cleared slices beyond a vanished mask are not counted)."""

    mask: np.ndarray
    slices_segmented: int
    cancelled: bool
    changed: tuple[int, int]


class PropagationSession:
    """The slice-by-slice segmentation of one volume along one view axis."""

    def __init__(self, engine: SamEngine, volume: ScalarVolume, axis: int,
                 slice_range: tuple[int, int] | None = None, settings: PropagationSettings = PropagationSettings()):
        self.engine, self.volume, self.axis, self.settings = engine, volume, axis, settings
        depth = volume.array.shape[axis]
        low, high = slice_range if slice_range is not None else (0, depth - 1)
        self.slice_range = (max(0, int(low)), min(depth - 1, int(high)))
        self.mask = np.zeros(volume.array.shape, dtype=bool)
        self.slice_prompts: dict[int, list[SlicePrompt]] = {}
        self.user_slices: set[int] = set()
        self.seed: int | None = None

    def _slice_view(self, index: int) -> np.ndarray:
        selector = [slice(None)] * 3
        selector[self.axis] = index
        return self.mask[tuple(selector)]

    def _prompts_from(self, previous: np.ndarray) -> list[SlicePrompt]:
        boxes = component_boxes(previous, self.settings.box_margin, self.settings.min_pixels)
        return [SlicePrompt(box=box) for box in boxes]

    def _segment(self, index: int, prompts: Sequence[SlicePrompt]) -> np.ndarray:
        result = self.engine.segment(self.volume, self.axis, index, prompts)
        self._slice_view(index)[...] = result
        self.slice_prompts[index] = list(prompts)
        return result

    def _clear(self, index: int) -> None:
        self._slice_view(index)[...] = False
        self.slice_prompts.pop(index, None)

    def run(self, index: int, prompts: Sequence[SlicePrompt], progress: ProgressCallback | None = None,
            cancel: CancelCheck | None = None) -> PropagationResult:
        """Segment slice ``index`` with the user's ``prompts`` and propagate outward from it.

        The first call propagates both ways; later calls propagate away from the seed (both ways on the seed).
        Slices beyond the point where the mask vanishes are cleared, unless the user prompted them.
        """
        depth = self.volume.array.shape[self.axis]
        if not prompts:
            raise PromptError(f"slice {index}: nothing to segment from (no box, click or mask)")
        if not 0 <= index < depth:
            raise PromptError(f"slice {index} is outside the volume (0-{depth - 1})")
        # A prompt outside the range means the user wants that slice too: the range grows to include it.
        low, high = min(self.slice_range[0], index), max(self.slice_range[1], index)
        self.slice_range = (low, high)
        if self.seed is None:
            self.seed = index
        self.user_slices.add(index)
        directions = [-1, 1] if index == self.seed else [1 if index > self.seed else -1]
        changed = (low if -1 in directions else index, high if 1 in directions else index)
        total = changed[1] - changed[0] + 1
        done = segmented = 1
        self._segment(index, prompts)
        if progress:
            progress(done, total)
        for direction in directions:
            previous = self._slice_view(index).copy()
            current = index + direction
            vanished = False
            while low <= current <= high:
                if cancel and cancel():
                    return PropagationResult(self.mask, segmented, True, changed)
                if current in self.user_slices:
                    previous = self._segment(current, self.slice_prompts[current])
                    segmented += 1
                    vanished = False
                else:
                    next_prompts = [] if vanished else self._prompts_from(previous)
                    if next_prompts:
                        previous = self._segment(current, next_prompts)
                        segmented += 1
                    else:
                        vanished = True
                        self._clear(current)
                current += direction
                done += 1
                if progress:
                    progress(done, total)
        return PropagationResult(self.mask, segmented, False, changed)
