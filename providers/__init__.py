"""Provider registry, specs, task helpers, catalog sources and transports. Knows nothing of :mod:`router`."""
