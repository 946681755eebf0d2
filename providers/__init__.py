"""Provider registry, adapters and transports. Knows nothing of :mod:`router`."""
