"""``tinkerplug chat RUN_DIR``: talk to a checkpoint with the run's renderer
(``register_commands``)."""
