"""Segment Anything: model construction (``model``), slice framing (``preprocessing``) and the predictor (``engine``)."""

from .engine import SamEngine
from .model import LITEMEDSAM, LoadedSam, load_sam

__all__ = ["SamEngine", "LoadedSam", "load_sam", "LITEMEDSAM"]
