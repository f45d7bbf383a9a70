"""Offline evaluation of model variants: mask code in held-out files, let each arm restore it
through the gateway, and compare the arms (exact match, chrF, edit similarity, latency)."""
