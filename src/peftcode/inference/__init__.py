"""Inference: the recipe, batched beam search, the sampler, stop sequences and the resume store."""
