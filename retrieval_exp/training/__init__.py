"""Training: the loop, its learning-rate schedule and its checkpoints."""
