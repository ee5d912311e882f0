"""The issue's quick probe (training/probe.py): one-click fine-tuning of the decoder side lowers the loss on real
slices and leaves the image encoder, hence the cached embeddings, untouched."""

from __future__ import annotations

import numpy as np
import torch

from training.probe import probe_loss, probe_model, probe_slices


def test_probe_steps_lower_the_click_loss_and_train_only_the_decoder_side(tiny_cache):
    chosen = probe_slices(tiny_cache)
    assert all(tiny_cache.entries[n]["modality"] == "flair" and tiny_cache.entries[n]["axis"] == 0
               and tiny_cache.entries[n]["tumour_pixels"] > 0 for n in chosen)
    tumour = [n for n, e in enumerate(tiny_cache.entries) if e["tumour_pixels"] > 0][:4]
    core = probe_model()
    encoder = {k: v.clone() for k, v in core.sam.image_encoder.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in core.parameters() if p.requires_grad], lr=1e-4)

    def loss() -> torch.Tensor:  # the same clicks every time: a fixed batch
        return probe_loss(core, tiny_cache, tumour, np.random.default_rng(0))

    with torch.no_grad():
        before = float(loss())
    for _ in range(5):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    with torch.no_grad():
        after = float(loss())
    assert after < 0.9 * before, (before, after)
    assert all(torch.equal(encoder[k], v) for k, v in core.sam.image_encoder.state_dict().items())
