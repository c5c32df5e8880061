"""Telemetry to observations: one adapter per signal, and what they share."""
