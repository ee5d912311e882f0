"""Fine-tuning of the engine's SAM on the real cases: dataset, exemplar synthesis, embedding cache, training modes."""
