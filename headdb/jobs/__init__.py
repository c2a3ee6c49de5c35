"""Ingest jobs: load a checkpoint, compute, and hand Arrow tables to the warehouse as one run."""
