"""What each training mode adapts, expressed as peft configurations on the engine's SAM.

Every mode saves a peft adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``), so the engine
loads any of them with ``--adapter PATH`` (``PeftModel.from_pretrained`` + ``merge_and_unload``).

- ``decoder`` and ``multiclass`` (SAMBA): no LoRA; the whole mask decoder is trained (``modules_to_save``).
- ``lora`` (Cheap Lunch / LoRA-SAM): LoRA r=4 on the image encoder's attention (qkv) and on every linear layer of
  the decoder's two-way transformer; the prompt encoder and the decoder heads of the single-mask output are
  trained in full, because points are what zero-shot LiteMedSAM cannot do.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from peft.utils.constants import DUMMY_TARGET_MODULES
from torch import nn

ENCODER_ATTENTION = r"image_encoder\..*\.attn\.qkv"
DECODER_TRANSFORMER = r"mask_decoder\.transformer\..*\.(q_proj|k_proj|v_proj|out_proj|lin1|lin2)"
LORA_HEADS = ["prompt_encoder", "mask_decoder.mask_tokens", "mask_decoder.iou_token", "mask_decoder.output_upscaling",
              "mask_decoder.output_hypernetworks_mlps.0", "mask_decoder.iou_prediction_head"]
MODES = ("decoder", "lora", "multiclass")


def adapter_config(mode: str, rank: int = 4, alpha: int = 4, full_decoder: bool = False) -> LoraConfig:
    """``full_decoder`` (lora mode): prompt encoder and whole mask decoder trained in full, LoRA on the encoder
    only: the capacity a point prompt needs, at the price of a 16 MB adapter instead of 2 MB."""
    if mode in ("decoder", "multiclass"):
        return LoraConfig(target_modules=DUMMY_TARGET_MODULES, modules_to_save=["mask_decoder"])
    if mode == "lora" and full_decoder:
        return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=ENCODER_ATTENTION,
                          modules_to_save=["prompt_encoder", "mask_decoder"])
    if mode == "lora":
        return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0,
                          target_modules=f"({ENCODER_ATTENTION}|{DECODER_TRANSFORMER})", modules_to_save=LORA_HEADS)
    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")


def freeze_batchnorm(model: nn.Module) -> None:
    """BatchNorm layers (TinyViT) stay in eval mode: their running statistics are not saved with the adapter,
    so letting them drift would make the reloaded model differ from the trained one."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            for parameter in module.parameters():
                parameter.requires_grad_(False)


def attach(model: nn.Module, mode: str, seed: int, full_decoder: bool = False) -> nn.Module:
    """Wrap the base SAM for ``mode``; the seed fixes the LoRA initialisation (identical on every DDP rank)."""
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, adapter_config(mode, full_decoder=full_decoder))
    freeze_batchnorm(peft_model)
    return peft_model


def is_encoder_parameter(name: str) -> bool:
    return "image_encoder" in name


def encoder_unchanged(peft_model: nn.Module) -> bool:
    """True when every encoder LoRA B matrix is zero: the merged encoder then equals the base exactly, so
    cached embeddings remain valid for the adapted model."""
    return all(not p.any() for n, p in peft_model.named_parameters() if is_encoder_parameter(n) and "lora_B" in n)
