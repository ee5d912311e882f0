"""Training and evaluation of the voting network (SAMBASegmentLib.voting)."""
