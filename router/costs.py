"""LiteLLM's cost helpers by name: ``completion_cost`` and ``cost_per_token``.

Both read the providers' own catalogs (via :class:`router.pricing.Catalog`) and raise
:class:`UnpricedCallError` with the reason when no price exists — never a silent 0.

Example::

    r = completion(model="huggingface/together/deepseek-ai/DeepSeek-R1", messages=msgs)
    completion_cost(r)                                   # same as r.meta.cost_usd
    cost_per_token("deepinfra/openai/gpt-oss-120b", prompt_tokens=1000, completion_tokens=200)
"""

from __future__ import annotations

from typing import Any

from .errors import UnpricedCallError
from .pricing.catalog import Catalog, default_catalog
from .pricing.cost import cost_of
from .pricing.prices import pico_to_usd
from .types import WithMeta, meta_of


def completion_cost(completion_response: Any, model: str | None = None, *, catalog: Catalog | None = None) -> float:
    """USD cost of a result: its ``meta.cost_usd``, or priced now from ``model`` and its usage."""
    meta = meta_of(completion_response) if isinstance(completion_response, WithMeta) else None
    if meta is not None and model is None:
        if meta.cost_usd is None:
            raise UnpricedCallError(f"no cost for this result: {meta.unpriced_reason}")
        return float(meta.cost_usd)
    if model is None:
        raise UnpricedCallError("this result did not come from a polyroute call; pass model='provider/...' to price it")
    usage = getattr(completion_response, "usage", None)
    if usage is None and isinstance(completion_response, dict):
        usage = completion_response.get("usage")
    if usage is None:
        raise UnpricedCallError("the result has no usage to price")
    catalog = catalog or default_catalog()
    target = catalog.resolve(model)
    info = cost_of(catalog.lookup(target, target.subprovider), usage, estimated=False)
    if info.cost_usd is None:
        raise UnpricedCallError(f"no price for {model!r}: {info.unpriced_reason}")
    return info.cost_usd


def cost_per_token(
    model: str, prompt_tokens: int = 0, completion_tokens: int = 0, *, catalog: Catalog | None = None
) -> tuple[float, float]:
    """(prompt cost, completion cost) in USD for these token counts at ``model``'s price."""
    catalog = catalog or default_catalog()
    target = catalog.resolve(model)
    candidates = catalog.candidates(target)
    prices = {(c.price.input_per_m, c.price.output_per_m) for c in candidates if c.price is not None}
    if len(prices) != 1 or any(c.price is None for c in candidates):
        reason = next((c.reason for c in candidates if c.price is None), None)
        differ = (
            f"the sub-providers of {target.provider!r} charge different prices; "
            f"pin one, e.g. '{target.provider}/<provider>/<org>/<model>'"
        )
        raise UnpricedCallError(f"no single price for {model!r}: {reason or differ}")
    price = next(c.price for c in candidates if c.price is not None)
    return pico_to_usd(price.cost_pico(prompt_tokens, 0)), pico_to_usd(price.cost_pico(0, completion_tokens))
