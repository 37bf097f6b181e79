"""Evaluation: metrics on the test split and the gate's decision."""
