"""Inference: TTA prediction, ensembles."""
