"""Experiment registry, bucketing, metric statistics and rollout gates."""
