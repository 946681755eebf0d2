"""The Router: model groups of deployments, with retries, fallbacks, cooldowns and strategies.

Example::

    from router import Router
    r = Router(model_list=[
        {"model_name": "chat", "params": {"model": "huggingface/deepseek-ai/DeepSeek-R1:cheapest"}},
        {"model_name": "chat", "params": {"model": "deepinfra/deepseek-ai/DeepSeek-R1", "weight": 2, "rpm": 600}},
        {"model_name": "backup", "params": {"model": "huggingface/Qwen/Qwen3-8B"}},
    ], strategy="least-in-flight", num_retries=3, fallbacks=[{"chat": ["backup"]}], cooldown_seconds=30)
    resp = r.completion(model="chat", messages=[{"role": "user", "content": "Hi"}])
    resp.meta.provider, [a.deployment for a in resp.meta.attempts]

Several processes share cooldowns, rpm/tpm windows, in-flight counts and latency through Redis with
``Router(model_list, redis_url="redis://127.0.0.1:6379/0")`` (see :mod:`router.shared`); call
``router.close()`` when done.

Retries run under tenacity: each try asks the request's :class:`Session` for the next deployment;
a deployment that answered 429/503 with ``Retry-After`` (or HF's ``estimated_time``) is not asked
again before that time, while other deployments are tried at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity

from providers.errors import InvalidRequestArgumentError
from providers.registry import Registry, default_registry

from ..budget import Budget
from ..chat import arun_chat, run_chat
from ..completions import normalizer as text_normalizer
from ..embeddings import has_token_ids
from ..params import check_params
from ..pipeline import Call, arun, arun_stream, resolve, run, run_stream
from ..pricing.catalog import Catalog, default_catalog
from ..shared.link import SharedStateUnavailable
from ..streaming import AsyncStream, Stream
from ..streaming.core import C
from ..tokens import aload_encoding, long_prompt
from ..types import Attempt, EmbeddingResponse, TextCompletion, WithMeta
from .calls import chat_call, completion_call, embedding_call
from .deployment import Deployment, fallback_map, now, parse_model_list
from .hooks import Hook, call_hook
from .names import GroupNames, placeholders, renamed_fallbacks, split_patterns
from .offers import CatalogFacts, needs_of
from .session import Choice, NotYet, RequestInfo, Session, bounded
from .strategies import strategy_name
from .streams import AsyncRoutedStream, RoutedStream, has_content

R = TypeVar("R", bound=WithMeta)  # a task's result

if TYPE_CHECKING:
    from ..shared import SharedRouterState

_DEFAULT_TIMEOUT = 600.0


class _TryAgain(Exception):
    pass


class Router(CatalogFacts):
    """Model groups of deployments with retries, fallbacks, cooldowns and a routing strategy.

    LiteLLM's argument names are accepted where the meaning is the same (``routing_strategy``,
    ``cooldown_time``, ``litellm_params``).
    """

    def __init__(
        self,
        model_list: list[dict[str, Any]],
        *,
        strategy: str | None = None,
        routing_strategy: str | None = None,
        num_retries: int = 2,
        fallbacks: Any = None,
        context_window_fallbacks: Any = None,
        content_policy_fallbacks: Any = None,
        allowed_fails: int = 3,
        cooldown_seconds: float | None = None,
        cooldown_time: float | None = None,
        cooldown_window: float = 60.0,
        timeout: float | None = None,
        on_limit: str = "wait",
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        catalog: Catalog | None = None,
        registry: Registry | None = None,
        budget: Budget | None = None,
        on_success: Hook | None = None,
        on_failure: Hook | None = None,
        seed: int | None = None,
        redis_url: str | None = None,
        shared_state: SharedRouterState | None = None,
        sync_interval: float = 0.1,
        model_group_alias: Any = None,
    ) -> None:
        self.registry = registry or default_registry()
        self.catalog = catalog or default_catalog()
        _learn_subproviders(model_list, self.registry, self.catalog)
        plain, patterns = split_patterns(model_list)
        self.groups: dict[str, list[Deployment]] = (
            parse_model_list(plain, self.registry) if plain or not patterns else {}
        )
        samples = (
            [d for ds in parse_model_list(placeholders(patterns), self.registry).values() for d in ds]
            if patterns
            else []
        )
        self.pattern_deployments = samples  # wildcard groups' deployments for a sample name (their api_base)
        self.names = GroupNames(patterns, model_group_alias, self.groups)
        self.strategy = strategy_name(strategy or routing_strategy or "weighted")
        if isinstance(num_retries, bool) or not isinstance(num_retries, int) or num_retries < 0:
            raise InvalidRequestArgumentError(f"num_retries must be an integer >= 0, got {num_retries!r}")
        self.num_retries = num_retries
        fallbacks, context_window_fallbacks, content_policy_fallbacks = (
            renamed_fallbacks(v, self._pinned) for v in (fallbacks, context_window_fallbacks, content_policy_fallbacks)
        )  # aliases and wildcard names given as fallbacks: their groups
        self.fallbacks = fallback_map(fallbacks, "fallbacks", self.groups)
        self.context_window_fallbacks = fallback_map(context_window_fallbacks, "context_window_fallbacks", self.groups)
        self.content_policy_fallbacks = fallback_map(content_policy_fallbacks, "content_policy_fallbacks", self.groups)
        if on_limit not in ("wait", "raise"):
            raise InvalidRequestArgumentError(f"on_limit must be 'wait' or 'raise', got {on_limit!r}")
        self.on_limit = on_limit
        self.allowed_fails = max(1, int(allowed_fails))
        self.cooldown_seconds = float(cooldown_seconds if cooldown_seconds is not None else cooldown_time or 30.0)
        self.cooldown_window = cooldown_window
        self.timeout = timeout
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.budget = budget
        self.on_success, self.on_failure = on_success, on_failure
        self.rng = random.Random(seed)
        self._chains: dict[str, tuple[str, ...]] = {}
        self.lock = threading.Lock()  # picks and rate-window bookkeeping are one atomic step
        self.provider_not_before: dict[tuple[int, str], float] = {}  # (deployment, sub-provider) Retry-After
        every = [d for ds in self.groups.values() for d in ds] + samples
        self._counts_tpm = any(d.tpm for d in every)
        # families whose catalog lists models, prices and context windows (the rest: configured prices only)
        self.catalog_families = {d.target.provider for d in every} & set(self.catalog.families())
        if redis_url is not None and shared_state is None:
            shared_state = _shared_state(redis_url, sync_interval)
        self.shared = shared_state  # cooldowns, rpm/tpm, in-flight and latency shared with other replicas
        if shared_state is not None:
            shared_state.attach(self)

    def close(self) -> None:
        """Stop sharing state (the last reports are written to Redis first)."""
        if self.shared is not None:
            self.shared.close()

    def backoff(self, tries: int, rng: random.Random) -> float:
        """Exponential backoff with full jitter, for errors that did not say how long to wait."""
        return float(min(self.backoff_max, self.backoff_base * 2 ** max(0, tries - 1)) * rng.uniform(0.5, 1.0))

    def notify_failure(self, record: Attempt, err: BaseException) -> None:
        call_hook(self.on_failure, record, err)

    # ---------------------------------------------------------------- sessions
    def _counts_prompt(self, groups: list[str]) -> bool:
        return self._counts_tpm or self._context_matters(groups)

    def _context_matters(self, groups: list[str]) -> bool:
        """Whether a context window is known for some deployment (then the prompt is counted)."""
        members = [d for g in groups for d in self.groups[g]]
        if not self.catalog_families and not any(d.context_length for d in members):
            return False
        return any(self.context_length(d) for d in members)

    def _needs_catalog(self, groups: list[str]) -> bool:
        return bool(self.catalog_families) and (
            self.strategy == "cheapest"
            or any(
                d.target.policy or d.target.provider in self.catalog_families for g in groups for d in self.groups[g]
            )
        )

    def groups_for(self, model: str, extra: Any = None) -> list[str]:
        if extra is not None:  # per-call fallbacks, after the group's own chain
            chain = self.groups_for(model)
            extra = [extra] if isinstance(extra, str) else extra
            if not isinstance(extra, (list, tuple)):
                raise InvalidRequestArgumentError(f"fallbacks must be a list of model group names, got {extra!r}")
            for group in extra:
                chain.extend(g for g in self.groups_for(group) if g not in chain)
            return chain
        cached = self._chains.get(model)
        if cached is not None:
            return list(cached)
        group = self.group_of(model)
        if group is None:
            raise InvalidRequestArgumentError(
                f"model {model!r} is not a model_name of this router; known: {', '.join(self.listed())}"
            )
        groups = [group]
        for group in groups:  # follow fallbacks of fallbacks, in order, once each
            groups.extend(g for g in self.fallbacks.get(group, []) if g not in groups)
        self._chains[model] = tuple(groups)
        return groups

    def group_of(self, model: str) -> str | None:
        """The group serving ``model``: itself, the group of an alias, or one made for a wildcard pattern."""
        return self.names.group(
            model, self.groups, lambda entries: parse_model_list(entries, self.registry), self._forget
        )

    def _pinned(self, name: str) -> str | None:
        parse = functools.partial(parse_model_list, registry=self.registry)
        return self.names.group(name, self.groups, parse, self._forget, pin=True)

    def listed(self) -> list[str]:
        """The model names to list: the groups and the aliases not hidden."""
        return self.names.listed(self.groups)

    def _forget(self, group: str) -> None:
        self._chains.clear()  # chains naming a dropped wildcard group are made again

    def _session(
        self,
        model: str,
        messages: list[dict[str, Any]] | None,
        kwargs: dict[str, Any],
        stream: bool,
        groups: list[str] | None = None,
        prompt: int | None = None,
    ) -> Session:
        fallbacks = kwargs.pop("fallbacks", None)
        if groups is None:
            groups = self.groups_for(model, fallbacks)
        timeout = kwargs.get("timeout") or self.timeout or _DEFAULT_TIMEOUT
        if prompt is None and messages is not None and self._counts_prompt(groups):
            from ..tokens import count_messages

            prompt = count_messages(messages)
        caps = [v for k in ("max_tokens", "max_completion_tokens") if (v := kwargs.get(k)) is not None]
        if any(isinstance(c, bool) or not isinstance(c, int) for c in caps):
            check_params({k: kwargs[k] for k in ("max_tokens", "max_completion_tokens") if k in kwargs})  # raises
        max_tokens = max(caps, default=None)  # upstreams honour either: the larger bounds the answer
        needs = needs_of(kwargs) if self.catalog_families else frozenset()
        if kwargs.pop("priced_only", False) and self.catalog_families:  # e.g. a budgeted batch: never an unknown bill
            needs |= {"priced"}
        info = RequestInfo(prompt, max_tokens, stream, needs)
        return Session(self, groups, info, now() + float(timeout), self.rng)

    # ---------------------------------------------------------------- calls
    def _finish(self, session: Session, choice: Choice, result: Any, ttft_ms: float | None = None) -> None:
        latency = (now() - choice.started) * 1000
        record = session.succeeded(choice, latency, ttft_ms, keep_in_flight=ttft_ms is not None)
        if isinstance(result, WithMeta):
            result.meta.attempts = session.attempts
        call_hook(self.on_success, record, None)

    def completion(self, model: str, messages: Any = None, *, stream: bool = False, **kwargs: Any) -> Any:
        """Chat completion through the group ``model`` (a ``model_name``); ``stream=True`` returns a stream."""
        groups = self.groups_for(model, kwargs.get("fallbacks"))
        if self._needs_catalog(groups):  # before the session: context limits, :cheapest
            for family in self.catalog_families:
                self.catalog.source(family)
        session = self._session(model, messages, kwargs, bool(stream), groups)
        budget = kwargs.pop("budget", self.budget)
        client = kwargs.pop("client", None)

        def attempt(choice: Choice) -> Any:
            call = chat_call(self, choice, messages, bool(stream), bounded(kwargs, session, choice, bool(stream)))
            result = run_chat(call, stream=bool(stream), client=client, budget=budget)
            if isinstance(result, Stream):
                return self._first_content(session, choice, result)
            self._finish(session, choice, result)
            return result

        return self._run_sync(session, attempt)

    async def acompletion(self, model: str, messages: Any = None, *, stream: bool = False, **kwargs: Any) -> Any:
        """Async :meth:`completion`."""
        groups = self.groups_for(model, kwargs.get("fallbacks"))
        if self._needs_catalog(groups):
            for family in self.catalog_families:
                await self.catalog.asource(family)
        prompt = None
        if messages is not None and self._counts_prompt(groups):
            await aload_encoding()  # the prompt will be counted: never load the tokenizer on the loop
            if long_prompt(messages):  # a long prompt is counted in a worker thread, off the event loop
                from ..tokens import count_messages

                prompt = await asyncio.to_thread(count_messages, messages)
        session = self._session(model, messages, kwargs, bool(stream), groups, prompt)
        budget = kwargs.pop("budget", self.budget)
        client = kwargs.pop("client", None)

        async def attempt(choice: Choice) -> Any:
            call = chat_call(self, choice, messages, bool(stream), bounded(kwargs, session, choice, bool(stream)))
            result = await arun_chat(call, stream=bool(stream), client=client, budget=budget)
            if isinstance(result, AsyncStream):
                return await self._afirst_content(session, choice, result)
            self._finish(session, choice, result)
            return result

        return await self._run_async(session, attempt)

    def embedding(self, model: str, input: Any = None, **kwargs: Any) -> EmbeddingResponse:
        """Embeddings through the group ``model``."""
        return self._one_shot(model, kwargs, functools.partial(embedding_call, self, input))

    async def aembedding(self, model: str, input: Any = None, **kwargs: Any) -> EmbeddingResponse:
        """Async :meth:`embedding`."""
        if has_token_ids(input):
            await aload_encoding()  # token ids may be decoded: never load the tokenizer on the event loop
        return await self._aone_shot(model, kwargs, functools.partial(embedding_call, self, input))

    def text_completion(
        self, model: str, prompt: Any = None, *, stream: bool = False, **kwargs: Any
    ) -> TextCompletion | RoutedStream[TextCompletion]:
        """A legacy text completion through the group ``model`` (its deployments must serve ``/completions``);
        ``stream=True`` returns a stream of ``TextCompletion`` chunks, with failover until the first text."""
        make = functools.partial(completion_call, self, prompt, bool(stream))
        if not stream:
            return self._one_shot(model, kwargs, make)
        session = self._session(model, None, kwargs, True)
        client, budget = kwargs.pop("client", None), kwargs.pop("budget", self.budget)

        def attempt(choice: Choice) -> RoutedStream[TextCompletion]:
            call = make(choice, bounded(kwargs, session, choice))
            stream = run_stream(call, text_normalizer(call), client, budget)
            return self._first_content(session, choice, stream)

        result: RoutedStream[TextCompletion] = self._run_sync(session, attempt)
        return result

    async def atext_completion(
        self, model: str, prompt: Any = None, *, stream: bool = False, **kwargs: Any
    ) -> TextCompletion | AsyncRoutedStream[TextCompletion]:
        """Async :meth:`text_completion`."""
        make = functools.partial(completion_call, self, prompt, bool(stream))
        if not stream:
            return await self._aone_shot(model, kwargs, make)
        session = self._session(model, None, kwargs, True)
        client, budget = kwargs.pop("client", None), kwargs.pop("budget", self.budget)

        async def attempt(choice: Choice) -> AsyncRoutedStream[TextCompletion]:
            call = make(choice, bounded(kwargs, session, choice))
            stream = await arun_stream(call, text_normalizer(call), client, budget)
            return await self._afirst_content(session, choice, stream)

        result: AsyncRoutedStream[TextCompletion] = await self._run_async(session, attempt)
        return result

    def _one_shot(self, model: str, kwargs: dict[str, Any], make: Callable[[Choice, dict[str, Any]], Call[R]]) -> R:
        """A non-streamed task through the group: the pipeline once per attempt."""
        session = self._session(model, None, kwargs, False)
        client, budget = kwargs.pop("client", None), kwargs.pop("budget", self.budget)

        def attempt(choice: Choice) -> R:
            result = run(make(choice, bounded(kwargs, session, choice)), client, budget)
            self._finish(session, choice, result)
            return result

        result: R = self._run_sync(session, attempt)
        return result

    async def _aone_shot(
        self, model: str, kwargs: dict[str, Any], make: Callable[[Choice, dict[str, Any]], Call[R]]
    ) -> R:
        """Async :meth:`_one_shot`."""
        session = self._session(model, None, kwargs, False)
        client, budget = kwargs.pop("client", None), kwargs.pop("budget", self.budget)

        async def attempt(choice: Choice) -> R:
            result = await arun(make(choice, bounded(kwargs, session, choice)), client, budget)
            self._finish(session, choice, result)
            return result

        result: R = await self._run_async(session, attempt)
        return result

    # ---------------------------------------------------------------- streams: failover until first content
    def _first_content(self, session: Session, choice: Choice, stream: Stream[C]) -> RoutedStream[C]:
        buffered: list[C] = []
        try:
            for chunk in stream:
                buffered.append(chunk)
                if has_content(chunk):
                    break
        except BaseException:
            stream.close()
            raise
        self._finish(session, choice, None, ttft_ms=(now() - choice.started) * 1000)
        stream.attempts = session.attempts
        return RoutedStream(stream, buffered, functools.partial(session.release, choice))

    async def _afirst_content(self, session: Session, choice: Choice, stream: AsyncStream[C]) -> AsyncRoutedStream[C]:
        buffered: list[C] = []
        try:
            async for chunk in stream:
                buffered.append(chunk)
                if has_content(chunk):
                    break
        except BaseException:
            await stream.aclose()
            raise
        self._finish(session, choice, None, ttft_ms=(now() - choice.started) * 1000)
        stream.attempts = session.attempts
        return AsyncRoutedStream(stream, buffered, functools.partial(session.release, choice))

    # ---------------------------------------------------------------- the retry loops (tenacity)
    @staticmethod
    def _wait(retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        err = outcome.exception() if outcome is not None else None
        return err.seconds if isinstance(err, NotYet) else 0.0

    def _choose(self, session: Session) -> Choice:
        """The session's next choice, admitted by the shared rpm/tpm window when the deployment has limits."""
        while True:
            choice, wait = session.choose(), 0.0
            shared = self._limiting(choice)
            if shared is None:
                return choice
            with _admission(session, choice):
                wait = shared.admit(choice.deployment, _tokens(session))
            if _admitted(session, choice, wait):
                return choice

    async def _achoose(self, session: Session) -> Choice:
        while True:
            choice, wait = session.choose(), 0.0
            shared = self._limiting(choice)
            if shared is None:
                return choice
            with _admission(session, choice):
                wait = await shared.aadmit(choice.deployment, _tokens(session))
            if _admitted(session, choice, wait):
                return choice

    def _limiting(self, choice: Choice) -> SharedRouterState | None:
        """The shared state that must admit the choice (None: no shared rpm/tpm window for it)."""
        d = choice.deployment
        return self.shared if d.rpm is not None or d.tpm is not None else None

    def _run_sync(self, session: Session, attempt: Callable[[Choice], Any]) -> Any:
        # The healthy path makes one attempt without tenacity's per-call machinery (measured: it is
        # most of the router's overhead); retries, after a failure or a wait, run under tenacity.
        try:
            choice = self._choose(session)
        except NotYet:
            pass
        else:
            try:
                return attempt(choice)
            except BaseException as err:
                if not session.failed(choice, err, (now() - choice.started) * 1000):
                    raise
        for trying in tenacity.Retrying(
            retry=tenacity.retry_if_exception_type((NotYet, _TryAgain)),
            wait=self._wait,
            reraise=True,
            sleep=time.sleep,
        ):
            with trying:
                choice = self._choose(session)
                try:
                    return attempt(choice)
                except BaseException as err:
                    if session.failed(choice, err, (now() - choice.started) * 1000):
                        raise _TryAgain() from err
                    raise
        raise AssertionError("unreachable: tenacity re-raises the final error")  # pragma: no cover

    async def _run_async(self, session: Session, attempt: Callable[[Choice], Any]) -> Any:
        try:
            choice = await self._achoose(session)
        except NotYet:
            pass
        else:
            try:
                return await attempt(choice)
            except BaseException as err:
                if not session.failed(choice, err, (now() - choice.started) * 1000):
                    raise
        async for trying in tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type((NotYet, _TryAgain)),
            wait=self._wait,
            reraise=True,
            sleep=asyncio.sleep,
        ):
            with trying:
                choice = await self._achoose(session)
                try:
                    return await attempt(choice)
                except BaseException as err:
                    if session.failed(choice, err, (now() - choice.started) * 1000):
                        raise _TryAgain() from err
                    raise
        raise AssertionError("unreachable: tenacity re-raises the final error")  # pragma: no cover


