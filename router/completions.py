"""``text_completion()`` / ``atext_completion()``: OpenAI's legacy text completions (``/v1/completions``).

Served by OpenAI-compatible servers (vLLM, DeepInfra, OpenAI) and TGI; the HF router has no such route,
so a ``huggingface/...`` model is a clear error before any request. Same call shape as
``litellm.text_completion`` for what polyroute supports. ``stream=True`` returns a stream of
``TextCompletion`` chunks (``usage`` on a last chunk with ``stream_options={"include_usage": True}``), with
budgets settled when it ends as chat streams are.

Example::

    from router import text_completion
    r = text_completion(model="deepinfra/meta-llama/Llama-3.3-70B-Instruct", prompt="Once upon a", max_tokens=20)
    r.choices[0].text, r.usage.total_tokens, r.meta.cost_usd
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from providers.errors import InvalidRequestArgumentError
from providers.registry import Registry
from providers.spec import Target

from .budget import Budget, WorstCase
from .calibration import PromptCounts
from .params import check_params, merge_extra_body
from .pipeline import Call, CallSettings, aresolve, arun, arun_stream, check_unknown, prepare, resolve, run, run_stream
from .pricing.catalog import Catalog, PriceLookup
from .streaming import AsyncStream, Stream
from .streaming.text import TextChunkNormalizer
from .surface import same_arguments_as
from .types import TextCompletion

if TYPE_CHECKING:
    from typing_extensions import Unpack


# Body parameters of a text completion (besides model and prompt), as OpenAI names them.
COMPLETION_PARAMS = (
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "echo",
    "suffix",
    "best_of",
    "user",
)
# Fields extra_body may never set: they come from the call's own arguments.
EXTRA_BODY_OWNED = frozenset({"model", "prompt", "stream", "stream_options"})
LONG_PROMPT_CHARS = 200_000  # counting more text than this is done in a worker thread


def prompts_of(prompt: Any) -> list[str]:
    """The prompt as a list of texts; token-id prompts and empty ones are refused with the fix."""
    if isinstance(prompt, str):
        texts = [prompt]
    elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
        texts = list(prompt)
    else:
        shown = type(prompt).__name__ if prompt else "empty"
        raise InvalidRequestArgumentError(
            f"prompt must be a string or a non-empty list of strings, got {shown}; token-id prompts are not "
            "supported here (decode them to text first)"
        )
    for i, text in enumerate(texts):
        if not text:
            raise InvalidRequestArgumentError(f"prompt[{i}] is an empty string; a completion needs text to continue")
    return texts


def completion_body(params: dict[str, Any], extra_body: Any) -> dict[str, Any]:
    """The checked body parameters (without model and prompt)."""
    body = {k: v for k, v in params.items() if v is not None}
    chat_checked = {k: v for k, v in body.items() if k not in ("logprobs", "echo", "suffix", "best_of")}
    check_params(chat_checked)  # the parameters chat shares are checked the same way
    logprobs = body.get("logprobs")
    if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int) or not 0 <= logprobs <= 5):
        raise InvalidRequestArgumentError(
            f"logprobs must be an integer from 0 to 5 for text completions, got {logprobs!r}"
        )
    for name in ("echo",):
        if name in body and not isinstance(body[name], bool):
            raise InvalidRequestArgumentError(f"{name} must be true or false, got {body[name]!r}")
    if "suffix" in body and not isinstance(body["suffix"], str):
        raise InvalidRequestArgumentError(f"suffix must be a string, got {type(body['suffix']).__name__}")
    best_of = body.get("best_of")
    if best_of is not None and (isinstance(best_of, bool) or not isinstance(best_of, int) or best_of < 1):
        raise InvalidRequestArgumentError(f"best_of must be a positive integer, got {best_of!r}")
    merge_extra_body(extra_body, body, EXTRA_BODY_OWNED)
    return body


def stream_body(body: dict[str, Any], stream_options: Any) -> bool:
    """Ask the upstream for a stream with its usage (budgets settle on it); True when the caller asked for
    the usage chunk too (``stream_options={"include_usage": True}``)."""
    if stream_options is not None and not isinstance(stream_options, dict):
        raise InvalidRequestArgumentError(
            f"stream_options must be a dict like {{'include_usage': True}}, got {type(stream_options).__name__}"
        )
    body["stream"] = True
    body["stream_options"] = {**(stream_options or {}), "include_usage": True}
    return bool(stream_options and stream_options.get("include_usage"))


def check_request(prompt: Any, params: dict[str, Any], extra_body: Any = None) -> dict[str, Any]:
    """Check a text completion request as a call would (the proxy, before routing); returns the body."""
    prompts_of(prompt)
    return completion_body(params, extra_body)


class TextCompletionTask:
    """Text completions on the router's side: prompt and output caps at the highest price (answers per
    prompt x prompts), local counts when the upstream sent no usage, ``TextCompletion`` results."""

    name = "completions"

    def worst_case(self, call: Call[TextCompletion], budget: Budget, candidates: list[PriceLookup]) -> WorstCase:
        texts: list[str] = call.inputs
        # Every prompt gets n answers; the whole prompt text bounds the prompt side.
        body = {**call.params, "n": (call.params.get("n") or 1) * len(texts)}
        messages = [{"role": "user", "content": text} for text in texts]
        return budget.worst_case(call.target, body, messages, candidates)

    def prompt_counts(self, call: Call[TextCompletion]) -> PromptCounts | None:
        return None  # overheads are learned for chat templates; a raw prompt has none

    def long_input(self, call: Call[TextCompletion]) -> bool:
        return sum(len(t) for t in call.inputs) > LONG_PROMPT_CHARS

    def local_usage(self, call: Call[TextCompletion], data: dict[str, Any]) -> dict[str, Any]:
        from .tokens import count_text

        prompt = sum(count_text(t) for t in call.inputs)
        completion = sum(count_text(c["text"]) for c in data["choices"])
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def result(self, call: Call[TextCompletion], data: dict[str, Any]) -> TextCompletion:
        return TextCompletion.model_validate(data)


COMPLETIONS = TextCompletionTask()


def prepare_text_completion(
    model: str,
    prompt: Any,
    body: dict[str, Any],
    *,
    registry: Registry | None = None,
    target: Target | None = None,
    stream_options: Any = None,
    **settings: Unpack[CallSettings],
) -> Call[TextCompletion]:
    """A prepared text completion (``body`` from :func:`check_request`; streamed when ``stream_options`` is
    given, ``{}`` for a stream without a usage chunk)."""
    texts = prompts_of(prompt)
    if target is None:
        target = resolve(model, settings.get("api_base"), registry, settings.get("catalog"))
    streamed = stream_options is not None
    include_usage = stream_body(body, stream_options) if streamed else False
    call = prepare(COMPLETIONS, target, texts, body, settings, streamed)
    call.include_usage = include_usage
    return call


def normalizer(call: Call[TextCompletion]) -> TextChunkNormalizer:
    """The normalizer of a streamed text completion."""
    return TextChunkNormalizer(
        call.target, call.helper, prompts=call.inputs, include_usage=call.include_usage, secrets=call.secrets
    )


def run_text_completion(
    call: Call[TextCompletion], client: Any = None, budget: Budget | None = None
) -> TextCompletion | Stream[TextCompletion]:
    """Send a prepared text completion: its result, or its stream."""
    return run_stream(call, normalizer(call), client, budget) if call.stream else run(call, client, budget)


async def arun_text_completion(
    call: Call[TextCompletion], client: Any = None, budget: Budget | None = None
) -> TextCompletion | AsyncStream[TextCompletion]:
    """Async :func:`run_text_completion`."""
    if call.stream:
        return await arun_stream(call, normalizer(call), client, budget)
    return await arun(call, client, budget)


@dataclass(slots=True)
class TextCompletionArgs:
    """One text completion's arguments as :func:`text_completion` and :func:`atext_completion` take them."""

    given: dict[str, Any]

    def prepare(self, fn: str, target: Target | None = None) -> Call[TextCompletion]:
        g = self.given
        check_unknown(g["kwargs"], fn)
        if g["stream"] not in (True, False, None):
            raise InvalidRequestArgumentError(f"stream must be True or False, got {g['stream']!r}")
        if g["stream_options"] is not None and not g["stream"]:
            raise InvalidRequestArgumentError("stream_options is only for stream=True")
        body = completion_body({name: g[name] for name in COMPLETION_PARAMS}, g["extra_body"])
        return prepare_text_completion(
            g["model"],
            g["prompt"],
            body,
            registry=g["registry"],
            target=target,
            stream_options=(g["stream_options"] or {}) if g["stream"] else None,
            api_key=g["api_key"],
            api_base=g["api_base"] or g["base_url"],
            timeout=g["timeout"],
            extra_headers=g["extra_headers"],
            bill_to=g["bill_to"],
            catalog=g["catalog"],
        )


