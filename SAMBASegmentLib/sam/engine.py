"""The SAM engine: slice embeddings cached per (volume, view axis, slice), prompts decoded on demand.

The image encoder is ~95 % of the cost of a prompt, so each slice is encoded once and every later prompt on
that slice costs only the prompt encoder and mask decoder (tens of milliseconds on a CPU).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import torch

from ..errors import SettingsError
from ..prompts import SlicePrompt, objects_under_clicks, without_slivers
from ..volumes import ScalarVolume
from .model import LITEMEDSAM, LoadedSam, load_sam
from .onnx_encoder import OnnxImageEncoder
from .preprocessing import SliceFrame

log = logging.getLogger(__name__)

# "auto": PyTorch under bf16 autocast where the CPU has native bf16 (the adapter was trained on bf16 embeddings, and
# in fp32 the validation Dice is 0.2-0.4 points lower) and on a GPU; LiteMedSAM on any other CPU in ONNX Runtime,
# fp32 as PyTorch would run it there, 3-4x faster (figures: onnx_encoder.py). The ViT bases are not exported
# (untested, and their export takes minutes).
ENCODER_RUNTIMES = ("auto", "torch", "onnxruntime")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 (avx512_bf16 / AMX): autocast is then faster, not slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def checked_device(device: torch.device | str | None, encoder_runtime: str = "auto") -> torch.device:
    """The device to run on (default: the GPU if there is one), refused with a clear message where this computer
    cannot run it or the encoder runtime asked for does not run there."""
    chosen = torch.device(device) if device else default_device()
    if encoder_runtime not in ENCODER_RUNTIMES:
        raise SettingsError(f"unknown encoder runtime {encoder_runtime!r}; expected one of {ENCODER_RUNTIMES}")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError("a GPU (CUDA) was asked for, but PyTorch finds no usable NVIDIA GPU on this computer; "
                            "use --device cpu")
    if encoder_runtime == "onnxruntime" and chosen.type != "cpu":
        raise SettingsError(f"the ONNX Runtime encoder runs on the CPU, not on {chosen.type.upper()}; "
                            "use --encoder-runtime torch or --device cpu")
    return chosen


class SamEngine:
    """Segment slices of ScalarVolumes with prompts; one engine serves any number of volumes and views."""

    def __init__(self, sam: LoadedSam, device: torch.device | str | None = None, bf16: bool | None = None,
                 cache_megabytes: int = 2048, encoder_runtime: str = "auto") -> None:
        self.sam = sam
        self.device = checked_device(device, encoder_runtime)
        self.sam.model.to(self.device)
        if bf16 is None:
            bf16 = self.device.type == "cpu" and cpu_supports_bf16()
        if encoder_runtime == "auto":
            plain_cpu = self.device.type == "cpu" and not bf16 and sam.name == LITEMEDSAM
            encoder_runtime = "onnxruntime" if plain_cpu else "torch"
        # exported here, not at the first slice, so that the first slice's time is the encoder's own
        self._onnx_encoder = self._exported_encoder() if encoder_runtime == "onnxruntime" else None
        self.encoder_runtime = "onnxruntime" if self._onnx_encoder is not None else "torch"
        self.bf16 = bf16 and self.encoder_runtime == "torch"
        self._cache: OrderedDict[tuple[str, int, int], torch.Tensor] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = cache_megabytes * 2**20
        self.encoder_calls = 0

    @classmethod
    def create(cls, base: str = LITEMEDSAM, adapter: str | None = "default", device: str | None = None,
               bf16: bool | None = None, vit_type: str = "vit_b", encoder_runtime: str = "auto") -> "SamEngine":
        device_ = checked_device(device, encoder_runtime)  # before minutes of loading, not after
        return cls(load_sam(base, vit_type=vit_type, adapter=adapter, device=device_), device_, bf16,
                   encoder_runtime=encoder_runtime)

    def describe(self) -> str:
        """One honest line for the user: model, adapter, device, precision and the encoder's runtime."""
        adapter = f" + adapter {self.sam.adapter}" if self.sam.adapter else " (zero-shot)"
        precision = "bf16 autocast" if self.bf16 else "fp32"
        if self.encoder_runtime == "onnxruntime":
            precision += ", encoder in ONNX Runtime"
        return f"{self.sam.name}{adapter} on {self.device.type.upper()} ({precision})"

    # --- embeddings -------------------------------------------------------------------------------------------
    def frame(self, volume: ScalarVolume, axis: int) -> SliceFrame:
        shape = tuple(s for a, s in enumerate(volume.array.shape) if a != axis)
        return SliceFrame.for_slice(shape, volume.in_plane_spacing(axis), self.sam.input_size)

    def _encode(self, volume: ScalarVolume, axis: int, indices: Sequence[int]) -> torch.Tensor:
        frame = self.frame(volume, axis)
        images = torch.stack([frame.image_to_model(volume.slice(axis, i)) for i in indices]) * self.sam.input_scale
        images = self.sam.model.preprocess(images.to(self.device))
        self.encoder_calls += len(indices)
        if self._onnx_encoder is not None:
            return self._onnx_encoder(images)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()
        with torch.inference_mode(), autocast:
            embeddings = self.sam.model.image_encoder(images)
        return embeddings.float()

    def _exported_encoder(self) -> OnnxImageEncoder | None:
        """The encoder in ONNX Runtime; if the export fails the engine goes on in PyTorch (slower, same masks) and
        says so: speed must never stop a segmentation."""
        try:
            return OnnxImageEncoder(self.sam.model.image_encoder, self.sam.input_size)
        except Exception as exc:  # any exporter or runtime failure
            log.warning("ONNX Runtime encoder unavailable (%s); the image encoder runs in PyTorch", exc)
            return None

    def _store(self, key: tuple[str, int, int], embedding: torch.Tensor) -> None:
        self._cache[key] = embedding
        self._cache_bytes += embedding.numel() * embedding.element_size()
        while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
            _, evicted = self._cache.popitem(last=False)
            self._cache_bytes -= evicted.numel() * evicted.element_size()

    def embedding(self, volume: ScalarVolume, axis: int, index: int) -> torch.Tensor:
        key = (volume.key, axis, int(index))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        embedding = self._encode(volume, axis, [int(index)])
        self._store(key, embedding)
        return embedding

    def clear_cache(self, volume: ScalarVolume | None = None) -> None:
        """Forget embeddings of one volume (its voxels changed) or of all volumes."""
        for key in [k for k in self._cache if volume is None or k[0] == volume.key]:
            evicted = self._cache.pop(key)
            self._cache_bytes -= evicted.numel() * evicted.element_size()

    # --- decoding ---------------------------------------------------------------------------------------------
    def logits(self, volume: ScalarVolume, axis: int, index: int, prompt: SlicePrompt) -> torch.Tensor:
        """Mask logits of one prompt on the slice's own pixel grid, shape (rows, cols)."""
        frame = self.frame(volume, axis)
        prompt.check_inside(frame.shape)
        embedding = self.embedding(volume, axis, index)
        model = self.sam.model
        points = boxes = masks = None
        if prompt.points:
            rows, cols = np.array(prompt.points, dtype=np.float64).T
            coords = torch.as_tensor(frame.to_model_xy(rows, cols), dtype=torch.float32, device=self.device)[None]
            labels = torch.as_tensor(prompt.point_labels, dtype=torch.int64, device=self.device)[None]
            points = (coords, labels)
        if prompt.box is not None:
            boxes = torch.as_tensor(frame.box_to_model(prompt.box), dtype=torch.float32, device=self.device)[None]
        if prompt.mask is not None:
            masks = frame.mask_to_model_logits(prompt.mask, self.sam.low_res_size).to(self.device)
        with torch.inference_mode():
            sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=masks)
            low_res, _ = model.mask_decoder(
                image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False,
            )
        return frame.logits_to_slice(low_res.float())[0, 0].cpu()

    def segment(self, volume: ScalarVolume, axis: int, index: int, prompts: Sequence[SlicePrompt]) -> np.ndarray:
        """Binary mask of a slice: the union of every prompt's object (several boxes = several lesions); a
        click-only prompt keeps only the object under its positive clicks, a box prompt drops its specks."""
        frame = self.frame(volume, axis)
        mask = np.zeros(frame.shape, dtype=bool)
        for prompt in prompts:
            segmented = (self.logits(volume, axis, index, prompt) > 0).numpy()
            mask |= without_slivers(objects_under_clicks(segmented, prompt), prompt)
        return mask
