"""The YAML-configured OpenAI-compatible proxy (``polyroute serve``)."""
