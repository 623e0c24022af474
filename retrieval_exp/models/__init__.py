"""Models: encoders built from Hugging Face checkpoints."""
