"""Step executors: ``sync`` (await each request) and ``pipelined`` (keep steps in flight)."""
