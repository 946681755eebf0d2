"""The names a Router answers besides its model groups: aliases and wildcard groups (LiteLLM's semantics).

- ``model_group_alias={"gpt-4": "chat"}`` (or ``{"gpt-4": {"model": "chat", "hidden": True}}``): a request for
  ``gpt-4`` is served by the group ``chat``; a hidden alias is not listed by ``/v1/models``.
- A ``model_name`` with ``*`` is a pattern: ``"*"``, ``"openai/*"``, ``"groq/*"``. A request matching it gets a
  group of its own, made on first use from the pattern's deployments with each ``*`` of their model string
  replaced by what the request's ``*`` matched (a model string that is just ``*`` takes the whole requested
  name, read as LiteLLM reads a model string). The most specific pattern (longest literal text) wins;
  exact groups and aliases win over patterns. At most :data:`MADE_GROUPS` such groups are kept (oldest
  dropped first).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from providers.errors import InvalidRequestArgumentError
from providers.litellm_names import litellm_model

from .deployment import Deployment

MADE_GROUPS = 1024


def _params_key(entry: dict[str, Any]) -> str:
    return "params" if "params" in entry else "litellm_params"


def _substituted(entry: dict[str, Any], name: str, stars: tuple[str, ...]) -> dict[str, Any]:
    """The entry for the requested ``name``, its model string's ``*`` filled in."""
    key = _params_key(entry)
    params = dict(entry[key])
    model = params["model"]
    if model == "*":
        params["model"] = litellm_model(name)
    else:
        parts = model.split("*")
        filled = [parts[0]]
        for i, rest in enumerate(parts[1:]):
            filled += [stars[min(i, len(stars) - 1)] if stars else "", rest]
        params["model"] = "".join(filled)
    return {**entry, "model_name": name, key: params}


