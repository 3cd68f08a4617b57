"""Training: losses & samplers registries, the one training loop, metrics, checkpoints."""
