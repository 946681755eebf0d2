"""Providers declared in configuration (YAML or a dict) instead of Python.

Example ``configs/providers.yaml``::

    providers:
      - name: acme
        base_url: https://api.acme.ai/v1
        key_env: ACME_API_KEY
    hf_providers: [brand-new-hf-provider]

Errors name the source, the key path and what is expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import InvalidRequestArgumentError
from .registry import Registry, default_registry
from .spec import ProviderSpec

_FIELDS = {"name", "base_url", "key_env", "base_url_env", "aliases", "key_required", "chat_path", "embeddings_path"}


def _fail(source: str, path: str, expected: str, got: Any) -> InvalidRequestArgumentError:
    return InvalidRequestArgumentError(f"{source}: {path}: expected {expected}, got {got!r}")


def _str_list(value: Any, source: str, path: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise _fail(source, path, "a string or a list of strings", value)


def specs_from_config(data: Mapping[str, Any], source: str = "<config>") -> list[ProviderSpec]:
    """The provider specs under ``providers:`` of a parsed config."""
    entries = data.get("providers", [])
    if not isinstance(entries, list):
        raise _fail(source, "providers", "a list of {name, base_url, key_env} entries", entries)
    specs = []
    for i, entry in enumerate(entries):
        where = f"providers[{i}]"
        if not isinstance(entry, dict):
            raise _fail(source, where, "a mapping with name, base_url, key_env", entry)
        unknown = sorted(set(entry) - _FIELDS)
        if unknown:
            raise _fail(source, f"{where}.{unknown[0]}", f"one of {', '.join(sorted(_FIELDS))}", unknown[0])
        for required in ("name", "base_url"):
            if not isinstance(entry.get(required), str) or not entry[required]:
                raise _fail(source, f"{where}.{required}", "a non-empty string", entry.get(required))
        key_required = entry.get("key_required", True)
        if not isinstance(key_required, bool):
            raise _fail(source, f"{where}.key_required", "true or false", key_required)
        specs.append(
            ProviderSpec(
                name=entry["name"],
                base_url=entry["base_url"],
                key_env=_str_list(entry.get("key_env", []), source, f"{where}.key_env"),
                base_url_env=entry.get("base_url_env"),
                aliases=_str_list(entry.get("aliases", []), source, f"{where}.aliases"),
                key_required=key_required,
                chat_path=entry.get("chat_path", "/chat/completions"),
                embeddings_path=entry.get("embeddings_path", "/embeddings"),
            )
        )
    return specs


def apply_config(data: Mapping[str, Any], registry: Registry | None = None, source: str = "<config>") -> Registry:
    """Register every provider (and extra HF provider name) a parsed config declares."""
    registry = registry or default_registry()
    specs = specs_from_config(data, source)
    hf_names = _str_list(data.get("hf_providers", []), source, "hf_providers")
    for spec in specs:
        try:
            registry.add(spec)
        except InvalidRequestArgumentError as e:
            raise InvalidRequestArgumentError(f"{source}: {e.message}") from None
    for name in hf_names:
        registry.add_hf_provider(name)
    return registry


def read_yaml_mapping(path: str | Path, expected: str) -> dict[str, Any]:
    """A YAML file's top-level mapping; every failure names the file and what was expected."""
    import yaml

    source = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as e:
        raise InvalidRequestArgumentError(f"{source}: cannot read the file: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise InvalidRequestArgumentError(f"{source}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise _fail(source, "(top level)", expected, type(data).__name__)
    return data


def load_providers_file(path: str | Path, registry: Registry | None = None) -> Registry:
    """Read a YAML file and register its ``providers:`` (and ``hf_providers:``)."""
    source = str(path)
    data = read_yaml_mapping(path, "a mapping with a 'providers' list")
    return apply_config(data, registry, source)
