"""LiteLLM's model strings, read the way LiteLLM reads them, for configs written for LiteLLM's proxy.

- A bare name (``gpt-4o``, ``text-embedding-3-small``, ``*``) is an OpenAI model: ``openai/gpt-4o``; a bare
  ``claude-...`` is Anthropic's.
- ``custom_llm_provider: <name>`` names the provider of a model string that does not start with it.
- Providers that need their own request signing or protocol (:data:`UNSERVABLE`) are named with the reason, so
  a config can report them instead of failing on them.

Example::

    litellm_model("gpt-4o")                                # 'openai/gpt-4o'
    litellm_model("my-llama", custom_llm_provider="openai")  # 'openai/my-llama'
    unservable_reason("bedrock/anthropic.claude-v2")        # 'needs AWS SigV4 request signing ...'
"""

from __future__ import annotations

# LiteLLM provider prefixes polyroute does not serve, with why (what the upstream needs that is not
# OpenAI's API with a key).
UNSERVABLE: dict[str, str] = {
    "bedrock": "AWS Bedrock needs AWS SigV4 request signing and its own API",
    "bedrock_converse": "AWS Bedrock needs AWS SigV4 request signing and its own API",
    "sagemaker": "AWS SageMaker needs AWS SigV4 request signing and its own API",
    "sagemaker_chat": "AWS SageMaker needs AWS SigV4 request signing and its own API",
    "vertex_ai": "Vertex AI needs Google Cloud OAuth credentials and its own API",
    "vertex_ai_beta": "Vertex AI needs Google Cloud OAuth credentials and its own API",
    "palm": "PaLM's API is retired and not OpenAI-compatible",
    "watsonx": "IBM watsonx needs IAM token exchange and its own API",
    "cloudflare": "Cloudflare Workers AI's native API is not OpenAI's",
    "replicate": "Replicate's prediction API is not OpenAI's",
    "aleph_alpha": "Aleph Alpha's API is not OpenAI's",
    "baseten": "Baseten's model API is not OpenAI's",
    "petals": "Petals is not an HTTP API",
}

_BARE_FAMILIES = (("claude-", "anthropic"),)  # bare names LiteLLM maps to a family other than OpenAI's
_SAME_AS = {"text-completion-openai": "openai"}  # LiteLLM prefixes that name the same upstream as ours


def litellm_model(model: str, custom_llm_provider: str | None = None) -> str:
    """The polyroute model string for a LiteLLM ``model`` (and its ``custom_llm_provider``)."""
    if custom_llm_provider and not model.startswith(custom_llm_provider + "/"):
        return f"{custom_llm_provider}/{model}"
    prefix, slash, rest = model.partition("/")
    if slash and prefix in _SAME_AS:
        return f"{_SAME_AS[prefix]}/{rest}"
    if "/" in model or model == "*":  # "*": a wildcard group's requested name, read when it is known
        return model
    for start, family in _BARE_FAMILIES:
        if model.startswith(start):
            return f"{family}/{model}"
    return f"openai/{model}"


def unservable_reason(model: str) -> str | None:
    """Why polyroute cannot serve a LiteLLM model string's provider, or None when it is not one of those."""
    return UNSERVABLE.get(model.partition("/")[0])
