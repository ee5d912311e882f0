"""Speed and memory of the engine on a real case: what a clinician waits for on her own machine."""

from __future__ import annotations

import platform
import resource
import statistics
import time

import numpy as np
import torch

from .labels import region_mask
from .pipeline import segment_box3d
from .prompts import SlicePrompt, bounding_box
from .sam.engine import SamEngine
from .simulation import box3d_prompt, tumour_slices
from .volumes import Case


def _peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def proposal_seconds(case: Case, repeats: int = 3) -> float:
    """Median seconds of the detector's proposals for the whole case (``detection.propose``, as the automatic
    path and Slicer's Propose boxes run it), after one untimed call that pays the runtime's set-up."""
    from .detection import TumourDetector, propose

    detector = TumourDetector.load()
    volume = case.volume(detector.modality)
    axis = volume.view_axis("axial")
    propose(detector, volume, axis)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        propose(detector, volume, axis)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def run_benchmark(engine: SamEngine, case: Case, modality: str = "flair", encoder_slices: int = 8,
                  decoder_prompts: int = 30, progress=None) -> dict:
    """Encoder ms per slice, decoder ms per prompt, seconds to propagate one modality, seconds of the detector's
    proposals for the case, peak memory."""
    if case.label is None:
        raise ValueError(f"{case.name}: the benchmark needs a label map to place the tumour box")
    volume = case.volume(modality)
    truth = region_mask(case.label, "WT")
    slices = tumour_slices(truth, 0)
    chosen = [slices[i] for i in np.linspace(0, len(slices) - 1, min(encoder_slices, len(slices))).astype(int)]
    engine.clear_cache()
    engine.embedding(volume, 0, chosen[0])  # warm-up: first call pays one-off allocations
    engine.clear_cache()
    encoder_ms = []
    for index in chosen:
        start = time.perf_counter()
        engine.embedding(volume, 0, index)
        encoder_ms.append(1000 * (time.perf_counter() - start))
    box = bounding_box(truth[chosen[len(chosen) // 2]])
    prompt = SlicePrompt(box=box)
    decoder_ms = []
    for _ in range(decoder_prompts):
        start = time.perf_counter()
        engine.segment(volume, 0, chosen[len(chosen) // 2], [prompt])
        decoder_ms.append(1000 * (time.perf_counter() - start))
    engine.clear_cache()
    simulated = box3d_prompt(truth, 0)
    start = time.perf_counter()
    _, result = segment_box3d(engine, volume, simulated.box, 0, simulated.seed_index, simulated.seed_box, progress)
    propagate_seconds = time.perf_counter() - start
    return {
        "case": case.name,
        "modality": modality,
        "engine": engine.describe(),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "encoder_ms_per_slice": statistics.median(encoder_ms),
        "encoder_ms_all": [round(v, 1) for v in encoder_ms],
        "decoder_ms_per_prompt": statistics.median(decoder_ms),
        "propagate_seconds": propagate_seconds,
        "propagated_slices": result.slices_segmented,
        "proposal_seconds": proposal_seconds(case),
        "peak_memory_mb": _peak_memory_mb(),
    }
