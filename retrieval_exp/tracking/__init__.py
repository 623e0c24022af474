"""Tracking: one MLflow run per experiment run, one parent run per sweep."""
