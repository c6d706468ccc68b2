"""A held-out exact-match evaluator on sampler weights: ``evaluate``."""
