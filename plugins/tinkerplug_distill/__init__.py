"""The distillation objective (``objective = "distill"``, ``[distill]``)."""
