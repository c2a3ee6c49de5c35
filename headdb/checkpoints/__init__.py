"""Local checkpoints: reading configs, weights digests, loading models, training output folders."""
