"""Evaluations: benchmarks, prompt rendering, generation, grading, pass@k, interventions."""
