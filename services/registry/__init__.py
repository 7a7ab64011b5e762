"""The registry: model versions, artifacts, aliases and promotion, announced on `models`."""
