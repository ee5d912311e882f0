#!/usr/bin/env bash
# The default training run, every stage resumable (rerun the script after an interruption):
# embedding cache → lora with full decoder (the shipped adapter) → decoder → multiclass → validation table.
# About 1.5 hours of one CPU core (the last 150 lora steps train the encoder LoRA on raw slices, ~8 s each); OMP_NUM_THREADS=1 because on a shared 2-core machine two threads spend most
# of a skinny matmul waiting for each other (measured: 24 ms vs 0.15 ms for a 4096x256 @ 256x4 product).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
"$PY" -m training.cache --out training/cache/default
"$PY" -m training.train_sam --mode lora --full-decoder --run-dir training/runs/lora_enc --steps "${LORA_STEPS:-500}" \
    --encoder-steps "${ENCODER_STEPS:-150}" --box-shrink 8 --warmup 20 --head-lr 1e-4
"$PY" -m training.train_sam --mode decoder --steps "${DECODER_STEPS:-120}" --warmup 20
"$PY" -m training.train_sam --mode multiclass --steps "${MULTICLASS_STEPS:-120}" --warmup 20
"$PY" -m training.evaluate --adapter lora=training/runs/lora_enc/adapter --adapter decoder=training/runs/decoder/adapter \
    --multiclass training/runs/multiclass/adapter --json training/runs/evaluate_flair.json
