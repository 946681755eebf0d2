"""Result types: pydantic models whose ``model_dump()`` is OpenAI's JSON.

The fields mirror the OpenAI SDK's models; upstream extras (``reasoning_content``, a provider's own
``usage.estimated_cost``) are kept as extra fields. ``.meta`` is not part of the JSON: it tells who
served the call, how long it took and every attempt made.

Example::

    r = completion(model="<provider>/<model id>", messages=[{"role": "user", "content": "hi"}])
    r.choices[0].message.content, r.usage.total_tokens, r.meta.provider
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from typing_extensions import Self

    from .pricing.cost import CostInfo


@dataclass(slots=True)
class Attempt:
    """One try at one upstream: what was called and how it ended."""

    model: str
    provider: str
    api_base: str
    status_code: int | None
    error: str | None  # error class name, None on success
    latency_ms: float
    deployment: str | None = None  # the router deployment, "group[i]:model"
    waited_ms: float = 0.0  # time spent waiting (Retry-After, limits) before this attempt
    # A failed attempt the upstream may still bill (it answered 200, then the body was cut or unreadable):
    # charged to the budget at its reserved worst case, in pico-USD. None: nothing charged.
    charged_pico: int | None = None


@dataclass(slots=True)
class ResponseMeta:
    """Facts about a call that are not part of OpenAI's JSON."""

    provider: str  # the upstream that actually served, e.g. the sub-provider behind a gateway
    model: str  # the model id it served
    api_base: str
    latency_ms: float
    model_string: str  # what the caller asked for
    attempts: list[Attempt] = field(default_factory=list)
    time_to_first_token_ms: float | None = None  # streams only
    usage_estimated: bool = False  # True when usage was counted locally (upstream sent none)
    upstream_request_id: str | None = None
    # Cost, at the price of the provider that served (see router.pricing). cost_usd is None,
    # never a silent 0, when no price exists; unpriced_reason then says why.
    cost_usd: float | None = None
    cost_pico: int | None = None  # exact cost in 1e-12 USD (sums without rounding drift)
    cost_estimated: bool = False  # True when the tokens behind the cost were counted locally
    price_source: str | None = None  # catalog URL, "config" or "snapshot"
    price_fetched_at: float | None = None  # unix time the price list was fetched
    unpriced_reason: str | None = None
    upstream_cost_usd: float | None = None  # the provider's own figure (usage.estimated_cost)

    def set_cost(self, info: CostInfo) -> None:
        """Copy a cost computation onto this record."""
        self.cost_usd = info.cost_usd
        self.cost_pico = info.cost_pico
        self.cost_estimated = info.cost_estimated
        self.price_source = info.price_source
        self.price_fetched_at = info.price_fetched_at
        self.unpriced_reason = info.unpriced_reason
        self.upstream_cost_usd = info.upstream_cost_usd


class _OpenAIModel(BaseModel):
    """A pydantic model that also reads as a mapping of its JSON fields, as LiteLLM's results do.

    ``r["choices"][0]["message"]["content"]``, ``r.get("usage")``, ``"choices" in r``, ``r.keys()``,
    ``r.items()`` and ``{**r}`` read the fields (extras included) in place: nothing is converted. Iterating
    stays pydantic's (``(name, value)`` pairs), so ``dict(r)`` is the same shallow dict as before.

    Example::

        r = completion(model="<provider>/<model id>", messages=[{"role": "user", "content": "hi"}])
        r["choices"][0]["message"]["content"] == r.choices[0].message.content
        r.get("usage", {}), "usage" in r, list(r.keys())
    """

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    def __getitem__(self, key: str) -> Any:
        if isinstance(key, str):
            fields = self.__dict__
            if key in fields:
                return fields[key]
            extra = self.__pydantic_extra__
            if extra and key in extra:
                return extra[key]
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        """The field ``key`` (``default`` when there is none), as ``dict.get``."""
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in self.__dict__ or key in (self.__pydantic_extra__ or ()))

    def keys(self) -> list[str]:
        """The field names, in JSON order (extras last), as ``model_dump()`` has them."""
        return [*self.__dict__, *(self.__pydantic_extra__ or ())]

    def values(self) -> list[Any]:
        """The field values, in the order of :meth:`keys`."""
        return [*self.__dict__.values(), *(self.__pydantic_extra__ or {}).values()]

    def items(self) -> list[tuple[str, Any]]:
        """``(name, value)`` pairs, in the order of :meth:`keys`."""
        return [*self.__dict__.items(), *(self.__pydantic_extra__ or {}).items()]


class FunctionCall(_OpenAIModel):
    name: str | None = None
    arguments: str = ""


class ChatCompletionMessageToolCall(_OpenAIModel):
    id: str
    type: Literal["function"] | str = "function"
    function: FunctionCall


