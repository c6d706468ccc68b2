"""The RL objective (``objective = "rl"``, ``[rl]``): sampled groups, rewards, group-relative advantages."""
