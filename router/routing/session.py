"""One request's way through a router: which deployment next, how long to wait, when to fall back.

Pure decisions, no I/O: the sync and async runners in :mod:`router.routing.router` ask
:meth:`Session.choose` for the next attempt and report each outcome with :meth:`Session.failed` /
:meth:`Session.succeeded`. Retry-After is kept per deployment (``not_before``): a deployment that
said "wait" is not asked again before then, while the others may be.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from providers.errors import (
    BadRequestError,
    ContentPolicyViolationError,
    ContextWindowExceededError,
    PolyrouteError,
    RateLimitError,
    ServiceUnavailableError,
)
from providers.spec import Target

from ..credentials import unconfigured_error
from ..errors import BudgetExceededError
from ..types import Attempt
from .deployment import Deployment, now
from .strategies import pick

if TYPE_CHECKING:
    from .router import Router


class NotYet(Exception):
    """No deployment can take the request now; try again after ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"waiting {seconds:.3f}s")
        self.seconds = seconds


@dataclass(slots=True)
class Choice:
    deployment: Deployment
    target: Target  # the deployment's target, pinned to one HF provider for :cheapest / :fastest
    waited_ms: float
    started: float = 0.0
    probe: bool = False


@dataclass(slots=True)
class RequestInfo:
    prompt_tokens: int | None  # counted only when a context length is known somewhere
    max_tokens: int | None
    stream: bool
    needs: frozenset[str] = frozenset()  # "tools", "structured_output": skip offers that lack them


