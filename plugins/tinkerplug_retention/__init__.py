"""Checkpoint retention: keep the last N checkpoints (and every M-th), delete the others."""
