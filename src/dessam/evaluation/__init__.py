"""Evaluation: a model scored against masked ground truth (`evaluate`), with the mask sources of its
baselines (`sources`), and reports compared (`compare`)."""
