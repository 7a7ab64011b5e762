"""The trainer: turns a trigger (cold start, drift, manual) into a gated candidate model."""
