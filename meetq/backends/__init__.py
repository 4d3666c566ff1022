"""The built-in backends, each a pluggy plugin: ``memory`` and ``redis``."""