@contextlib.contextmanager
def _admission(session: Session, choice: Choice) -> Iterator[None]:
    """Around asking the shared window: Redis away -> the local window already admitted the choice;
    cancelled (a caller's timeout) or a bug -> the choice was never sent, so it is withdrawn."""
    try:
        yield
    except SharedStateUnavailable:
        pass
    except BaseException:
        session.withdraw(choice, 0)
        raise


def _admitted(session: Session, choice: Choice, wait: float) -> bool:
    if wait <= 0:
        return True
    session.withdraw(choice, wait)
    return False


def _learn_subproviders(model_list: Any, registry: Registry, catalog: Catalog) -> None:
    """Let the registry learn gateway sub-providers the model list names that it does not know yet (from
    the gateway's catalog); what is still wrong is reported by ``parse_model_list``, naming the entry."""
    for entry in model_list if isinstance(model_list, list) else ():
        params = (entry.get("params") or entry.get("litellm_params")) if isinstance(entry, dict) else None
        if isinstance(params, dict) and isinstance(params.get("model"), str):
            api_base = params.get("api_base") or params.get("base_url")
            with contextlib.suppress(InvalidRequestArgumentError):
                resolve(params["model"], api_base if isinstance(api_base, str) else None, registry, catalog)


def _tokens(session: Session) -> int:
    return (session.request.prompt_tokens or 0) + (session.request.max_tokens or 0)


def _shared_state(redis_url: str, sync_interval: float) -> SharedRouterState:
    from ..shared import RedisLink, SharedRouterState

    return SharedRouterState(RedisLink(redis_url), interval=sync_interval)
