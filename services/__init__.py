"""ctloop's five services (ingest, monitor, trainer, registry, serving) and the `ctloop` CLI."""
