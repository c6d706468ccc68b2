"""Metrics as JSON lines in ``RUN_DIR/metrics.jsonl``: ``log_metrics``."""
