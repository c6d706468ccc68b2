"""The supervised objective (``objective = "sft"``, the default)."""
