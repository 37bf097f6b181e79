"""Inference: loading a saved model with its custom layers; the shared Predictor."""
