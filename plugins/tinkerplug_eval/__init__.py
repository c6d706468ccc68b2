"""``tinkerplug eval RUN_DIR``: the run's evaluators (or Inspect tasks) on a saved checkpoint,
without training (``register_commands``)."""