class ChatCompletionMessage(_OpenAIModel):
    content: str | None = None
    refusal: str | None = None
    role: str = "assistant"
    annotations: list[Any] | None = None
    audio: Any = None
    function_call: FunctionCall | None = None
    tool_calls: list[ChatCompletionMessageToolCall] | None = None


class Choice(_OpenAIModel):
    finish_reason: str | None = None
    index: int = 0
    logprobs: Any = None
    message: ChatCompletionMessage


class CompletionUsage(_OpenAIModel):
    completion_tokens: int = 0
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens_details: Any = None
    prompt_tokens_details: Any = None


class WithMeta(_OpenAIModel):
    # ``_meta`` is a plain slot, not a pydantic private attribute: pydantic reads those through its
    # ``__getattr__`` (~2.5 us a read) and sets them up on every validation (~4 us); a slot costs
    # neither. Copies, pickles and ``==`` carry it as they did the private attribute.
    __slots__ = ("_meta",)
    if TYPE_CHECKING:
        _meta: ResponseMeta | None

    @property
    def meta(self) -> ResponseMeta:
        """Who served the call, latency, attempts (not part of the JSON)."""
        meta = meta_of(self)
        if meta is None:
            raise AttributeError("this result was not produced by a polyroute call and has no meta")
        return meta

    def __copy__(self) -> Self:
        clone = super().__copy__()
        object.__setattr__(clone, "_meta", meta_of(self))
        return clone

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        clone = super().__deepcopy__(memo)
        object.__setattr__(clone, "_meta", copy.deepcopy(meta_of(self), memo))
        return clone

    def __getstate__(self) -> dict[Any, Any]:
        return {**super().__getstate__(), "_meta": meta_of(self)}

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        private = state.get("__pydantic_private__") or {}  # pickled when _meta was a private attribute
        object.__setattr__(self, "_meta", state.get("_meta", private.get("_meta")))

    def __eq__(self, other: object) -> bool:
        equal = super().__eq__(other)
        if equal is True and isinstance(other, WithMeta):
            return meta_of(self) == meta_of(other)
        return equal


def attach_meta(result: WithMeta, meta: ResponseMeta) -> None:
    """Give a result its ``.meta`` (a plain slot, see WithMeta: no pydantic ``__setattr__``)."""
    object.__setattr__(result, "_meta", meta)


def meta_of(result: WithMeta) -> ResponseMeta | None:
    """The result's meta (None when it was not made by a polyroute call); read without pydantic's hooks."""
    try:
        return result._meta
    except AttributeError:  # never set: validated or constructed outside polyroute
        return None


ChoiceT = TypeVar("ChoiceT", bound=_OpenAIModel)


class _CompletionFields(_OpenAIModel, Generic[ChoiceT]):
    """The fields a completion and a chunk of one share (in OpenAI's order); they differ in their choices."""

    id: str
    choices: list[ChoiceT]
    created: int
    model: str
    object: str
    service_tier: str | None = None
    system_fingerprint: str | None = None
    usage: CompletionUsage | None = None


class ChatCompletion(WithMeta, _CompletionFields[Choice]):
    object: str = "chat.completion"


class ChoiceDeltaFunctionCall(_OpenAIModel):
    name: str | None = None
    arguments: str | None = None


class ChoiceDeltaToolCallFunction(ChoiceDeltaFunctionCall):
    """The function of a tool-call delta: the same fields as a function-call delta."""


class ChoiceDeltaToolCall(_OpenAIModel):
    index: int
    id: str | None = None
    function: ChoiceDeltaToolCallFunction | None = None
    type: str | None = None


class ChoiceDelta(_OpenAIModel):
    content: str | None = None
    function_call: ChoiceDeltaFunctionCall | None = None
    refusal: str | None = None
    role: str | None = None
    tool_calls: list[ChoiceDeltaToolCall] | None = None


class ChunkChoice(_OpenAIModel):
    delta: ChoiceDelta
    finish_reason: str | None = None
    index: int = 0
    logprobs: Any = None


class ChatCompletionChunk(_CompletionFields[ChunkChoice]):
    object: str = "chat.completion.chunk"


class TextChoice(_OpenAIModel):
    index: int = 0
    text: str
    logprobs: Any = None
    finish_reason: str | None = None


class TextCompletion(WithMeta):
    """OpenAI's ``text_completion`` object, with polyroute's ``.meta``; a streamed text completion yields
    these as its chunks (``usage`` on the last one when asked for, as OpenAI does)."""

    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None


class Embedding(_OpenAIModel):
    embedding: list[float] | str  # a string: encoding_format="base64" (little-endian float32, base64)
    index: int
    object: str = "embedding"


class EmbeddingUsage(_OpenAIModel):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingResponse(WithMeta):
    data: list[Embedding]
    model: str
    object: str = "list"
    usage: EmbeddingUsage
