"""Offline training and measurement of the local FIM model and its LoRA adapters (torch); beside
the serving package, never inside it."""
