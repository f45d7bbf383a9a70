"""Experiments: their definitions and registry, assignment for the gateway, analysis and gates,
and the product metrics the dashboard shows."""
