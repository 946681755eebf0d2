"""The proxy's YAML config: LiteLLM's shape (model_list / litellm_params / router_settings /
general_settings / ``os.environ/VAR``) plus polyroute's ``providers:`` and ``pricing:`` sections.

Every mistake names the file, the key path and what is expected. What polyroute does not honour — unknown keys,
an ``os.environ/VAR`` of a deployment whose VAR is unset (the entry gets ``unset_env``; the Router never uses
it), deployments of providers polyroute cannot serve — is :attr:`ProxyConfig.problems`: one startup warning, or
with ``strict=True`` one error listing the same problems (:meth:`ProxyConfig.report`). A model group left with no
deployment is in :attr:`ProxyConfig.unserved` (the proxy answers it 501, or 503 when misconfigured).
``environment_variables:`` is applied first. See :mod:`router.proxy.config_models` for ``model_list``.

Example::

    config = load_config("configs/proxy.yaml")
    config.router_kwargs, config.master_key
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from providers.config import apply_config, read_yaml_mapping
from providers.errors import InvalidRequestArgumentError
from providers.registry import Registry

from .config_models import ConfigError as ConfigError
from .config_models import Problem, read_model_list, report, without_unserved
from .config_models import resolve_env as _env

_ROUTER_SETTINGS = {
    "routing_strategy": "strategy",
    "strategy": "strategy",
    "num_retries": "num_retries",
    "fallbacks": "fallbacks",
    "context_window_fallbacks": "context_window_fallbacks",
    "content_policy_fallbacks": "content_policy_fallbacks",
    "allowed_fails": "allowed_fails",
    "cooldown_time": "cooldown_seconds",
    "cooldown_seconds": "cooldown_seconds",
    "cooldown_window": "cooldown_window",
    "timeout": "timeout",
    "request_timeout": "timeout",
    "on_limit": "on_limit",
    "model_group_alias": "model_group_alias",
}
# LiteLLM puts some router settings under litellm_settings; the same names are read from there.
_LITELLM_SETTINGS = {
    k: v
    for k, v in _ROUTER_SETTINGS.items()
    if k
    in (
        "num_retries",
        "request_timeout",
        "allowed_fails",
        "fallbacks",
        "context_window_fallbacks",
        "content_policy_fallbacks",
        "cooldown_time",
    )
}
# Accepted: they change nothing here (polyroute forwards OpenAI's parameters as they are; logging is --log-level).
_LITELLM_IGNORED = {"drop_params", "set_verbose", "json_logs"}
_GENERAL = {
    "master_key",
    "database_url",
    "redis_url",
    "max_request_bytes",
    "max_request_size_mb",
    "client_upstream_fields",
    "on_redis_unavailable",
    "redis_prefix",
    "redis_sync_interval",
    "request_body_timeout",
    "max_pending_body_bytes",
}
_GENERAL |= {"journal_dir", "lease_seconds", "sweep_interval"}  # crash recovery (router/proxy/flight.py)
_TOP = {"model_list", "router_settings", "general_settings", "litellm_settings", "providers", "pricing", "hf_providers"}
_TOP |= {"environment_variables"}
_FALLBACKS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")


@dataclass
class ProxyConfig:
    source: str
    model_list: list[dict[str, Any]]
    router_kwargs: dict[str, Any] = field(default_factory=dict)
    master_key: str | None = None
    database_url: str | None = None
    redis_url: str | None = None
    redis_prefix: str = "polyroute"
    redis_sync_interval: float = 0.1
    journal_dir: str | None = None  # the flight journal's folder (default: beside the SQLite file / cache dir)
    lease_seconds: float = 30.0  # a dead replica's reservations are resolved this long after its last heartbeat
    sweep_interval: float = 15.0  # seconds between recovery sweeps (dead journals, expired leases)
    on_redis_unavailable: str = "refuse"  # budgets when Redis is away: "refuse" new spend, or "local" counting
    max_request_bytes: int = 4_000_000
    request_body_timeout: float = 30.0  # seconds a request body may take to arrive (then 408, connection closed)
    max_pending_body_bytes: int = 64_000_000  # bytes all bodies still arriving may hold (then 503); >= 4 bodies
    client_upstream_fields: str = "reject"  # or "ignore": drop api_base/api_key/... sent by clients
    providers: dict[str, Any] = field(default_factory=dict)  # the providers:/hf_providers: sections
    pricing: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # what is not honoured (the startup warning)
    unserved: dict[str, tuple[int, str]] = field(default_factory=dict)  # groups answered 501/503, and why

    @property
    def unsupported(self) -> list[str]:
        """The path of every setting not honoured."""
        return [p.path for p in self.problems]

    def report(self) -> str:
        """The startup warning (the error with ``--strict``): every problem, grouped by section."""
        return report(self.source, self.problems) if self.problems else f"{self.source}: every setting is honoured"

    def __repr__(self) -> str:  # never print the master key
        key = "set" if self.master_key else None
        return f"ProxyConfig(source={self.source!r}, models={len(self.model_list)}, master_key={key})"


def redis_url_setting(value: Any, source: str, path: str) -> str | None:
    """A ``redis_url`` setting (``os.environ/NAME`` resolved), checked; the URL is never echoed back (it may
    hold a password)."""
    value = _env(value, source, path)
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
        kind = repr(value.split(":", 1)[0]) + " URL" if isinstance(value, str) else type(value).__name__
        raise ConfigError(f"{source}: {path}: expected redis://host:port/db (or rediss://, unix://), got a {kind}")
    return value


def redis_prefix_setting(value: Any, source: str, path: str) -> str:
    """A ``redis_prefix`` setting: one word, default ``polyroute``."""
    if value is None:
        return "polyroute"
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ConfigError(f"{source}: {path}: expected a non-empty word, got {value!r}")
    return value


def _mapping(data: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key}: expected a mapping, got {type(value).__name__}")
    return value


def _environment(data: dict[str, Any], source: str) -> None:
    """LiteLLM's ``environment_variables:`` section: each variable is set in this process (the file wins)."""
    variables = _mapping(data, "environment_variables", source)
    for name, value in variables.items():
        if not isinstance(name, str) or not name or "=" in name or isinstance(value, (dict, list)) or value is None:
            raise ConfigError(
                f"{source}: environment_variables.{name}: expected NAME: value (a string or number), got {value!r}"
            )
        os.environ[name] = str(value)


