"""The proxy config's ``model_list``, read as LiteLLM writes it, and the report of what is not honoured.

Each entry's ``litellm_params`` (or ``params``) keeps the settings polyroute honours; any other key, an
``os.environ/VAR`` whose VAR is unset, and a deployment whose provider polyroute cannot serve
(:mod:`providers.litellm_names`) become a :class:`Problem` with the path as written in the file. A model
group left without a deployment is *unserved*: the proxy answers it with 501 naming the provider.

Example::

    models = read_model_list(data["model_list"], "proxy.yaml", registry)
    models.entries, models.problems, models.unserved
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from providers.errors import InvalidRequestArgumentError
from providers.litellm_names import litellm_model, unservable_reason
from providers.registry import Registry, UnknownSubproviderError

from ..routing.deployment import CALL_PARAMS, ROUTING_PARAMS

# litellm_params keys honoured besides the Router's own (``custom_llm_provider`` is read here; the costs
# become price overrides; ``headers`` is LiteLLM's other name for ``extra_headers``).
_READ_HERE = frozenset({"custom_llm_provider", "input_cost_per_token", "output_cost_per_token", "headers"})
PARAMS = CALL_PARAMS | ROUTING_PARAMS | _READ_HERE
_MODEL_ENTRY = frozenset({"model_name", "params", "litellm_params", "model_info"})
_MODEL_INFO = frozenset({"id", "mode", "description"})  # descriptive: kept, nothing to honour
SECTIONS: tuple[str, ...] = ("top level", "environment_variables", "model_list", "router_settings")
SECTIONS += ("litellm_settings", "general_settings")


class ConfigError(InvalidRequestArgumentError):
    """The proxy config is wrong: the message names the file, the key path and what is expected."""


@dataclass(frozen=True)
class Problem:
    """A setting the proxy does not honour: its path as written in the file, and what happens instead."""

    path: str
    why: str = "not supported; ignored"

    @property
    def section(self) -> str:
        head = self.path.split(".", 1)[0].split("[", 1)[0]
        return head if head in SECTIONS else "top level"


@dataclass
class ModelList:
    entries: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    unserved: dict[str, tuple[int, str]] = field(default_factory=dict)  # group -> (501 or 503, why)
    pricing: list[dict[str, Any]] = field(default_factory=list)  # per-deployment costs as price overrides


_UNSET = object()  # an os.environ/ reference to an unset variable, left out of the resolved value


def resolve_env(value: Any, source: str, path: str, unset: list[str] | None = None) -> Any:
    """Replace ``os.environ/NAME`` strings, recursively. An unset NAME is an error, or, given ``unset``, is
    appended to it and left out of the result."""
    if isinstance(value, str) and value.startswith("os.environ/"):
        name = value[len("os.environ/") :]
        resolved = os.environ.get(name)
        if resolved is None:
            if unset is not None:
                unset.append(name)
                return _UNSET
            raise ConfigError(f"{source}: {path}: environment variable {name} is not set (referenced as {value!r})")
        return resolved
    if isinstance(value, dict):
        out = {k: resolve_env(v, source, f"{path}.{k}", unset) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _UNSET}
    if isinstance(value, list):
        items = [resolve_env(v, source, f"{path}[{i}]", unset) for i, v in enumerate(value)]
        return [v for v in items if v is not _UNSET]
    return value


def _params(entry: dict[str, Any], where: str, source: str, problems: list[Problem]) -> tuple[str, dict[str, Any]]:
    """The entry's params key as written and its honoured settings, ``os.environ/`` resolved."""
    key = "litellm_params" if "litellm_params" in entry else "params"
    params = entry.get(key)
    if not isinstance(params, dict) or "model" not in params:
        raise ConfigError(f"{source}: {where}.{key}: expected a mapping with a 'model' string, got {params!r}")
    kept: dict[str, Any] = {}
    for name, value in params.items():
        path = f"{where}.{key}.{name}"
        if name not in PARAMS:
            problems.append(Problem(path))
            continue
        unset: list[str] = []
        resolved = resolve_env(value, source, path, None if name == "model" else unset)
        problems.extend(
            Problem(path, f"environment variable {var} is not set: the deployment is not used") for var in unset
        )
        if resolved is not _UNSET:
            kept[name] = resolved
        if unset:
            kept.setdefault("unset_env", []).extend(unset)
    if not isinstance(kept["model"], str) or not kept["model"]:
        raise ConfigError(f"{source}: {where}.{key}.model: expected a model string, got {kept['model']!r}")
    return key, kept


