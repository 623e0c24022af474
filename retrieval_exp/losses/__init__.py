"""Losses: small classes, one `compute_loss` each, one file per family."""