@dataclass(slots=True)
class Session:
    router: Router
    groups: list[str]
    request: RequestInfo
    deadline: float | None
    rng: random.Random
    attempts: list[Attempt] = field(default_factory=list)
    last_error: PolyrouteError | None = None
    group_index: int = 0
    tries_in_group: int = 0
    excluded: set[int] = field(default_factory=set)  # id(deployment) not to use again for this request
    providers: dict[int, list[str]] = field(default_factory=dict)  # HF policy: providers still to try
    backoff_until: dict[int, float] = field(default_factory=dict)  # this request's own backoff per deployment
    waiting_since: float | None = None
    cooldown_note: str | None = None

    # ---------------------------------------------------------------- choosing
    @property
    def group(self) -> str:
        return self.groups[self.group_index]

    def _advance_group(self, to: list[str] | None = None) -> bool:
        """Move to the next fallback group (or to ``to``); False when there is none."""
        if to is not None:
            remaining = [g for g in to if g not in self.groups[: self.group_index + 1]]
            self.groups = self.groups[: self.group_index + 1] + remaining
        if self.group_index + 1 >= len(self.groups):
            return False
        self.group_index += 1
        self.tries_in_group = 0
        return True

    def _fits(self, d: Deployment) -> bool:
        if self.request.needs and not self.router.capable(d, self.request.needs):
            return False
        prompt = self.request.prompt_tokens
        if prompt is None:  # nothing in these groups has a known context window
            return True
        return self.router.fits_context(d, prompt)

    def choose(self) -> Choice:
        """The next attempt, or :class:`NotYet`; raises the last error when nothing is left."""
        while True:
            t = now()
            if self.deadline is not None and t >= self.deadline:
                raise self._give_up("the request's total timeout ran out")
            members = self.router.groups[self.group]
            if self.excluded:
                members = [d for d in members if id(d) not in self.excluded]
            if any(d.unconfigured for d in members):
                members = self._configured(members)
            checked = self.request.prompt_tokens is not None or self.request.needs
            fitting = [d for d in members if self._fits(d)] if checked else members
            if members and not fitting:
                if any(self.router.capable(d, self.request.needs) for d in members):
                    # The prompt is too long for the whole group: context-window fallbacks, chosen up front.
                    self._note_context(members)
                    if self._advance_group(self.router.context_window_fallbacks.get(self.group, [])):
                        continue
                    raise self._give_up("the prompt is longer than every deployment's context window")
                self._note_capability(members)
                if self._advance_group():
                    continue
                raise self._give_up(f"no deployment supports {' and '.join(sorted(self.request.needs))}")
            if not fitting or self.tries_in_group > self.router.num_retries:
                if self._advance_group():
                    continue
                raise self._give_up("every deployment and fallback was tried")
            with self.router.lock:  # admission checks and rate-window counting happen as one step
                choice = self._pick(fitting, t)
            if choice is not None:
                return choice

    def _configured(self, members: list[Deployment]) -> list[Deployment]:
        """The deployments with credentials; when none has any, those whose key may still come with the call
        (the pipeline then raises MissingCredentialsError), never one whose config named an unset variable."""
        ready = [d for d in members if not d.missing()]
        if ready:
            return ready
        usable = [d for d in members if not d.unset_env]
        if not usable and self.last_error is None:
            self.last_error = unconfigured_error(members, self.group)
        return usable

    def _pick(self, fitting: list[Deployment], t: float) -> Choice | None:
        tokens = (self.request.prompt_tokens or 0) + (self.request.max_tokens or 0)
        if len(fitting) == 1:  # the common healthy case, without building candidate lists
            only = fitting[0]
            state = only.state
            if (
                not state.cooldown_until
                and state.not_before <= t
                and self.backoff_until.get(id(only), 0.0) <= t
                and only.rpm is None
                and only.tpm is None
            ):
                return self._take(only, t, tokens, cooling=False)
        healthy = [d for d in fitting if d.state.cooldown_until <= t and not d.state.probing]
        cooling = not healthy
        pool = healthy or [min(fitting, key=lambda d: d.state.cooldown_until)]  # never leave the group empty
        ready = [d for d in pool if self._not_before(d) <= t and _admits(d, t, tokens)]
        if len(ready) > 1 and any(d.order is not None for d in ready):  # LiteLLM's order: lowest first
            first = min(_order(d) for d in ready)
            ready = [d for d in ready if _order(d) == first]
        if not ready:
            when = min(max(self._not_before(d), d.next_free(t, tokens)) for d in pool)
            limited = all(self._not_before(d) <= t for d in pool)
            if limited and self.router.on_limit == "raise":
                raise self._give_up("every deployment is at its rpm/tpm limit", rate_limited=True)
            wait = when - t
            if self.waiting_since is None:
                self.waiting_since = t
            if self.deadline is not None and t + wait > self.deadline:
                why = "every deployment is at its rpm/tpm limit" if limited else "every deployment asked to wait"
                why += f"; the next try would start after the request's total timeout (in {wait:.1f}s)"
                raise self._give_up(why, rate_limited=limited)
            raise NotYet(wait)
        deployment = pick(
            self.router.strategy,
            ready,
            self.rng,
            stream=self.request.stream,
            cost=lambda d: self.router.expected_cost(d, self.request),
            headroom=lambda d: d.headroom(t, tokens),
        )
        return self._take(deployment, t, tokens, cooling)

    def _take(self, deployment: Deployment, t: float, tokens: int, cooling: bool) -> Choice:
        state = deployment.state
        probe = state.cooldown_until > 0 and state.cooldown_until <= t
        if cooling:
            self.cooldown_note = f"{deployment.name} was cooling down and is the only way left to answer"
        if probe:
            state.probing = True
        target = self._target(deployment)
        waited = 0.0 if self.waiting_since is None else (t - self.waiting_since) * 1000
        self.waiting_since = None
        with state.lock:
            state.in_flight += 1
            if deployment.rpm is not None or deployment.tpm is not None:
                deployment.count(t, tokens)
        self.tries_in_group += 1
        return Choice(deployment, target, waited, t, probe)

    def _not_before(self, d: Deployment) -> float:
        """Retry-After of the deployment (shared by every request), or this request's own backoff."""
        return max(d.state.not_before, self.backoff_until.get(id(d), 0.0))

    def _target(self, d: Deployment) -> Target:
        policy = d.target.policy
        if policy not in ("cheapest", "fastest"):
            return d.target
        order = self.providers.get(id(d))
        if order is None:
            order = self.providers[id(d)] = self.router.policy_order(d, self.request)
        if not order:  # the catalog knows no live provider: let the HF router decide
            return d.target
        return dataclasses.replace(d.target, subprovider=order[0], policy=None)

    def _note_context(self, members: list[Deployment]) -> None:
        if self.last_error is None:
            limits = ", ".join(f"{d.name}: {self.router.context_length(d)}" for d in members)
            self.last_error = ContextWindowExceededError(
                f"the prompt ({self.request.prompt_tokens} tokens) exceeds every context window in group "
                f"{self.group!r} ({limits}) and no context_window_fallbacks is configured for it",
                status_code=400,
                model=self.group,
            )

    def _note_capability(self, members: list[Deployment]) -> None:
        if self.last_error is None:
            needs = " and ".join(sorted(self.request.needs))
            names = ", ".join(d.name for d in members)
            self.last_error = BadRequestError(
                f"the request uses {needs}, which the catalog says no provider of group {self.group!r} supports "
                f"({names}); add a fallback group whose models support it",
                status_code=400,
                model=self.group,
            )

    def _give_up(self, why: str, *, rate_limited: bool = False) -> PolyrouteError:
        err = self.last_error
        if err is None:
            cls = RateLimitError if rate_limited else ServiceUnavailableError
            err = cls(f"router could not answer group {self.groups[0]!r}: {why}", model=self.groups[0])
        if self.cooldown_note and self.cooldown_note not in err.message:
            err.message += f" ({self.cooldown_note})"
        err.attempts = self.attempts
        return err

    # ---------------------------------------------------------------- outcomes
    def _record(self, choice: Choice, status: int | None, error: str | None, latency_ms: float) -> Attempt:
        record = Attempt(
            model=choice.deployment.model,
            provider=choice.target.label,
            api_base=choice.target.api_base,
            status_code=status,
            error=error,
            latency_ms=latency_ms,
            deployment=choice.deployment.name,
            waited_ms=choice.waited_ms,
        )
        self.attempts.append(record)
        return record

    def withdraw(self, choice: Choice, wait: float) -> None:
        """Undo a choice that was not sent: the shared rpm/tpm window refused it (nobody here asks that
        deployment for ``wait`` s), or the admission was cancelled (``wait`` 0)."""
        d = choice.deployment
        tokens = (self.request.prompt_tokens or 0) + (self.request.max_tokens or 0)
        with d.state.lock:
            d.state.in_flight -= 1
            d.state.probing = d.state.probing and not choice.probe
            d.uncount(choice.started, tokens)
            if wait > 0:
                d.state.full_until = max(d.state.full_until, now() + wait)
        self.tries_in_group -= 1

    def _release(self, choice: Choice) -> None:
        with choice.deployment.state.lock:
            choice.deployment.state.in_flight -= 1

    def release(self, choice: Choice) -> None:
        """The request no longer occupies the deployment (a stream ended)."""
        self._release(choice)

    def succeeded(
        self, choice: Choice, latency_ms: float, ttft_ms: float | None, *, keep_in_flight: bool = False
    ) -> Attempt:
        if not keep_in_flight:  # a stream stays in flight until it ends
            self._release(choice)
        state = choice.deployment.state
        with state.lock:
            had_trouble = bool(state.cooldown_until or state.failures)
            state.failures.clear()
            state.cooldown_until = 0.0
            state.probing = False
            state.latency_ewma_ms = _ewma(state.latency_ewma_ms, latency_ms)
            if ttft_ms is not None:
                state.ttft_ewma_ms = _ewma(state.ttft_ewma_ms, ttft_ms)
        if self.router.shared is not None:
            self.router.shared.succeeded(choice.deployment, latency_ms, ttft_ms, had_trouble=had_trouble)
        return self._record(choice, 200, None, latency_ms)

    def failed(self, choice: Choice, err: BaseException, latency_ms: float) -> bool:
        """Record a failure; True when the request should go on (retry or fall back)."""
        self._release(choice)
        status = getattr(err, "status_code", None)
        record = self._record(choice, status, type(err).__name__, latency_ms)
        record.charged_pico = getattr(err, "charged_pico", None)
        if not isinstance(err, PolyrouteError):  # a bug or a cancellation: never retried
            choice.deployment.state.probing = False
            return False
        self.last_error = err
        err.attempts = self.attempts
        deployment, t = choice.deployment, now()
        if isinstance(err, BudgetExceededError):
            deployment.state.probing = False
            return False
        if err.counts_toward_cooldown:  # the deployment itself is unwell (not a config or budget issue)
            self._count_failure(deployment, t)
        else:
            deployment.state.probing = False
        self.router.notify_failure(record, err)
        if isinstance(err, ContextWindowExceededError):
            self.excluded.add(id(deployment))
            return self._advance_group(self.router.context_window_fallbacks.get(self.group, [])) or self._has_more()
        if isinstance(err, ContentPolicyViolationError):
            fallbacks = self.router.content_policy_fallbacks.get(self.group, [])
            return bool(fallbacks) and self._advance_group(fallbacks)
        if err.is_deployment_specific:  # other deployments may have other keys or models: fall back, never retry
            self.excluded.add(id(deployment))
            self.tries_in_group -= 1  # moving on to another deployment is not a retry
            return self._has_more() or self._advance_group()
        if not err.is_retryable:
            return False
        cap = deployment.max_retries
        if cap is not None and sum(a.deployment == deployment.name for a in self.attempts) > cap:
            self.excluded.add(id(deployment))  # its own max_retries is spent: another deployment, or a fallback
            self.tries_in_group -= 1
            return self._has_more() or self._advance_group()
        retry_after = getattr(err, "retry_after", None)
        order = self.providers.get(id(deployment))
        if order and choice.target.subprovider == order[0] and len(order) > 1:
            if retry_after is not None:  # remembered for later requests: that provider goes last
                self.router.provider_not_before[(id(deployment), order[0])] = t + retry_after
            order.pop(0)  # :cheapest / :fastest: the next provider in the same order, at once
            self.tries_in_group -= 1
            return True
        if retry_after is not None:  # the server said when: every request honours it (every replica too)
            with deployment.state.lock:
                deployment.state.not_before = max(deployment.state.not_before, t + retry_after)
            if self.router.shared is not None:
                self.router.shared.not_before(deployment, t + retry_after)
        else:  # our own guess: it delays only this request's next try of this deployment
            self.backoff_until[id(deployment)] = t + self.router.backoff(self.tries_in_group, self.rng)
        return True

    def _has_more(self) -> bool:
        return any(id(d) not in self.excluded for d in self.router.groups[self.group])

    def _count_failure(self, deployment: Deployment, t: float) -> None:
        state = deployment.state
        if self.router.shared is not None:  # counted fleet-wide too: allowed_fails is per deployment, not replica
            self.router.shared.failed(deployment, probe=state.probing)
        with state.lock:
            if state.probing:  # the probe failed: straight back to cooldown
                state.probing = False
                state.cooldown_until = t + self.router.cooldown_seconds
                return
            state.failures.append(t)
            while state.failures and state.failures[0] < t - self.router.cooldown_window:
                state.failures.popleft()
            if len(state.failures) >= self.router.allowed_fails:
                state.failures.clear()
                state.cooldown_until = t + self.router.cooldown_seconds


def _ewma(previous: float | None, value: float, alpha: float = 0.3) -> float:
    return value if previous is None else alpha * value + (1 - alpha) * previous


def _admits(d: Deployment, t: float, tokens: int) -> bool:
    if d.state.not_before > t or d.state.full_until > t:
        return False
    room = d.headroom(t, tokens)
    return room is None or room >= 0


def _order(d: Deployment) -> float:
    return float("inf") if d.order is None else d.order


def bounded(kwargs: dict[str, Any], session: Session, choice: Choice, stream: bool = False) -> dict[str, Any]:
    """The call's arguments with the attempt's timeout: the call's own, the deployment's (``stream_timeout``
    for a stream), ending no later than the request's total deadline."""
    limits = [session.deadline - now()] if session.deadline is not None else []
    params = choice.deployment.params
    own = kwargs.get("timeout", params.get("timeout"))
    if stream and choice.deployment.stream_timeout is not None:
        own = choice.deployment.stream_timeout if "timeout" not in kwargs else own
    if isinstance(own, (int, float)) and not isinstance(own, bool):
        limits.append(own)
    if not limits:
        return kwargs
    return {**kwargs, "timeout": max(0.001, min(limits))}