def parse_config(data: dict[str, Any], source: str = "<config>", *, strict: bool = False) -> ProxyConfig:
    """A :class:`ProxyConfig` from a parsed YAML mapping (``strict``: see :func:`load_config`)."""
    _environment(data, source)
    problems = [Problem(k) for k in data if k not in _TOP]
    registry = Registry()  # the providers this config can name: the built-in ones and its providers: section
    providers: dict[str, Any] = {k: data[k] for k in ("providers", "hf_providers") if k in data}
    if providers:
        try:
            apply_config(providers, registry, source)
        except InvalidRequestArgumentError as e:
            raise ConfigError(e.message) from None
    models = read_model_list(data.get("model_list"), source, registry)
    problems += models.problems
    router_kwargs: dict[str, Any] = {}
    for section, names in (("litellm_settings", _LITELLM_SETTINGS), ("router_settings", _ROUTER_SETTINGS)):
        for key, value in _mapping(data, section, source).items():
            if key in names:
                value = _env(value, source, f"{section}.{key}")
                if names[key] in _FALLBACKS:
                    value = without_unserved(value, models.unserved, f"{section}.{key}", problems)
                router_kwargs[names[key]] = value
            elif not (section == "litellm_settings" and key in _LITELLM_IGNORED):
                problems.append(Problem(f"{section}.{key}"))
    aliases = router_kwargs.get("model_group_alias")
    unserved = dict(models.unserved)
    if isinstance(aliases, dict):  # an alias of a group that answers 501 answers 501 too
        for alias, group in list(aliases.items()):
            name = group.get("model") if isinstance(group, dict) else group
            if isinstance(name, str) and name in unserved:
                status, why = unserved[name]
                unserved[alias] = (status, f"model {alias!r} is an alias of {name!r}: {why}")
                del aliases[alias]
    general = _mapping(data, "general_settings", source)
    problems += [Problem(f"general_settings.{k}") for k in general if k not in _GENERAL]
    general = {k: _env(v, source, f"general_settings.{k}") for k, v in general.items() if k in _GENERAL}
    config = ProxyConfig(
        source=source, model_list=models.entries, router_kwargs=router_kwargs, problems=problems, unserved=unserved
    )
    for name in ("master_key", "database_url", "redis_url"):
        value = general.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(
                f"{source}: general_settings.{name}: expected a non-empty string (quote it), got {type(value).__name__}"
            )
    config.master_key = general.get("master_key") or None
    config.database_url = general.get("database_url")
    config.redis_url = redis_url_setting(general.get("redis_url"), source, "general_settings.redis_url")
    mode = general.get("on_redis_unavailable", "refuse")
    if mode not in ("refuse", "local"):
        raise ConfigError(
            f"{source}: general_settings.on_redis_unavailable: expected 'refuse' (fail safe: no new "
            f"spend without the shared ledger) or 'local', got {mode!r}"
        )
    config.on_redis_unavailable = mode
    config.redis_prefix = redis_prefix_setting(general.get("redis_prefix"), source, "general_settings.redis_prefix")
    interval = general.get("redis_sync_interval", 0.1)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0.01 <= interval <= 10:
        raise ConfigError(
            f"{source}: general_settings.redis_sync_interval: expected seconds between 0.01 and 10, got {interval!r}"
        )
    config.redis_sync_interval = float(interval)
    journal = general.get("journal_dir")
    if journal is not None and (not isinstance(journal, str) or not journal):
        raise ConfigError(f"{source}: general_settings.journal_dir: expected a folder path, got {journal!r}")
    config.journal_dir = journal
    for name, low, high in (("lease_seconds", 1.0, 3600.0), ("sweep_interval", 0.1, 3600.0)):
        value = general.get(name, getattr(config, name))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ConfigError(
                f"{source}: general_settings.{name}: expected seconds between {low:g} and {high:g}, got {value!r}"
            )
        setattr(config, name, float(value))
    if config.lease_seconds < 5 * config.redis_sync_interval:
        raise ConfigError(
            f"{source}: general_settings.lease_seconds: must be at least 5 redis_sync_interval "
            f"({5 * config.redis_sync_interval:g} s): the lease is renewed at each sync"
        )
    for name, scale in (("max_request_size_mb", 1_000_000), ("max_request_bytes", 1)):
        if name in general:
            value = general[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{source}: general_settings.{name}: expected a positive number, got {value!r}")
            config.max_request_bytes = int(value * scale)
    config.max_pending_body_bytes = max(config.max_pending_body_bytes, 4 * config.max_request_bytes)
    timeout = general.get("request_body_timeout", 30.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0.01 <= timeout <= 3600:
        raise ConfigError(
            f"{source}: general_settings.request_body_timeout: expected seconds between 0.01 and 3600, got {timeout!r}"
        )
    config.request_body_timeout = float(timeout)
    if "max_pending_body_bytes" in general:
        pending = general["max_pending_body_bytes"]
        if isinstance(pending, bool) or not isinstance(pending, int) or pending < config.max_request_bytes:
            raise ConfigError(
                f"{source}: general_settings.max_pending_body_bytes: expected a whole number of bytes of at least "
                f"max_request_bytes ({config.max_request_bytes}), got {pending!r}"
            )
        config.max_pending_body_bytes = pending
    fields = general.get("client_upstream_fields", "reject")
    if fields not in ("reject", "ignore"):
        raise ConfigError(
            f"{source}: general_settings.client_upstream_fields: expected 'reject' or 'ignore', got {fields!r}"
        )
    config.client_upstream_fields = fields
    config.providers = providers
    pricing = data.get("pricing", [])
    if not isinstance(pricing, list):
        raise ConfigError(f"{source}: pricing: expected a list of {{model, input_per_million, ...}} entries")
    config.pricing = models.pricing + pricing  # the pricing: section wins over a deployment's costs
    if not config.model_list:
        raise ConfigError(f"{config.report()}\n{source}: model_list: no deployment polyroute can serve is left")
    if strict and problems:
        raise ConfigError(f"{config.report()}\n--strict: remove or fix these settings, or run without --strict")
    return config


def load_config(path: str | Path, *, strict: bool = False) -> ProxyConfig:
    """Read and check a proxy config file. Settings not honoured (unknown keys, unset ``os.environ/``
    variables of a deployment, deployments of providers polyroute cannot serve) are :attr:`ProxyConfig.problems`:
    a startup warning, or with ``strict`` one error listing the same problems."""
    source = str(path)
    try:
        data = read_yaml_mapping(path, "a mapping with a 'model_list'")
    except InvalidRequestArgumentError as e:
        raise ConfigError(e.message) from None
    return parse_config(data, source, strict=strict)
