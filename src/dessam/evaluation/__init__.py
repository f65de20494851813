"""Evaluation: a model scored against masked ground truth with baselines, and reports compared."""