def read_model_list(model_list: Any, source: str, registry: Registry) -> ModelList:
    """The servable entries of a LiteLLM-style ``model_list``, with every problem and the unserved groups."""
    if not isinstance(model_list, list) or not model_list:
        raise ConfigError(f"{source}: model_list: expected a non-empty list of {{model_name, litellm_params}} entries")
    out = ModelList()
    reasons: dict[str, list[str]] = {}  # group -> providers polyroute cannot serve (501)
    broken: dict[str, list[str]] = {}  # group -> deployments configured wrong (503)
    for i, entry in enumerate(model_list):
        where = f"model_list[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: {where}: expected a mapping with model_name and litellm_params")
        entry = _limits_inside(entry)
        found = [Problem(f"{where}.{k}") for k in entry if k not in _MODEL_ENTRY]
        info = entry.get("model_info")
        if isinstance(info, dict):
            found += [Problem(f"{where}.model_info.{k}") for k in info if k not in _MODEL_INFO]
        group = entry.get("model_name")
        if not isinstance(group, str) or not group:
            raise ConfigError(f"{source}: {where}.model_name: expected a non-empty string, got {group!r}")
        key, params = _params(entry, where, source, found)
        written = params["model"]
        model = params["model"] = litellm_model(written, params.pop("custom_llm_provider", None))
        prefix = model.partition("/")[0]
        reason = unservable_reason(model)
        if reason is None and model != "*" and not registry.knows(prefix):
            reason = f"unknown provider {prefix!r} (add an OpenAI-compatible one under providers:)"
        if reason is not None:  # one line for the deployment, not one per setting it would have needed
            out.problems.append(Problem(f"{where}.{key}.model", f"{written}: {reason}; the deployment is not used"))
            reasons.setdefault(group, []).append(f"{prefix} ({reason})")
            continue
        out.problems += found
        unset = params.pop("unset_env", None)
        wrong = _unresolvable(model, params, registry)
        if wrong is not None:  # e.g. azure/ whose api_base is unset: kept out, the group answers 503
            out.problems.append(Problem(f"{where}.{key}.model", f"{wrong}; the deployment is not used"))
            why = wrong + (f" (environment variable(s) {', '.join(unset)} not set)" if unset else "")
            broken.setdefault(group, []).append(why)
            continue
        if "headers" in params:
            params["extra_headers"] = {**params.pop("headers"), **params.get("extra_headers", {})}
        costs: dict[str, Any] = {
            k: params.pop(k) for k in ("input_cost_per_token", "output_cost_per_token") if k in params
        }
        if costs and "*" not in model:
            out.pricing.append({"model": model, **costs})
        kept = {"model_name": group, key: params}
        kept |= {"model_info": info} if info is not None else {}
        out.entries.append(kept | ({"unset_env": list(dict.fromkeys(unset))} if unset else {}))
    served = {e["model_name"] for e in out.entries}
    for group in [g for g in dict.fromkeys([*reasons, *broken]) if g not in served]:  # in file order
        if group in reasons:
            why = "; ".join(dict.fromkeys(reasons[group] + broken.get(group, [])))
            out.unserved[group] = (501, f"model {group!r} has no deployment polyroute can serve: {why}")
        else:
            why = "; ".join(dict.fromkeys(broken[group]))
            out.unserved[group] = (503, f"model {group!r} is misconfigured on this server ({why}); ask its operator")
    return out


def _limits_inside(entry: dict[str, Any]) -> dict[str, Any]:
    """LiteLLM also reads ``rpm``/``tpm`` written beside ``litellm_params``: moved inside (the params' own win)."""
    outside = {k: entry[k] for k in ("rpm", "tpm") if k in entry}
    key = "litellm_params" if "litellm_params" in entry else "params"
    params = entry.get(key)
    if not outside or not isinstance(params, dict):
        return entry
    rest = {k: v for k, v in entry.items() if k not in outside}
    return {**rest, key: {**outside, **params}}


def _unresolvable(model: str, params: dict[str, Any], registry: Registry) -> str | None:
    """Why the Router could not use this deployment's model string, or None (wildcards are checked by the Router;
    an HF provider name the registry does not know yet may be learnt from the HF catalog)."""
    if "*" in model:
        return None
    api_base = params.get("api_base") or params.get("base_url")
    try:
        registry.resolve(model, api_base if isinstance(api_base, str) else None)
    except UnknownSubproviderError:
        return None
    except InvalidRequestArgumentError as e:
        return e.message
    return None


def without_unserved(value: Any, unserved: dict[str, Any], path: str, problems: list[Problem]) -> Any:
    """A fallbacks setting (``[{"a": ["b"]}]``) without the groups that cannot answer (each one a problem)."""
    if not unserved or not isinstance(value, list):
        return value
    kept = []
    for item in value:
        if not isinstance(item, dict):
            return value  # malformed: the Router names the mistake
        entry: dict[str, Any] = {}
        for group, targets in item.items():
            names = [targets] if isinstance(targets, str) else targets
            if not isinstance(names, list):
                return value
            dropped = [n for n in (group, *names) if n in unserved]
            problems += [Problem(path, f"{n!r} has no deployment that can serve; left out") for n in dropped]
            if group not in unserved and (rest := [n for n in names if n not in unserved]):
                entry[group] = rest
        if entry:
            kept.append(entry)
    return kept


def report(source: str, problems: list[Problem]) -> str:
    """Every problem, grouped by section, one ``file: path: what happens`` line each."""
    lines = [f"{source}: unsupported settings, not honoured ({len(problems)}):"]
    for section in SECTIONS:
        mine = [p for p in problems if p.section == section]
        if mine:
            lines.append(f"  {section}:")
            lines += [f"    {source}: {p.path}: {p.why}" for p in mine]
    return "\n".join(lines)
