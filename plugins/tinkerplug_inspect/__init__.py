"""Inspect AI tasks as a tinkerplug evaluator.

The ``evaluate`` hook runs the ``[inspect]`` tasks with ``inspect_ai.eval_async`` against the
sampler weights of each eval step, through ``SamplingClientAPI``: an Inspect ``ModelAPI`` that
renders chats with the run's renderer and samples from the run's sampling client. Only the
SDK surface is used, so the local and tinker backends take the same path.

Imports here stay light: ``inspect_ai`` loads only when an eval runs.
"""
