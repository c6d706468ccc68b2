"""The remote backend: the official Tinker SDK (``backend = "tinker"``)."""
