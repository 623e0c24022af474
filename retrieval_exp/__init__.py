"""retrieval_exp: Hydra-composed training and evaluation of neural retrievers, tracked in MLflow."""

__version__ = "0.1.0"
