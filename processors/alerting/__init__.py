"""Scores to flags and events: calibration, tails, hysteresis, held bands, deploys, silence."""
