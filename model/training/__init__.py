"""Training: config and profiles, network, callbacks, fit, calibration, export."""
