"""First-party rewards for ``objective = "rl"``: ``exact_match`` and ``math``."""
