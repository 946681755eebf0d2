"""A batch job's YAML config: the candidates each row may go to, and how to run the job.

Candidates are model strings (each becomes a one-deployment router group named after it) or groups
of the proxy-style ``model_list``. ``model_list``, ``router_settings``, ``providers`` and ``pricing``
mean what they mean in the proxy config.

Example (``configs/batch.yaml``)::

    candidates:
      - model: huggingface/Qwen/Qwen3-8B:cheapest
      - name: llama
        model: deepinfra/meta-llama/Meta-Llama-3.1-8B-Instruct
        params: {temperature: 0}
      - group: chat                  # a model_name of model_list
        fallback_only: true          # only used when the others fail
    defaults: {max_tokens: 512}      # body params for rows that do not set them
    expected_output_tokens: 200      # the dry run's typical answer length
    concurrency: 32
    budget_usd: 5
    redis_url: redis://127.0.0.1:6379/0   # --engine ray: the shared budget ledger (or --redis-url)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from providers.config import read_yaml_mapping
from providers.errors import InvalidRequestArgumentError

from ..proxy.config import ConfigError, ProxyConfig, parse_config, redis_prefix_setting, redis_url_setting
from .rows import ENDPOINTS

_TOP = {
    "candidates",
    "model_list",
    "router_settings",
    "litellm_settings",
    "providers",
    "hf_providers",
    "pricing",
    "defaults",
    "expected_output_tokens",
    "concurrency",
    "budget_usd",
    "allow_unpriced",
    "redis_url",
    "redis_prefix",
}
_CANDIDATE = {"name", "model", "group", "params", "fallback_only", "endpoint", "expected_output_tokens"}
_ENDPOINTS = {"chat": "chat", "embeddings": "embeddings", **ENDPOINTS}


@dataclass
class Candidate:
    """Where a row may go: a router group (one deployment for a plain model string)."""

    name: str
    group: str
    endpoint: str = "chat"  # "chat" | "embeddings"
    fallback_only: bool = False
    expected_output_tokens: int | None = None
    model: str | None = None  # set when the candidate is a plain model string


@dataclass
class BatchConfig:
    source: str
    candidates: list[Candidate]
    proxy: ProxyConfig  # model_list (candidates' groups included), router settings, providers, pricing
    defaults: dict[str, Any] = field(default_factory=dict)
    expected_output_tokens: int | None = None
    concurrency: int = 32
    budget_usd: float | None = None
    allow_unpriced: bool = False
    redis_url: str | None = field(default=None, repr=False)  # --engine ray's shared ledger (may hold a password)
    redis_prefix: str = "polyroute"

    def candidate(self, name: str) -> Candidate | None:
        for c in self.candidates:
            if name in (c.name, c.model):
                return c
        return None


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    return value


def parse_batch_config(data: dict[str, Any], source: str = "<config>") -> BatchConfig:
    """A :class:`BatchConfig` from a parsed YAML mapping; every mistake names its key path."""
    unknown = [k for k in data if k not in _TOP]
    if unknown:
        raise ConfigError(f"{source}: unknown keys {', '.join(map(repr, unknown))}; expected some of {sorted(_TOP)}")
    raw = data.get("candidates")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{source}: candidates: expected a non-empty list of {{model: ...}} or {{group: ...}}")
    model_list = list(data.get("model_list") or [])
    groups = {e.get("model_name") for e in model_list if isinstance(e, dict)}
    candidates: list[Candidate] = []
    for i, entry in enumerate(raw):
        where = f"{source}: candidates[{i}]"
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a model string or a mapping with 'model' or 'group'")
        extra = [k for k in entry if k not in _CANDIDATE]
        if extra:
            raise ConfigError(
                f"{where}: unknown keys {', '.join(map(repr, extra))}; expected some of {sorted(_CANDIDATE)}"
            )
        model, group = entry.get("model"), entry.get("group")
        if (model is None) == (group is None):
            raise ConfigError(f"{where}: give exactly one of 'model' (a model string) or 'group' (a model_list name)")
        name = entry.get("name", model if model is not None else group)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name: expected a non-empty string")
        if any(c.name == name for c in candidates):
            raise ConfigError(f"{where}.name: {name!r} is used twice; give the candidates distinct names")
        endpoint = _ENDPOINTS.get(entry.get("endpoint", "chat"))
        if endpoint is None:
            raise ConfigError(f"{where}.endpoint: expected 'chat' or 'embeddings', got {entry.get('endpoint')!r}")
        params = entry.get("params") or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{where}.params: expected a mapping of call parameters")
        if group is not None:
            if not isinstance(group, str) or group not in groups:
                raise ConfigError(
                    f"{where}.group: {group!r} is not a model_name of model_list "
                    f"(known: {', '.join(sorted(g for g in groups if g)) or 'none'})"
                )
            if params:
                raise ConfigError(f"{where}.params: set params on the model_list entries of group {group!r}")
        else:
            if not isinstance(model, str) or not model:
                raise ConfigError(f"{where}.model: expected a model string such as huggingface/Qwen/Qwen3-8B")
            if name in groups:
                raise ConfigError(f"{where}.name: {name!r} is also a model_name of model_list; rename one of them")
            model_list.append({"model_name": name, "params": {**params, "model": model}})
            group = name
        expected = entry.get("expected_output_tokens")
        candidates.append(
            Candidate(
                name=name,
                group=group,
                endpoint=endpoint,
                fallback_only=_flag(entry.get("fallback_only", False), f"{where}.fallback_only"),
                expected_output_tokens=None
                if expected is None
                else _positive_int(expected, f"{where}.expected_output_tokens"),
                model=model,
            )
        )
    if all(c.fallback_only for c in candidates):
        raise ConfigError(f"{source}: candidates: every candidate is fallback_only; at least one must take rows")
    proxy_data = {
        k: data[k] for k in ("router_settings", "litellm_settings", "providers", "hf_providers", "pricing") if k in data
    } | {"model_list": model_list}
    proxy = parse_config(proxy_data, source)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{source}: defaults: expected a mapping of body params, e.g. {{max_tokens: 512}}")
    for key in ("max_tokens", "max_completion_tokens", "n"):
        if key in defaults:
            _positive_int(defaults[key], f"{source}: defaults.{key}")
    config = BatchConfig(source, candidates, proxy, defaults=defaults)
    if data.get("expected_output_tokens") is not None:
        config.expected_output_tokens = _positive_int(
            data["expected_output_tokens"], f"{source}: expected_output_tokens"
        )
    if data.get("concurrency") is not None:
        config.concurrency = _positive_int(data["concurrency"], f"{source}: concurrency")
    if data.get("budget_usd") is not None:
        budget = data["budget_usd"]
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget < 0:
            raise ConfigError(f"{source}: budget_usd: expected a non-negative number of USD, got {budget!r}")
        config.budget_usd = float(budget)
    config.allow_unpriced = _flag(data.get("allow_unpriced", False), f"{source}: allow_unpriced")
    config.redis_url = redis_url_setting(data.get("redis_url"), source, "redis_url")
    config.redis_prefix = redis_prefix_setting(data.get("redis_prefix"), source, "redis_prefix")
    return config


def load_batch_config(path: str | Path) -> BatchConfig:
    """Read and check a batch config file."""
    try:
        data = read_yaml_mapping(path, "a mapping with 'candidates'")
    except InvalidRequestArgumentError as e:
        raise ConfigError(e.message) from None
    return parse_batch_config(data, str(path))


def single_model_config(model: str) -> BatchConfig:
    """The config of ``--model M`` without a file: one candidate."""
    return parse_batch_config({"candidates": [{"model": model}]}, "--model")
