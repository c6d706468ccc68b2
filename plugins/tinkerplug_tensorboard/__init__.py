"""Metrics as TensorBoard scalars in ``RUN_DIR/tensorboard`` (``[tensorboard] enabled = true``;
needs ``pip install 'tinkerplug[tensorboard]'``): ``log_metrics``."""
