"""``tinkerplug serve``: the local backend behind the Tinker HTTP API that the ``tinker`` SDK
(0.38) speaks, so unmodified scripts reach it with ``TINKER_BASE_URL``.

Modules: ``command`` (the click command), ``app`` (ASGI app, key check, body limit),
``routes_*`` (endpoints), ``wire`` (the SDK's protobuf format), ``futures`` (what
``/retrieve_future`` answers), ``clock`` (``--clock-ms``), ``paths`` (``tinker://`` paths
inside the checkpoint dir), ``state`` (sessions, models, samplers). Nothing heavy is imported
until the command runs.
"""
