"""Ingest: validates records and labels from HTTP and the `raw` topic into the loop."""
