"""Checkpoints in and out: hub configs, prepared and quantized models, adapters, export, publishing, the
probe."""
