"""rpm / tpm windows in Redis: one count per key or deployment, however many replicas serve it.

A window is 60 one-second buckets; :meth:`SharedWindows.admit` checks and counts in one Lua script,
so two replicas admitting at once cannot both take the last slot. Callers fall back to their own
local window when Redis is unreachable (:class:`SharedStateUnavailable`).

Example::

    windows = SharedWindows(link)
    wait = await windows.aadmit("key:abc", rpm=60, tpm=None, tokens=0)   # 0.0: admitted
"""

from __future__ import annotations

import time
from typing import Any

from . import scripts
from .link import RedisLink


class SharedWindows:
    def __init__(self, link: RedisLink) -> None:
        self.link = link

    def _keys(self, scope: str) -> list[str]:
        base = self.link.key("rate", scope)
        return [base + ":req", base + ":tok"]

    def admit(self, scope: str, *, rpm: int | None, tpm: int | None, tokens: int) -> float:
        """0.0 when admitted (and counted), else seconds until the window has room; nothing is counted then."""
        keys, args = self._keys(scope), [time.time(), rpm or 0, tpm or 0, tokens]
        result = self.link.eval("admit", scripts.ADMIT, keys, args, retry=False)  # counting twice would over-limit
        return float(result[0]) / 1000

    async def aadmit(self, scope: str, *, rpm: int | None, tpm: int | None, tokens: int) -> float:
        keys, args = self._keys(scope), [time.time(), rpm or 0, tpm or 0, tokens]
        result = await self.link.aeval("admit", scripts.ADMIT, keys, args, retry=False)
        return float(result[0]) / 1000

    async def acount_tokens(self, scope: str, tokens: int) -> None:
        """Add tokens a finished request used to the scope's tpm window."""
        keys = self._keys(scope)
        await self.link.aeval("count_tokens", scripts.COUNT_TOKENS, keys, [time.time(), tokens], retry=False)

    def used(self, scope: str) -> tuple[int, int]:
        """(requests, tokens) in the scope's current window."""
        keys = self._keys(scope)
        horizon = int(time.time()) - 59

        def read(client: Any) -> tuple[int, int]:
            pipe = client.pipeline(transaction=False)
            pipe.hgetall(keys[0])
            pipe.hgetall(keys[1])
            req, tok = pipe.execute()
            return (
                sum(int(v) for k, v in req.items() if int(k) >= horizon),
                sum(int(v) for k, v in tok.items() if int(k) >= horizon),
            )

        return self.link.run(read)
