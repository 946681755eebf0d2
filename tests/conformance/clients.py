"""What the conformance tests share: the running proxy's handle and the words every test sends."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.conformance.upstream import ConformanceUpstream
from tests.upstreams import fake_embedding

NODE_DIR = Path(__file__).resolve().parent / "node"  # the AI SDK's npm project (npm ci there)
MASTER = "sk-conformance-master-0123456789"
USER = [{"role": "user", "content": "hello conformance"}]
ECHO = "Echo: hello conformance"
TEXTS = ["hello world", "second text"]
VECTORS = [fake_embedding(text) for text in TEXTS]


@dataclass
class Proxy:
    """A running ``polyroute serve``: its base URL (without ``/v1``), master key and upstream."""

    url: str
    key: str
    upstream: ConformanceUpstream

    @property
    def v1(self) -> str:
        """The OpenAI base URL clients are given."""
        return self.url + "/v1"


def close_to(got: list[float], want: list[float], tol: float = 1e-6) -> bool:
    """Vectors equal up to float32 rounding (base64 embeddings are float32)."""
    return len(got) == len(want) and all(abs(a - b) <= tol for a, b in zip(got, want, strict=True))


# One function tool every client offers the model.
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look something up",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        },
    }
]
