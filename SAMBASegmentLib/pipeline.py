"""Pipelines that join the pieces: a box → a 3D tumour mask, and a labelled case → its evaluation."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .corrections import correct_with_click
from .errors import ModalityError
from .labels import region_mask
from .metrics import dice, region_scores
from .multiview import three_view_problem, three_view_vote
from .postprocessing import remove_small_components
from .prompts import Box3D, PixelBox, SlicePrompt, add_click, to_slice
from .propagation import CancelCheck, ProgressCallback, PropagationResult, PropagationSession, PropagationSettings
from .sam.engine import SamEngine
from .simulation import box2d_prompts, box3d_prompt, corrective_click, painted_leak, point_prompts
from .volumes import Case, ScalarVolume

if TYPE_CHECKING:  # annotations only: the voting package is imported when something is fused
    from .voting import Fusion, VotingNetwork

PROMPT_MODES = ("box2d", "box3d", "points", "auto")
VIEW_CHOICES = (1, 3)  # the prompted view alone, or checked in all three (multiview.three_view_vote)
DEFAULT_VIEWS = 3
REFINED_REGIONS = ("ET", "TC", "WT")
ModalityProgress = Callable[[str, int, int], None]  # (modality, done, total)
StepProgress = Callable[[int, int, int], None]  # (step, done, total)
log = logging.getLogger(__name__)

# A label value for the binary SAM result when written as a label map: the whole tumour.
WHOLE_TUMOUR_VALUE = 1


def segment_box3d(
    engine: SamEngine, volume: ScalarVolume, box: Box3D, axis: int = 0, seed_index: int | None = None,
    seed_box: PixelBox | None = None, progress: ProgressCallback | None = None, cancel: CancelCheck | None = None,
    settings: PropagationSettings = PropagationSettings(),
) -> tuple[PropagationSession, PropagationResult]:
    """Segment inside a 3D box: SAM on the seed slice (default: the box's centre), then propagation within
    the box's slice range. ``seed_box`` is the box as drawn on the seed slice, if it differs from the 3D box."""
    box = box.clipped_to(volume.array.shape)
    seed = box.centre_slice(axis) if seed_index is None else int(seed_index)
    session = PropagationSession(engine, volume, axis, box.slice_range(axis), settings)
    result = session.run(seed, [SlicePrompt(box=seed_box or box.in_plane_box(axis))], progress, cancel)
    return session, result


def segment_slices(engine: SamEngine, volume: ScalarVolume, axis: int, prompts: Mapping[int, list[SlicePrompt]],
                   progress: ProgressCallback | None = None, cancel: CancelCheck | None = None) -> np.ndarray:
    """Segment each prompted slice on its own (no propagation); when ``cancel`` returns True the slices done so far
    are returned."""
    mask = np.zeros(volume.array.shape, dtype=bool)
    for done, (index, slice_prompts) in enumerate(sorted(prompts.items()), start=1):
        if cancel and cancel():
            break
        plane = engine.segment(volume, axis, index, slice_prompts)
        np.moveaxis(mask, axis, 0)[index] = plane
        if progress:
            progress(done, len(prompts))
    return mask


def segment_prompted(engine: SamEngine, volume: ScalarVolume, axis: int, boxes: Sequence[Box3D],
                     slice_prompts: Mapping[int, list[SlicePrompt]], progress: StepProgress | None = None,
                     cancel: CancelCheck | None = None) -> np.ndarray:
    """One volume from a clinician's prompts, as Refine repeats them on every modality: each box propagated through
    its slices along ``axis``, then every slice with prompts of its own (clicks, a box drawn on it) segmented with
    them, replacing what propagation gave there: what she said about a slice wins. ``progress(step, done, total)``
    counts ``len(boxes) + 1`` steps, the last one the prompted slices."""
    mask = np.zeros(volume.array.shape, dtype=bool)
    for step, box in enumerate(boxes):
        callback = functools.partial(progress, step) if progress else None
        mask |= segment_box3d(engine, volume, box, axis, progress=callback, cancel=cancel)[1].mask
    if slice_prompts:
        callback = functools.partial(progress, len(boxes)) if progress else None
        prompted = segment_slices(engine, volume, axis, slice_prompts, callback, cancel)
        planes, prompted_planes = np.moveaxis(mask, axis, 0), np.moveaxis(prompted, axis, 0)
        for index in slice_prompts:
            planes[index] = prompted_planes[index]
    return mask


def checked_in_views(engine: SamEngine, volume: ScalarVolume, mask: np.ndarray, axis: int, views: int,
                     progress: ProgressCallback | None = None, cancel: CancelCheck | None = None,
                     slice_range: tuple[int, int] | None = None) -> np.ndarray:
    """``mask`` as it is (``views`` 1) or checked in the two other views by a three-view vote (``views`` 3), kept
    within ``slice_range`` along ``axis`` (a box's depth) when given. A volume too anisotropic for the other views
    (``multiview.three_view_problem``) keeps its mask, with a warning."""
    if views not in VIEW_CHOICES:
        raise ValueError(f"views must be one of {VIEW_CHOICES}, not {views}")
    if views == 1:
        return mask
    problem = three_view_problem(volume.spacing)
    if problem is not None:
        log.warning(f"three-view check skipped, the first view's mask is kept: {problem}")
        return mask
    return three_view_vote(engine, volume, mask, axis, slice_range, progress=progress, cancel=cancel)


@dataclass
class CaseEvaluation:
    case: str
    modality: str
    prompt: str
    clicks: int
    scores: dict[str, dict[str, float]]
    seconds: float
    slices_encoded: int
    prediction: np.ndarray = field(repr=False)
    truth: np.ndarray = field(repr=False)

    def as_json(self) -> dict:
        return {"case": self.case, "modality": self.modality, "prompt": self.prompt, "clicks": self.clicks,
                "seconds": round(self.seconds, 2), "slices_encoded": self.slices_encoded, **self.scores}


def _check_prompt(prompt: str, clicks: int, detector) -> None:
    if prompt not in PROMPT_MODES:
        raise ValueError(f"unknown prompt mode {prompt!r}; expected one of {PROMPT_MODES}")
    if prompt == "auto" and (detector is None or clicks):
        raise ValueError("the automatic path needs a detector and simulates no corrective clicks")


def _labelled_truth(case: Case) -> np.ndarray:
    if case.label is None:
        raise ModalityError(f"{case.name}: no label map, so nothing to evaluate against")
    return region_mask(case.label, "WT")


def _prompted_mask(engine: SamEngine, volume: ScalarVolume, truth: np.ndarray, prompt: str, axis: int,
                   progress: ProgressCallback | None, candidates: list | None
                   ) -> tuple[np.ndarray, PropagationSession | None, dict[int, list[SlicePrompt]]]:
    """The whole-tumour mask of one volume from prompts simulated from ``truth`` (or the detector's
    ``candidates`` for ``auto``), with what corrective clicks need to continue: the session or slice prompts."""
    if prompt == "box3d":
        if not truth.any():
            return np.zeros_like(truth), None, {}
        simulated = box3d_prompt(truth, axis)
        session, result = segment_box3d(engine, volume, simulated.box, axis, simulated.seed_index,
                                        simulated.seed_box, progress)
        return result.mask.copy(), session, {}
    if prompt == "auto":
        from .detection import segment_candidates  # ultralytics loads only for the automatic path

        return segment_candidates(engine, volume, candidates, progress=progress)[0], None, {}
    slice_prompts = box2d_prompts(truth, axis) if prompt == "box2d" else point_prompts(truth, axis)
    return segment_slices(engine, volume, axis, slice_prompts, progress), None, slice_prompts


def _candidates(case: Case, prompt: str, axis: int, detector) -> list | None:
    """The detector's proposals, found on the modality it was trained on, for every modality of the case."""
    if prompt != "auto":
        return None
    from .detection import propose

    return propose(detector, case.volume(detector.modality), axis)


def evaluate_case(engine: SamEngine, case: Case, prompt: str, modality: str = "flair", clicks: int = 0,
                  axis: int = 0, progress: ProgressCallback | None = None, detector=None,
                  whole_tumour_network: VotingNetwork | None = None, views: int = 1) -> CaseEvaluation:
    """Segment the whole tumour of a labelled case with prompts simulated from its label (or, for ``auto``, from
    the detector's proposals), then score it. ``views`` 3 checks the finished mask in the two other views. With
    ``whole_tumour_network`` the voting network redraws SAM's whole tumour from this one modality (what the
    automatic path reports)."""
    _check_prompt(prompt, clicks, detector)
    truth = _labelled_truth(case)
    volume = case.volume(modality)
    start = time.perf_counter()
    calls_before = engine.encoder_calls
    candidates = _candidates(case, prompt, axis, detector)
    prediction, session, slice_prompts = _prompted_mask(engine, volume, truth, prompt, axis, progress, candidates)
    for _ in range(clicks):
        click = corrective_click(prediction, truth, case.spacing)
        if click is None:
            break
        index, row, col = to_slice(axis, click.index)
        # A negative click where nothing was segmented leaves the protocol nothing to fix: it stops.
        if prompt == "box3d":
            prompts = add_click(session.slice_prompts.get(index, []), row, col, click.positive)
            if not prompts:
                break
            session.run(index, prompts)
            prediction = session.mask.copy()
        elif not correct_with_click(engine, volume, axis, prediction, slice_prompts, index, row, col, click.positive):
            break
    depth = session.slice_range if session else None
    prediction = remove_small_components(checked_in_views(engine, volume, prediction, axis, views, progress,
                                                          slice_range=depth), case.spacing)
    if whole_tumour_network is not None:
        prediction = whole_tumour_network.whole_tumour(modality, volume.array, prediction, case.spacing)
    seconds = time.perf_counter() - start
    label = prediction.astype(np.uint8) * WHOLE_TUMOUR_VALUE
    truth_label = truth.astype(np.uint8) * WHOLE_TUMOUR_VALUE
    scores = region_scores(label, truth_label, case.spacing, regions=("WT",))
    return CaseEvaluation(case.name, modality, prompt, clicks, scores, seconds, engine.encoder_calls - calls_before,
                          prediction, truth)


def evaluate_leak_removal(engine: SamEngine, volume: ScalarVolume, truth: np.ndarray, half_slab: int = 4) -> dict:
    """One negative click against a leak painted beside the tumour (``simulation.painted_leak``) on the axial slices
    within ``half_slab`` of the tumour's largest, after one click per slice: the share of the leak left, the slices
    the correction reached and the tumour Dice before and after. The Dice protocol's corrective clicks rarely ask to
    remove a leak the model did not make, an annotator's stray stroke; this asks exactly that."""
    centre = int(np.argmax(truth.sum(axis=(1, 2))))
    slab = list(range(max(centre - half_slab, 0), min(centre + half_slab + 1, truth.shape[0])))
    prompts = {k: v for k, v in point_prompts(truth, 0).items() if k in slab}
    segmented = segment_slices(engine, volume, 0, prompts)
    (row, col), leak = painted_leak(truth[slab], segmented[slab], volume.array[slab])
    mask = segmented.copy()
    mask[slab] |= leak
    painted = int((leak & ~segmented[slab]).sum())
    changed = correct_with_click(engine, volume, 0, mask, {k: list(v) for k, v in prompts.items()}, centre, row, col,
                                 False)
    left = int((mask[slab] & leak & ~segmented[slab]).sum())
    return {"painted": painted, "left": left, "left_fraction": left / painted, "slices": len(slab),
            "slices_reached": len(set(slab) & set(changed)), "tumour_dice_before": dice(segmented[slab], truth[slab]),
            "tumour_dice_after": dice(mask[slab], truth[slab])}


def segment_modalities(engine: SamEngine, case: Case, segment_one: Callable[[ScalarVolume, ProgressCallback | None],
                                                                            np.ndarray],
                       progress: ModalityProgress | None = None) -> dict[str, np.ndarray]:
    """The same prompts on every modality of the case: one whole-tumour mask per modality (the voting network's
    input). Each volume's embeddings are dropped when it is done, so memory stays that of one volume."""
    masks: dict[str, np.ndarray] = {}
    for modality, volume in case.volumes.items():
        callback = (lambda done, total, m=modality: progress(m, done, total)) if progress else None
        masks[modality] = remove_small_components(segment_one(volume, callback), case.spacing)
        engine.clear_cache(volume)
    return masks


def fuse(fusion: VotingNetwork | str, case: Case, masks: dict[str, np.ndarray]) -> Fusion:
    """``fusion``: a VotingNetwork, or ``"rule"`` for the rule baseline. Returns a voting.Fusion."""
    from .voting import rule_baseline

    images = {m: v.array for m, v in case.volumes.items()}
    return rule_baseline(images, masks, case.spacing) if fusion == "rule" else fusion.fuse(images, masks, case.spacing)


def evaluate_case_refined(engine: SamEngine, case: Case, prompt: str, fusion: VotingNetwork | str, axis: int = 0,
                          progress: ModalityProgress | None = None, detector=None, views: int = 1) -> CaseEvaluation:
    """Segment the tumour on every modality with the same simulated prompts (each mask checked in ``views``
    views), fuse the masks into NETC / SNFH / ET (``fusion``: a VotingNetwork or ``"rule"``) and score ET, TC
    and WT."""
    _check_prompt(prompt, 0, detector)
    truth = _labelled_truth(case)
    start = time.perf_counter()
    calls_before = engine.encoder_calls
    candidates = _candidates(case, prompt, axis, detector)

    def segment_one(volume: ScalarVolume, callback: ProgressCallback | None) -> np.ndarray:
        mask, session, _ = _prompted_mask(engine, volume, truth, prompt, axis, callback, candidates)
        return checked_in_views(engine, volume, mask, axis, views, callback,
                                slice_range=session.slice_range if session else None)

    masks = segment_modalities(engine, case, segment_one, progress)
    label = fuse(fusion, case, masks).label
    seconds = time.perf_counter() - start
    scores = region_scores(label, case.label, case.spacing, regions=REFINED_REGIONS)
    return CaseEvaluation(case.name, "+".join(case.volumes), prompt, 0, scores, seconds,
                          engine.encoder_calls - calls_before, label, case.label)


def summarise(evaluations: list[CaseEvaluation]) -> dict:
    """Mean of every figure per region, plus the mean time per case."""
    summary: dict = {}
    if not evaluations:
        return summary
    for region in evaluations[0].scores:
        summary[region] = {metric: float(np.mean([e.scores[region][metric] for e in evaluations]))
                           for metric in evaluations[0].scores[region]}
    summary["seconds_per_case"] = float(np.mean([e.seconds for e in evaluations]))
    summary["cases"] = len(evaluations)
    return summary

