"""Weights & Biases logging (``[wandb] project = ...``; needs ``pip install 'tinkerplug[wandb]'``):
``on_run_start``, ``log_metrics``, ``on_run_end``."""