class Pattern:
    """One wildcard ``model_name`` and its deployments' entries."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.regex = re.compile("(.*?)".join(re.escape(part) for part in name.split("*")) + "$")
        self.entries: list[dict[str, Any]] = []
        self.specificity = len(name.replace("*", ""))

    def match(self, requested: str) -> tuple[str, ...] | None:
        found = self.regex.match(requested)
        return None if found is None else tuple(found.groups())


class GroupNames:
    """Aliases and wildcard patterns of a Router (see the module doc)."""

    def __init__(self, patterns: list[Pattern], aliases: Any, groups: dict[str, list[Deployment]]) -> None:
        self.patterns = sorted(patterns, key=lambda p: -p.specificity)
        self.aliases: dict[str, str] = {}
        self.hidden: set[str] = set()
        self.made: list[str] = []  # groups made for requested names, oldest first
        self.pinned: set[str] = set()  # groups made for names fallbacks give: never dropped
        self.lock = threading.Lock()
        for alias, target in (_alias_map(aliases)).items():
            name, hidden = target
            if name not in groups and not any(p.match(name) is not None for p in self.patterns):
                known = ", ".join(sorted([*groups, *(p.name for p in self.patterns)]))
                raise InvalidRequestArgumentError(
                    f"model_group_alias: {alias!r} -> {name!r}: {name!r} is not a model_name (known: {known})"
                )
            self.aliases[alias] = name
            if hidden:
                self.hidden.add(alias)

    def listed(self, groups: dict[str, list[Deployment]]) -> list[str]:
        """The names ``/v1/models`` shows: the groups (wildcards' made groups aside) and the visible aliases."""
        made = set(self.made) | self.pinned
        shown = [g for g in groups if g not in made] + [a for a in self.aliases if a not in self.hidden]
        return sorted(set(shown))

    def group(
        self,
        requested: str,
        groups: dict[str, list[Deployment]],
        parse: Callable[[list[dict[str, Any]]], dict[str, list[Deployment]]],
        forget: Callable[[str], None],
        pin: bool = False,
    ) -> str | None:
        """The group serving ``requested`` (made from a wildcard pattern if need be, kept for good when
        ``pin``: a fallback's), or None."""
        if requested in groups:
            return requested
        name = self.aliases.get(requested, requested)
        if name in groups:
            return name
        for pattern in self.patterns:
            stars = pattern.match(name)
            if stars is None:
                continue
            try:
                made = parse([_substituted(e, name, stars) for e in pattern.entries])
            except InvalidRequestArgumentError as e:
                detail = re.sub(r"^model_list\[\d+\]\.\w+\.\w+: ", "", e.message)  # the entry is made, not written
                why = f"model {name!r} matches the wildcard group {pattern.name!r}, but: {detail}"
                raise InvalidRequestArgumentError(why) from None
            with self.lock:
                if name not in groups:
                    groups[name] = made[name]
                    if pin:
                        self.pinned.add(name)
                    else:
                        self.made.append(name)
                    while len(self.made) > MADE_GROUPS:
                        oldest = self.made.pop(0)
                        groups.pop(oldest, None)
                        forget(oldest)
            return name
        return None


def _alias_map(aliases: Any) -> dict[str, tuple[str, bool]]:
    """``{alias: (group, hidden)}`` from LiteLLM's ``model_group_alias``."""
    if aliases is None:
        return {}
    if not isinstance(aliases, dict):
        raise InvalidRequestArgumentError(
            f"model_group_alias must map alias names to model_names, e.g. {{'gpt-4': 'chat'}}, got {aliases!r}"
        )
    out = {}
    for alias, target in aliases.items():
        if isinstance(target, dict):
            name, hidden = target.get("model"), target.get("hidden", False)
        else:
            name, hidden = target, False
        if not isinstance(alias, str) or not isinstance(name, str) or not isinstance(hidden, bool):
            raise InvalidRequestArgumentError(
                f"model_group_alias: {alias!r}: expected a model_name or {{model: <model_name>, hidden: true}}, "
                f"got {target!r}"
            )
        out[alias] = (name, hidden)
    return out


def split_patterns(model_list: Any) -> tuple[list[Any], list[Pattern]]:
    """The entries of exact groups, and the wildcard patterns (with their entries) of a model_list."""
    if not isinstance(model_list, list):
        return model_list, []
    plain: list[Any] = []
    patterns: dict[str, Pattern] = {}
    for entry in model_list:
        name = entry.get("model_name") if isinstance(entry, dict) else None
        if isinstance(name, str) and "*" in name:
            patterns.setdefault(name, Pattern(name)).entries.append(entry)
        else:
            plain.append(entry)
    return plain, list(patterns.values())


def placeholders(patterns: list[Pattern]) -> list[dict[str, Any]]:
    """Each pattern's entries for a sample name: parsed at start, so a wrong entry fails then, not per request."""
    out = []
    for pattern in patterns:
        sample = pattern.name.replace("*", "x")
        stars = pattern.match(sample) or ()
        out += [_substituted(e, sample, stars) if _ok(e) else e for e in pattern.entries]
    return out


def _ok(entry: Any) -> bool:
    params = entry.get(_params_key(entry)) if isinstance(entry, dict) else None
    return isinstance(params, dict) and isinstance(params.get("model"), str)


def renamed_fallbacks(value: Any, group: Callable[[str], str | None]) -> Any:
    """A fallbacks setting (``[{"a": ["b"]}]``) with each name that is an alias or matches a wildcard replaced by
    its group; other names (and malformed settings) are left for :func:`fallback_map` to judge."""
    if not isinstance(value, (list, dict)):
        return value
    items = value if isinstance(value, list) else [value]

    def one(name: Any) -> Any:
        return (group(name) or name) if isinstance(name, str) else name

    out: list[Any] = []
    for item in items:
        if not isinstance(item, dict):
            return value
        renamed: dict[Any, Any] = {}
        for key, targets in item.items():
            names = [targets] if isinstance(targets, str) else targets
            renamed[one(key)] = [one(t) for t in names] if isinstance(names, list) else targets
        out.append(renamed)
    return out
