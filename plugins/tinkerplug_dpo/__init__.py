"""The preference objective (``objective = "dpo"``, ``[dpo]``)."""
