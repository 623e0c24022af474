"""Data: ir_datasets access, local BEIR folders, training samples."""
