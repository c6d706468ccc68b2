"""Chat rendering with tinker-cookbook renderers: ``resolve_renderer``, ``render_example``."""
