"""SAMBASegmentLib: the GUI-free engine of SAMBASegment (volumes, prompts, SAM, propagation, metrics, CLI)."""

__version__ = "0.1.0"
