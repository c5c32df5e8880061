"""Series identity: slots, per-slot state arrays, Prometheus names and labels."""