def text_completion_args(
    model: str,
    prompt: Any = None,
    *,
    stream: bool = False,
    stream_options: dict[str, Any] | None = None,
    api_key: str | None = None,
    api_base: str | None = None,
    base_url: str | None = None,
    timeout: Any = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    n: int | None = None,
    stop: str | list[str] | None = None,
    seed: int | None = None,
    presence_penalty: float | None = None,
    frequency_penalty: float | None = None,
    logit_bias: dict[str, float] | None = None,
    logprobs: int | None = None,
    echo: bool | None = None,
    suffix: str | None = None,
    best_of: int | None = None,
    user: str | None = None,
    extra_headers: dict[str, str] | None = None,
    extra_body: dict[str, Any] | None = None,
    client: Any = None,
    bill_to: str | None = None,
    registry: Registry | None = None,
    catalog: Catalog | None = None,
    budget: Budget | None = None,
    **kwargs: Any,
) -> TextCompletionArgs:
    """The arguments of :func:`text_completion` / :func:`atext_completion`, written once."""
    return TextCompletionArgs(locals())


@same_arguments_as(text_completion_args)
def text_completion(*args: Any, **kwargs: Any) -> TextCompletion | Stream[TextCompletion]:
    """A legacy text completion from any upstream that serves ``/completions``; OpenAI-shaped result, or
    with ``stream=True`` a stream of ``TextCompletion`` chunks.

    Example::

        r = text_completion(model="openai/my-model", api_base="http://127.0.0.1:8000/v1", prompt="Hello")
        r.choices[0].text
        for chunk in text_completion(model="huggingface/tgi", api_base=url, prompt="Hello", stream=True):
            print(chunk.choices[0].text, end="")
    """
    a = text_completion_args(*args, **kwargs)
    return run_text_completion(a.prepare("text_completion"), a.given["client"], a.given["budget"])


@same_arguments_as(text_completion_args)
async def atext_completion(*args: Any, **kwargs: Any) -> TextCompletion | AsyncStream[TextCompletion]:
    """Async :func:`text_completion`.

    Example::

        r = await atext_completion(model="huggingface/tgi", api_base=endpoint_url, prompt="def fib(n):")
    """
    a = text_completion_args(*args, **kwargs)
    g = a.given
    target = await aresolve(g["model"], g["api_base"] or g["base_url"], g["registry"], g["catalog"])
    return await arun_text_completion(a.prepare("atext_completion", target), g["client"], g["budget"])
