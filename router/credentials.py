"""Which deployments cannot authenticate to their upstream, and what the operator must set.

A deployment lacks its credentials when its params carry no ``api_key``, its provider needs one
(``spec.key_required``) and none of the provider's ``key_env`` variables is set, or when the config named an
``os.environ/VAR`` that was unset when it was loaded. The Router skips such deployments while others of the
group can serve (:mod:`router.routing.session`); the proxy and batch jobs warn once at startup
(:func:`missing_warning`); the proxy answers a request only they could serve with a 503 that says the
server is misconfigured (:mod:`router.proxy.errors`), a batch row fails with the variable to set.
Only variable names are ever shown, never a value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from providers.errors import MissingCredentialsError
from providers.spec import Target

from .pipeline import api_key_for

if TYPE_CHECKING:
    from .routing.deployment import Deployment


def missing_key_env(target: Target, params: Mapping[str, Any]) -> tuple[str, ...]:
    """The environment variables one of which would give this deployment its key; () when it has a key,
    needs none, or sends no environment key to its host (an ``api_base`` elsewhere)."""
    try:
        api_key_for(target, params.get("api_key"), params.get("api_base"))
    except MissingCredentialsError:
        return target.spec.key_env or ("params.api_key",)
    return ()


def describe_missing(deployments: Iterable[Deployment]) -> list[str]:
    """One line per deployment without credentials: its name (model_name[i]:model string) and what to set."""
    lines = []
    for d in deployments:
        if d.unset_env:
            names = ", ".join(d.unset_env)
            lines.append(f"{d.name}: the config's os.environ/ variable(s) {names} are not set; set them")
        elif d.missing():
            lines.append(f"{d.name}: no API key; set {' or '.join(d.missing())}")
    return lines


def missing_warning(groups: Mapping[str, Iterable[Deployment]], consequence: str) -> str | None:
    """The one startup warning naming every deployment of ``groups`` without credentials and what to set
    (None when all have theirs); ``consequence`` says what the proxy or the batch job does about it."""
    missing = describe_missing(d for group in groups.values() for d in group)
    if not missing:
        return None
    return (
        f"{len(missing)} deployment(s) have no upstream credentials; {consequence}. "
        f"Set the variable(s): {'; '.join(missing)}"
    )


def unconfigured_error(deployments: Iterable[Deployment], group: str) -> MissingCredentialsError:
    """The error of a request that only deployments without credentials could serve (names, no values)."""
    lines = "; ".join(describe_missing(deployments))
    return MissingCredentialsError(
        f"no deployment of model group {group!r} has its upstream credentials ({lines})", model=group
    )
