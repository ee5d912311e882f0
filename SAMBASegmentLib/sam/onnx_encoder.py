"""SAM's image encoder run by ONNX Runtime: the engine's default on a CPU without native bf16 (most laptops).

The encoder is ~95 % of a prompt's time. PyTorch runs LiteMedSAM's TinyViT eagerly as hundreds of small
operations; ONNX Runtime runs the same graph fused: on 2 CPU threads 0.40 s per slice in fp32, against 0.73 s for
PyTorch under bf16 autocast and 1.6 s for PyTorch fp32 (``samba bench --encoder-runtime``), with embeddings equal to
PyTorch's fp32 ones within 1e-5. The graph is exported in memory from the loaded model, adapter merged, when the
engine loads (about 3 s): nothing is written to disk or downloaded, and it always matches the engine's weights.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch


class OnnxImageEncoder:
    """A callable with the encoder's signature: (N, 3, S, S) float images → (N, C, H, W) embeddings."""

    def __init__(self, encoder: torch.nn.Module, input_size: int) -> None:
        import onnxruntime

        graph = io.BytesIO()
        example = torch.zeros(1, 3, input_size, input_size)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about TinyViT's shape asserts, exporter deprecations
            torch.onnx.export(encoder.eval(), (example,), graph, input_names=["image"], output_names=["embedding"],
                              opset_version=17, dynamo=False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the threads PyTorch was given (OMP_NUM_THREADS)
        options.log_severity_level = 3  # errors only: the optimiser's notes are not the user's business
        self.session = onnxruntime.InferenceSession(graph.getvalue(), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The traced graph has batch size 1 (TinyViT's reshapes fix it), so images go through one by one;
        batching does not pay on a CPU anyway (PyTorch: 1.5 s per slice alone, 2.3 s per slice in fours)."""
        batch = images.detach().cpu().float().numpy()
        embeddings = [self.session.run(None, {"image": image[None]})[0] for image in batch]
        return torch.from_numpy(np.concatenate(embeddings))
