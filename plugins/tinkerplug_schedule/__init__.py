"""Learning rate: a base LR (fixed or Tinker's formula) with warmup and decay: ``lr_for_step``."""
