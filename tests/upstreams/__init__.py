"""Local fake upstream servers (real HTTP on 127.0.0.1) mimicking the LLM provider APIs.

Example::

    with HFRouterUpstream() as srv:
        httpx.post(f"{srv.url}/v1/chat/completions", headers={"authorization": "Bearer t"}, json=...)
        assert srv.requests[-1].json["model"] == "org/model"
"""

from .base import FakeUpstream, RecordedRequest, Reply
from .deepinfra import DeepInfraUpstream
from .embeddings import fake_embedding
from .hf_router import HFRouterUpstream
from .hub import HubUpstream
from .openai_compat import OpenAICompatUpstream
from .openai_format import completion_json
from .tgi import TGIUpstream

__all__ = [
    "DeepInfraUpstream",
    "FakeUpstream",
    "HFRouterUpstream",
    "HubUpstream",
    "OpenAICompatUpstream",
    "RecordedRequest",
    "Reply",
    "TGIUpstream",
    "completion_json",
    "fake_embedding",
]
