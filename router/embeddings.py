"""``embedding()`` / ``aembedding()``: OpenAI-shaped embeddings from HF, DeepInfra, TEI and more.

Flat, nested and batched upstream shapes all come back as ``data[i].embedding`` in input order.
HF providers other than hf-inference need the provider's own model id, looked up once from the
Hub and cached.

Example::

    from router import embedding
    r = embedding(model="huggingface/intfloat/multilingual-e5-large", input=["a", "b"])
    [d.embedding for d in r.data]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from providers.errors import InvalidRequestArgumentError
from providers.registry import Registry, default_registry
from providers.spec import Target

from .budget import Budget, WorstCase
from .calibration import PromptCounts
from .params import merge_extra_body
from .pipeline import Call, CallSettings, arun, check_unknown, prepare, run
from .pricing.catalog import Catalog, PriceLookup
from .surface import same_arguments_as
from .types import EmbeddingResponse

if TYPE_CHECKING:
    from typing_extensions import Unpack


def _inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        values = [value]
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        values = list(value)
    else:
        raise InvalidRequestArgumentError(
            "input must be a non-empty string or a non-empty list of strings, "
            f"got {type(value).__name__}{'' if value else ' (empty)'}"
        )
    for i, text in enumerate(values):
        if not text:
            raise InvalidRequestArgumentError(f"input[{i}] is an empty string; embeddings need text")
    return values


def embedding_params(dimensions: Any, encoding_format: Any, user: Any, extra_body: Any) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if dimensions is not None:
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
            raise InvalidRequestArgumentError(f"dimensions must be a positive integer, got {dimensions!r}")
        params["dimensions"] = dimensions
    if encoding_format not in (None, "float"):
        raise InvalidRequestArgumentError(
            f"encoding_format={encoding_format!r} is not supported; results are always lists of floats "
            "(omit it or pass 'float')"
        )
    if user is not None:
        if not isinstance(user, str):
            raise InvalidRequestArgumentError(
                f"user must be a string (an id for your end user), got {type(user).__name__}"
            )
        params["user"] = user
    merge_extra_body(extra_body, params, EXTRA_BODY_OWNED)
    return params


# Fields extra_body may never set in an embedding body: they come from the call's own arguments.
EXTRA_BODY_OWNED = frozenset({"model", "input", "encoding_format"})


def check_request(
    input: Any, dimensions: Any = None, encoding_format: Any = None, user: Any = None, extra_body: Any = None
) -> dict[str, Any]:
    """Check an embedding request's input and parameters as a call would (the proxy, before routing);
    returns the body parameters."""
    _inputs(input)
    return embedding_params(dimensions, encoding_format, user, extra_body)


class EmbeddingsTask:
    """Embeddings on the router's side: input tokens only, at the highest price; ``EmbeddingResponse``."""

    name = "embeddings"

    def worst_case(self, call: Call[EmbeddingResponse], budget: Budget, candidates: list[PriceLookup]) -> WorstCase:
        from .tokens import count_text

        priced = budget.priced(call.target, candidates, "embedding call")
        local = sum(count_text(t) for t in call.inputs)
        tokens = int(local * (1 + budget.prompt_margin)) + len(call.inputs)
        return WorstCase(max((c.price.cost_pico(tokens, 0) for c in priced if c.price), default=0), tokens, 0, local)

    def prompt_counts(self, call: Call[EmbeddingResponse]) -> PromptCounts | None:
        return None  # embeddings are bounded by the input count and margin; nothing to learn per deployment

    def long_input(self, call: Call[EmbeddingResponse]) -> bool:
        return sum(len(t) for t in call.inputs) > LONG_INPUT_CHARS

    def local_usage(self, call: Call[EmbeddingResponse], data: dict[str, Any]) -> dict[str, Any]:
        from .tokens import count_text

        tokens = sum(count_text(t) for t in call.inputs)
        return {"prompt_tokens": tokens, "total_tokens": tokens}

    def result(self, call: Call[EmbeddingResponse], data: dict[str, Any]) -> EmbeddingResponse:
        return EmbeddingResponse.model_validate(data)


EMBEDDINGS = EmbeddingsTask()
LONG_INPUT_CHARS = 200_000  # counting more text than this is done in a worker thread


def prepare_embedding(
    model: str,
    input: Any,
    params: dict[str, Any],
    *,
    registry: Registry | None = None,
    target: Target | None = None,
    **settings: Unpack[CallSettings],
) -> Call[EmbeddingResponse]:
    """A prepared embedding call (``params`` from :func:`check_request`)."""
    inputs = _inputs(input)
    if target is None:
        target = (registry or default_registry()).resolve(model, settings.get("api_base"))
    return prepare(EMBEDDINGS, target, inputs, params, **settings)


@dataclass(slots=True)
class EmbeddingArgs:
    """One embedding call's arguments as :func:`embedding` and :func:`aembedding` take them."""

    given: dict[str, Any]

    def prepare(self, fn: str) -> Call[EmbeddingResponse]:
        g = self.given
        check_unknown(g["kwargs"], fn)
        return prepare_embedding(
            g["model"],
            g["input"],
            embedding_params(g["dimensions"], g["encoding_format"], g["user"], g["extra_body"]),
            api_key=g["api_key"],
            api_base=g["api_base"] or g["base_url"],
            timeout=g["timeout"],
            extra_headers=g["extra_headers"],
            bill_to=g["bill_to"],
            registry=g["registry"],
            catalog=g["catalog"],
        )


def embedding_args(
    model: str,
    input: Any = None,
    *,
    api_key: str | None = None,
    api_base: str | None = None,
    base_url: str | None = None,
    timeout: Any = None,
    dimensions: int | None = None,
    encoding_format: str | None = None,
    user: str | None = None,
    extra_headers: dict[str, str] | None = None,
    extra_body: dict[str, Any] | None = None,
    client: Any = None,
    bill_to: str | None = None,
    registry: Registry | None = None,
    catalog: Catalog | None = None,
    budget: Budget | None = None,
    **kwargs: Any,
) -> EmbeddingArgs:
    """The arguments of :func:`embedding` / :func:`aembedding`, written once (OpenAI's and LiteLLM's names)."""
    return EmbeddingArgs(locals())


@same_arguments_as(embedding_args)
def embedding(*args: Any, **kwargs: Any) -> EmbeddingResponse:
    """Embed a string or a list of strings; OpenAI-shaped ``EmbeddingResponse``.

    Example::

        r = embedding(model="deepinfra/BAAI/bge-m3", input=["hello", "world"])
        len(r.data), r.usage.prompt_tokens
    """
    a = embedding_args(*args, **kwargs)
    return run(a.prepare("embedding"), a.given["client"], a.given["budget"])


@same_arguments_as(embedding_args)
async def aembedding(*args: Any, **kwargs: Any) -> EmbeddingResponse:
    """Async :func:`embedding`.

    Example::

        r = await aembedding(model="huggingface/nebius/Qwen/Qwen3-Embedding-8B", input="hello")
    """
    a = embedding_args(*args, **kwargs)
    return await arun(a.prepare("aembedding"), a.given["client"], a.given["budget"])
