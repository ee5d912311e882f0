"""The voting network: per-modality SAM masks → NETC / SNFH / ET, and the modality-agreement map."""

from .fusion import Fusion, VotingNetwork, agreement_map, build_inputs, rule_baseline
from .network import VotingUNet3D, decode_regions, parameter_count

__all__ = ["Fusion", "VotingNetwork", "VotingUNet3D", "agreement_map", "build_inputs", "decode_regions",
           "parameter_count", "rule_baseline"]
